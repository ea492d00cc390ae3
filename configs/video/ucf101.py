"""MAGVIT-B class-conditional generation on UCF-101 (16 frames of 128², 101 classes) from a local folder
of videos (`mgt.modalities.video.config.magvit_b_config`: the official optimiser and loss settings).

The 3D-VQ turns 16 × 128² into 4 × 16 × 16 tokens (500 epochs of the 9,537 training clips at batch
128); the transformer trains 2,000 epochs at batch 256. MAGVIT initialises the 3D-VQ by inflating its
2D VQGAN: train `configs/image/...` on frames and pass `--config.tokenizer.inflate_from=DIR`.

    mgt train --config configs/video/ucf101.py --workdir runs/ucf101 \
        --config.data.path=/data/UCF-101 --config.tokenizer_train.perceptual_weights_path=/weights/vgg.npz

Labels come from the folder source (one sub-folder per class). `:runlocal` shrinks everything for a
smoke run on a few videos.
"""

from mgt.config import parse_arg
from mgt.modalities.video.config import magvit_b_config


def get_config(arg: str | None = None):
    arg = parse_arg(arg, what="configs/video/ucf101.py", runlocal=False)
    return magvit_b_config(frames=16, image_size=128, num_classes=101, train_size=9_537, tokenizer_epochs=500,
                           transformer_epochs=2000, runlocal=arg.runlocal)
