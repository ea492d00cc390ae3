"""The official MaskGIT ImageNet 512×512 recipe: as imagenet256.py with 32×32 token grids (1025 positions).

    mgt train --config configs/image/imagenet512.py --workdir runs/imagenet512 \
        --config.data.path=/data/imagenet/train
"""

from mgt.pretrained.maskgit_recipe import get_config as _recipe


def get_config(arg: str | None = None):
    return _recipe(arg, image_size=512)
