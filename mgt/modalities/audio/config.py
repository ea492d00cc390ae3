"""The audio configs' base: `mgt.config.base_config()` with the audio task's data fields, the codec
tokenizer and its objective's fields, and SoundStorm's level-wise training and decoding."""

from __future__ import annotations

from mgt.config import base_config


def audio_config(sample_rate: int = 16000):
    """Defaults of an audio experiment; `configs/audio/*.py` set only what differs."""
    from mgt.tokenizers.audio_losses import DEFAULT_TRAIN_FIELDS

    c = base_config()
    c.modality = "audio"
    c.data.source = "folder"  # "spoken_digits", "folder" (with data.path), "arrays" or another registered source
    c.data.sample_rate = sample_rate  # every file is resampled to this rate (mono)
    c.data.seconds = 1.0  # training clips: random crops of this length (shorter files zero-padded)

    c.tokenizer.name = "codec"
    # one rate for the data, the codec and its mel losses: overriding data.sample_rate moves all three
    c.tokenizer.sample_rate = c.data.get_ref("sample_rate")
    c.tokenizer.quantizer_options = {}  # of every residual level's VectorQuantizer, e.g. dead-code revival
    for key, value in DEFAULT_TRAIN_FIELDS.items():
        c.tokenizer_train[key] = value
    c.tokenizer_train.sample_rate = c.data.get_ref("sample_rate")
    c.tokenizer_train.b1, c.tokenizer_train.b2 = 0.8, 0.99  # DAC's AdamW
    c.tokenizer_train.discriminator_learning_rate = 1e-4

    # SoundStorm: level q masked by the schedule, the levels below visible, those above masked; a prompt
    # prefix of up to half the clip stays visible (continuation and window-by-window long generation)
    c.transformer_train.mask_structure = "levelwise"
    c.transformer_train.prompt_fraction = 0.5
    c.sample.stages = ""  # "" one pool over (frame, level) (VampNet); e.g. "16,1,1,1" per level (SoundStorm)
    c.sample.window_overlap = 0.5  # longer audio (mgt sample --seconds): share of a window the next one keeps
    return c


def dac_recipe_config(*, sample_rate: int, strides, num_levels: int, seconds: float, num_classes: int = 0,
                      runlocal: bool = False):
    """A DAC-size codec (descript-audio-codec `conf/final/*.yml`: encoder width 64, decoder width 1536,
    codebooks of 1024 codes looked up in 8 L2-normalised dimensions, quantizer dropout 0.5; AdamW
    β = (0.8, 0.99), lr 1e-4, batch 72 of 0.38 s excerpts, 400 k steps; losses: mel 15, adversarial 1,
    feature matching 2, commitment 0.25, codebook 1 with the multi-period and multi-band STFT
    discriminators) and a SoundStorm-size level-wise Transformer (12 × 1024, 16 heads; batch 128, lr
    5e-4 with warm-up, prompts of up to half a window) on the folder source. Both stages train on random
    crops of `seconds` (DAC's codec saw 0.38 s excerpts; with one crop length for both stages the codec
    sees the transformer's windows, which costs more per step). `runlocal`: tiny batches, widths and
    steps for a laptop smoke run on a folder of audio files.
    """
    c = audio_config(sample_rate=sample_rate)
    c.data.source = "folder"
    c.data.num_classes = num_classes
    c.data.seconds = seconds

    c.tokenizer.channels = 64
    c.tokenizer.decoder_channels = 1536
    c.tokenizer.strides = tuple(strides)
    c.tokenizer.num_levels = num_levels
    c.tokenizer.codebook_size = 1024
    c.tokenizer.codebook_dim = 8
    c.tokenizer.quantizer_dropout = 0.5
    c.tokenizer_train.steps = 400_000
    c.tokenizer_train.batch_size = 72
    c.tokenizer_train.learning_rate = 1e-4
    c.tokenizer_train.ema_decay = 0.999

    c.model.num_layers, c.model.hidden_dim, c.model.num_heads, c.model.mlp_dim = 12, 1024, 16, 4096
    c.model.conditioning = "class_token" if num_classes else "none"
    c.model.null_condition = bool(num_classes)
    c.transformer_train.steps = 500_000
    c.transformer_train.batch_size = 128
    c.transformer_train.learning_rate = 5e-4
    c.transformer_train.warmup_steps = 10_000
    c.transformer_train.grad_clip = 1.0
    c.transformer_train.label_smoothing = 0.0
    c.sample.num_steps = 16
    c.sample.stages = ",".join(["16"] + ["1"] * (num_levels - 1))  # SoundStorm's plan
    c.checkpoint_every = 5000
    c.log_every = 500
    if runlocal:
        c.tokenizer.channels, c.tokenizer.decoder_channels = 8, 64
        c.tokenizer.codebook_size = 64
        c.tokenizer_train.batch_size = c.transformer_train.batch_size = 4
        c.tokenizer_train.steps = c.transformer_train.steps = 20
        c.transformer_train.warmup_steps = 2
        c.tokenizer_train.discriminator_channels, c.tokenizer_train.discriminator_max_channels = 4, 16
        c.model.num_layers, c.model.hidden_dim, c.model.num_heads, c.model.mlp_dim = 2, 64, 2, 128
        c.log_every = c.checkpoint_every = 10
    return c
