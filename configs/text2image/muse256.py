"""The Muse base recipe at 256 px (Chang et al., 2023): a frozen T5-XXL text encoder read from a local
Hugging Face folder, a VQGAN with 16 × 16 tokens (f = 16, 8,192 codes), a masked Transformer that
cross-attends to the text, 24 decoding steps with classifier-free guidance — on a folder of captioned
images (`.txt` sidecars or a `captions.jsonl`, see `mgt.modalities.image.sources.ImageFolderSource`).

    mgt train --config configs/text2image/muse256.py --workdir runs/muse256 \
        --config.data.path=/data/captioned_images --config.text.path=/weights/t5-v1_1-xxl

`config.text.path`: any T5 v1.1 encoder folder (config.json, model.safetensors, tokenizer.json), e.g.
google/t5-v1_1-xxl downloaded beforehand (nothing is downloaded at run time). The transformer here is
Muse's base model as published (48 layers, width 2048, 32 heads); `:runlocal` shrinks everything for a
smoke run on a laptop (still with the encoder at `config.text.path`, e.g. a small T5 v1.1).
"""

from mgt.config import parse_arg
from mgt.modalities.image.config import image_config


def get_config(arg: str | None = None):
    arg = parse_arg(arg, what="configs/text2image/muse256.py", runlocal=False)
    c = image_config()
    c.data.source = "folder"  # with captions: a .txt beside each image or captions.jsonl
    c.data.image_size = 256
    c.data.flip = False  # captions may say left / right
    c.data.num_workers = 8

    c.tokenizer.base_channels = 128
    c.tokenizer.channel_multipliers = (1, 1, 2, 2, 4)  # f = 16: 256 px → 16 × 16 tokens
    c.tokenizer.num_res_blocks = 2
    c.tokenizer.embedding_dim = 256
    c.tokenizer.codebook_size = 8192
    c.tokenizer_train.steps = 1_000_000
    c.tokenizer_train.batch_size = 256
    c.tokenizer_train.learning_rate = 1e-4
    c.tokenizer_train.b1 = 0.0
    c.tokenizer_train.adversarial_weight = 0.1
    c.tokenizer_train.perceptual_weight = 0.1

    c.text.encoder = "t5"
    c.text.path = None  # required: a T5 v1.1 encoder folder
    c.text.max_length = 64

    c.model.block_style = "modern"
    c.model.num_layers = 48
    c.model.hidden_dim = 2048
    c.model.num_heads = 32
    c.model.mlp_dim = 8192
    c.model.conditioning = "cross_attention"
    c.model.null_condition = True
    c.model.dropout_rate = 0.1
    c.model.remat = True
    c.model.dtype = "bfloat16"

    c.transformer_train.steps = 1_500_000
    c.transformer_train.batch_size = 512
    c.transformer_train.learning_rate = 1e-4
    c.transformer_train.warmup_steps = 5000
    c.transformer_train.weight_decay = 0.045
    c.transformer_train.condition_dropout = 0.1
    c.transformer_train.mask_schedule = "cosine"

    c.sample.num_steps = 24
    c.sample.guidance = 3.0
    c.mesh.fsdp = 8

    if arg.runlocal:
        c.data.image_size = 64
        c.data.num_workers = 0
        c.tokenizer.base_channels = 32
        c.tokenizer.codebook_size = 512
        c.tokenizer.embedding_dim = 32
        c.tokenizer_train.steps = 20
        c.tokenizer_train.batch_size = 4
        c.model.num_layers = 2
        c.model.hidden_dim = 128
        c.model.num_heads = 4
        c.model.mlp_dim = 256
        c.model.remat = False
        c.model.dtype = "float32"
        c.transformer_train.steps = 20
        c.transformer_train.batch_size = 4
        c.sample.num_steps = 8
        c.mesh.fsdp = 1
    return c
