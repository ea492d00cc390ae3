"""The image configs' base: `mgt.config.base_config()` with the image task's data fields and the VQGAN."""

from __future__ import annotations

from mgt.config import base_config


def image_config():
    """Defaults of an image experiment; `configs/image/*.py` set only what differs."""
    c = base_config()
    c.modality = "image"
    c.data.source = "folder"  # "digits", "folder" (with data.path), "arrays" or another registered source
    c.data.image_size = 256  # images are resized (shorter side) and centre-cropped to this
    c.data.flip = True  # random horizontal flips in training
    c.data.shift = 0  # random shifts of up to this many pixels in training
    c.tokenizer.name = "vqgan"
    return c
