"""Per-modality glue: data sources, preprocessing, writers and editing tools.

`make_task(config)` builds the task named by `config.modality` ("image"; video and audio later).
"""

from __future__ import annotations


def make_task(config):
    name = config.get("modality", "image")
    if name == "image":
        from mgt.modalities.image.task import ImageTask

        return ImageTask(config)
    raise ValueError(f"config.modality={name!r}; expected one of ['image']")
