"""MAGVIT-B frame prediction on Kinetics-600: 16 frames of 128², the first 5 given (the published
setting), from a local folder of videos (`magvit_b_config`: the official optimiser and loss settings).

One conditional task, "frame_prediction" (COMMIT: the 5 given frames, edge-padded to 16, are tokenized;
the token frames mostly covered by given frames show those condition tokens). Predict with

    mgt train --config configs/video/kinetics600.py --workdir runs/k600 --config.data.path=/data/k600/train \
        --config.tokenizer_train.perceptual_weights_path=/weights/vgg.npz
    mgt edit --workdir runs/k600 --task frame_prediction --input clips.npz --out predicted.mp4

MAGVIT's Kinetics-600 configs are not in its public repository: the epochs here give the UCF-101
recipe's step counts (about 37 k tokenizer and 74 k transformer steps) on Kinetics-600's ~392 k clips.
`:runlocal` shrinks everything for a smoke run on a few videos.
"""

from mgt.config import parse_arg
from mgt.modalities.video.config import magvit_b_config


def get_config(arg: str | None = None):
    arg = parse_arg(arg, what="configs/video/kinetics600.py", runlocal=False)
    return magvit_b_config(frames=16, image_size=128, num_classes=0, train_size=392_000, tokenizer_epochs=12,
                           transformer_epochs=48, tasks=("frame_prediction",), condition_frames=5,
                           runlocal=arg.runlocal)
