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
