"""The official MaskGIT ImageNet 256×256 recipe (transformer and tokenizer); the fields live in
`mgt/pretrained/maskgit_recipe.py` (one source for training from scratch and for converted weights).

Transformer: 24 × 768, 16 heads, MLP 3072, batch 256, Adam lr 1e-4, β = (0.9, 0.96), weight decay
0.045, 5 k warm-up, label smoothing 0.1, cosine masking, loss on masked tokens, EMA 0.999.
Tokenizer: the official VQGAN, Adam β = (0, 0.99), lr 1e-4, the official loss weights.

    mgt train --config configs/image/imagenet256.py --workdir runs/imagenet256 \
        --config.data.path=/data/imagenet/train \
        --config.tokenizer_train.perceptual_weights_path=/weights/vgg.npz

Fine-tune converted official weights (`mgt convert maskgit ... --workdir runs/maskgit256`):

    mgt train --config configs/image/imagenet256.py --workdir runs/maskgit256 --stage transformer \
        --config.data.path=/data/my_images

`:runlocal` shrinks batches and steps for a laptop smoke run.
"""

from mgt.pretrained.maskgit_recipe import get_config as _recipe


def get_config(arg: str | None = None):
    return _recipe(arg, image_size=256)
