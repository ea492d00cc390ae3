"""MAGVIT-B multi-task on BAIR robot pushing: 16 frames of 64², no classes, from a local folder of
videos (`magvit_b_config`; the 3D-VQ with multipliers (1, 2, 4): 16 × 64² → 4 × 16 × 16 tokens).

The transformer learns MAGVIT's BAIR task set with one model (`maskgvt_bair_multitask_config.py`):
frame prediction (1 frame given), interpolation, outpainting (central, horizontal, vertical) and
inpainting (central, moving box), with the `mask+refine+recons` loss.

    mgt train --config configs/video/bair.py --workdir runs/bair --config.data.path=/data/bair/train \
        --config.tokenizer_train.perceptual_weights_path=/weights/vgg.npz
    mgt edit --workdir runs/bair --task frame_prediction --input clips.npz --out predicted.mp4

`:runlocal` shrinks everything for a smoke run on a few videos.
"""

from mgt.config import parse_arg
from mgt.modalities.video.config import magvit_b_config


def get_config(arg: str | None = None):
    arg = parse_arg(arg, what="configs/video/bair.py", runlocal=False)
    tasks = ("frame_prediction", "interpolation", "outpaint_central", "outpaint_horizontal", "outpaint_vertical",
             "inpaint_central", "inpaint_moving")
    return magvit_b_config(frames=16, image_size=64, num_classes=0, train_size=43_264, tokenizer_epochs=400,
                           transformer_epochs=1200, channel_multipliers=(1, 2, 4), tasks=tasks,
                           condition_frames=1, runlocal=arg.runlocal)
