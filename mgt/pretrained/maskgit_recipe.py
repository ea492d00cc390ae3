"""The official MaskGIT ImageNet recipe as an ml_collections config (transformer and tokenizer).

`configs/image/imagenet256.py` and `imagenet512.py` return it; `mgt convert maskgit` writes it into
the workdirs it creates, so that fine-tuning a converted model with those config files matches.

Transformer: 24 layers, hidden 768, 16 heads, MLP 3072, class token in a shared vocabulary of 1024
codes + 1000 classes + mask, batch 256, Adam lr 1e-4, β = (0.9, 0.96), weight decay 0.045, 5 k warm-up
steps, label smoothing 0.1, cosine masking, loss on masked tokens, EMA 0.999, dropout 0.1.
Tokenizer: the official VQGAN (factor 16, 1024 × 256 codes), batch 256, Adam β = (0, 0.99), lr 1e-4,
GAN weight 0.1, R1 10, perceptual 0.1 (needs a local perceptual weights file), commitment 0.25,
entropy 0.1, EMA 0.999.
"""

from mgt.config import parse_arg
from mgt.modalities.image.config import image_config


def get_config(arg: str | None = None, image_size: int = 256):
    arg = parse_arg(arg, what=f"the MaskGIT ImageNet {image_size} recipe", runlocal=False)
    c = image_config()
    c.data.image_size = image_size
    c.data.num_classes = 1000
    c.data.num_workers = 8

    c.tokenizer.base_channels = 128
    c.tokenizer.channel_multipliers = (1, 1, 2, 2, 4)
    c.tokenizer.num_res_blocks = 2
    c.tokenizer.embedding_dim = 256
    c.tokenizer.codebook_size = 1024
    c.tokenizer.num_groups = 32
    c.tokenizer.commitment_cost = 0.25
    c.tokenizer.entropy_cost = 0.1

    c.tokenizer_train.steps = 1_000_000
    c.tokenizer_train.batch_size = 256
    c.tokenizer_train.b1 = 0.0
    c.tokenizer_train.adversarial_weight = 0.1
    c.tokenizer_train.perceptual_weight = 0.1
    c.tokenizer_train.discriminator_channels = 128

    c.model.block_style = "maskgit"
    c.model.num_layers = 24
    c.model.hidden_dim = 768
    c.model.num_heads = 16
    c.model.mlp_dim = 3072
    c.model.conditioning = "class_token"
    c.model.null_condition = False  # the official vocabulary has no null class
    c.model.dropout_rate = 0.1
    c.model.attention_dropout_rate = 0.1
    c.model.dtype = "bfloat16"
    c.model.remat = True

    c.transformer_train.steps = 2_000_000
    c.transformer_train.batch_size = 256
    c.transformer_train.warmup_steps = 5000

    c.sample.num_steps = 16

    c.log_every = 100
    c.checkpoint_every = 5000
    c.keep_checkpoints = 3
    c.sample_every = 20000

    if arg.runlocal:
        c.data.num_workers = 0
        c.tokenizer_train.batch_size = 4
        c.transformer_train.batch_size = 4
        c.tokenizer_train.steps = 10
        c.transformer_train.steps = 10
        c.model.dtype = "float32"
        c.log_every = 1
        c.checkpoint_every = 5
        c.sample_every = 0
    return c
