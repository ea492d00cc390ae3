"""Per-modality glue: data sources, preprocessing, writers, editing tools — each behind the `Task` protocol.

`make_task(config)` builds the task that `config.modality` names: a registered name ("image") or an
import path ("my_pkg.waves:WaveTask"). A user's modality registers itself with `@register_task("name")`
from its own package (see `examples/custom_modality.py`). The registry imports no modality until one
is asked for, so the engine and the trainer never load image (or video, audio) code themselves.
"""

from __future__ import annotations

from mgt.modalities.base import BaseTask, Task
from mgt.registry import Registry

_TASKS = Registry("modality", builtin_modules=("mgt.modalities.image.task", "mgt.modalities.video.task",
                                               "mgt.modalities.audio.task"))


def register_task(name: str):
    """Decorator: make a `Task` class available to configs as `config.modality = name`."""
    return _TASKS.register(name)


def registered_tasks() -> list[str]:
    return _TASKS.names()


def make_task(config) -> Task:
    """The task named by `config.modality`, built from the config."""
    name = config.get("modality", None)
    if not name:
        raise ValueError("config.modality is not set; expected one of "
                         f"{registered_tasks()} or an import path 'module:TaskClass'")
    try:
        factory = _TASKS.get(name)
    except ValueError as e:
        raise ValueError(f"config.modality: {e}") from None
    return factory(config)


__all__ = ["BaseTask", "Task", "make_task", "register_task", "registered_tasks"]
