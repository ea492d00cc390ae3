"""The built-in default: class-conditional MaskGIT on scikit-learn's handwritten digits (no download).

Trains a small VQGAN (16 px digits → 4×4 tokens, 128 codes) and a class-conditional masked
Transformer (4 layers × 128) on the 1,617 training digits, in 6–17 minutes on a 2-core CPU (depending on the CPU):

    mgt train --config configs/image/digits.py --workdir runs/digits
    mgt sample --workdir runs/digits --out digits.png

Variants (comma-separated after ':'): `tiny` shrinks everything to a few steps (tests, smoke runs);
`layers=N` sets the transformer's depth — e.g. `configs/image/digits.py:tiny,layers=2`.
"""

from mgt.config import parse_arg
from mgt.modalities.image.config import image_config


def get_config(arg: str | None = None):
    arg = parse_arg(arg, what="configs/image/digits.py", tiny=False, layers=0)
    c = image_config()
    c.data.source = "digits"
    c.data.image_size = 16
    c.data.num_classes = 10
    c.data.flip = False  # a mirrored digit is not a digit
    c.data.shift = 1
    c.data.token_augmentations = 4  # augmented copies tokenized for the transformer stage

    c.tokenizer.base_channels = 32
    c.tokenizer.channel_multipliers = (1, 2, 2)  # factor 4: 16 px → 4×4 tokens
    c.tokenizer.num_res_blocks = 1
    c.tokenizer.embedding_dim = 16
    c.tokenizer.codebook_size = 128
    c.tokenizer.num_groups = 8
    c.tokenizer.entropy_cost = 0.0
    c.tokenizer.commitment_cost = 0.25

    c.tokenizer_train.steps = 1500
    c.tokenizer_train.learning_rate = 1e-3
    c.tokenizer_train.warmup_steps = 50
    c.tokenizer_train.grad_clip = 1.0
    c.tokenizer_train.ema_decay = 0.99

    c.model.num_layers = 4
    c.model.hidden_dim = 128
    c.model.mlp_dim = 512
    c.model.conditioning = "class_token"
    c.model.null_condition = True

    c.transformer_train.steps = 2000
    c.transformer_train.learning_rate = 1e-3
    c.transformer_train.warmup_steps = 100
    c.transformer_train.grad_clip = 1.0
    c.transformer_train.condition_dropout = 0.1
    c.transformer_train.ema_decay = 0.99

    c.sample.guidance = 1.0  # classifier-free guidance: 93.8 % → 100 % of samples classified as their class
    c.sample.per_class = 4
    c.sample_every = 1000

    if arg.tiny:
        c.data.token_augmentations = 1
        c.tokenizer.base_channels = 16
        c.tokenizer.codebook_size = 32
        c.tokenizer.embedding_dim = 8
        c.tokenizer_train.steps = 6
        c.tokenizer_train.batch_size = 8
        c.model.num_layers = 1
        c.model.hidden_dim = 32
        c.model.mlp_dim = 64
        c.transformer_train.steps = 6
        c.transformer_train.batch_size = 8
        c.sample.num_steps = 4
        c.sample.per_class = 1
        c.log_every = 2
        c.checkpoint_every = 2
        c.sample_every = 0
    if arg.layers:
        c.model.num_layers = arg.layers
    return c
