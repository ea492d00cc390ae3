"""The built-in default: class-conditional MaskGIT on scikit-learn's handwritten digits (no download).

Trains a small VQGAN (16 px digits → 4×4 tokens… see `tokenizer`) and a class-conditional masked
Transformer on the 1,617 training digits, in well under 15 minutes on a 2-core CPU:

    mgt train --config configs/image/digits.py --workdir runs/digits
    mgt sample --workdir runs/digits --out digits.png

Variants: `configs/image/digits.py:tiny` shrinks everything to a few steps (tests, smoke runs).
"""

from ml_collections import config_dict


def get_config(arg: str | None = None):
    c = config_dict.ConfigDict()
    c.seed = 0
    c.modality = "image"

    c.data = config_dict.ConfigDict()
    c.data.source = "digits"  # "digits", "folder" (with data.path) or another registered source
    c.data.path = config_dict.placeholder(str)
    c.data.image_size = 16
    c.data.num_classes = 10
    c.data.flip = False  # a mirrored digit is not a digit
    c.data.shift = 1
    c.data.num_workers = 0
    c.data.token_augmentations = 4  # augmented copies tokenized for the transformer stage

    c.tokenizer = config_dict.ConfigDict()
    c.tokenizer.name = "vqgan"
    c.tokenizer.base_channels = 32
    c.tokenizer.channel_multipliers = (1, 2, 2)  # factor 4: 16 px → 4×4 tokens
    c.tokenizer.num_res_blocks = 1
    c.tokenizer.embedding_dim = 16
    c.tokenizer.codebook_size = 128
    c.tokenizer.num_groups = 8
    c.tokenizer.entropy_cost = 0.0
    c.tokenizer.commitment_cost = 0.25

    c.tokenizer_train = config_dict.ConfigDict()
    c.tokenizer_train.steps = 1500
    c.tokenizer_train.batch_size = 32
    c.tokenizer_train.learning_rate = 1e-3
    c.tokenizer_train.b1 = 0.9
    c.tokenizer_train.b2 = 0.99
    c.tokenizer_train.weight_decay = 0.0
    c.tokenizer_train.warmup_steps = 50
    c.tokenizer_train.grad_clip = 1.0
    c.tokenizer_train.grad_accum = 1
    c.tokenizer_train.ema_decay = 0.99
    c.tokenizer_train.adversarial_weight = 0.0  # the official recipe uses 0.1 (configs/image/imagenet256.py)
    c.tokenizer_train.adversarial_warmup_steps = 0
    c.tokenizer_train.r1_weight = 10.0
    c.tokenizer_train.lecam_weight = 0.0
    c.tokenizer_train.perceptual_weight = 0.0
    c.tokenizer_train.perceptual_weights_path = config_dict.placeholder(str)
    c.tokenizer_train.discriminator_learning_rate = 1e-4
    c.tokenizer_train.discriminator_channels = 32

    c.model = config_dict.ConfigDict()
    c.model.objective = "maskgit"  # or "ar": the autoregressive baseline on the same modules
    c.model.block_style = "modern"
    c.model.num_layers = 4
    c.model.hidden_dim = 128
    c.model.num_heads = 4
    c.model.mlp_dim = 512
    c.model.conditioning = "class_token"
    c.model.null_condition = True
    c.model.position_embedding = "learned"
    c.model.qk_norm = False
    c.model.dropout_rate = 0.0
    c.model.attention_dropout_rate = 0.0
    c.model.dtype = "float32"
    c.model.remat = False

    c.transformer_train = config_dict.ConfigDict()
    c.transformer_train.steps = 2000
    c.transformer_train.batch_size = 64
    c.transformer_train.learning_rate = 1e-3
    c.transformer_train.b1 = 0.9
    c.transformer_train.b2 = 0.96
    c.transformer_train.weight_decay = 0.045
    c.transformer_train.warmup_steps = 100
    c.transformer_train.grad_clip = 1.0
    c.transformer_train.grad_accum = 1
    c.transformer_train.label_smoothing = 0.1
    c.transformer_train.mask_schedule = "cosine"
    c.transformer_train.mask_structure = "random"
    c.transformer_train.loss_on = "masked"  # or "all"
    c.transformer_train.condition_dropout = 0.1
    c.transformer_train.ema_decay = 0.99

    c.sample = config_dict.ConfigDict()
    c.sample.num_steps = 8
    c.sample.choice_temperature = 4.5
    c.sample.temperature = 1.0
    c.sample.guidance = 1.0  # classifier-free guidance: 93.8 % → 100 % of samples classified as their class
    c.sample.per_class = 4

    c.mesh = config_dict.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1

    c.log_every = 50
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.sample_every = 1000

    if arg:
        for variant in arg.split(","):
            if variant == "tiny":
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
            elif variant:
                raise ValueError(f"unknown variant {variant!r} of configs/image/digits.py; expected 'tiny'")
    return c
