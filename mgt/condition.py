"""`Condition`: what a batch of generations or training examples is conditioned on — one structure
from the task's batch through the token cache, the training step (with condition dropout), sampling
and the CLI.

    labels        int32 [B]         class ids (class_token / adaLN conditioning)
    context       float32 [B, S, C] embedding sequence for cross-attention (e.g. a text encoder's)
    context_mask  bool [B, S]       which context positions are real (default: all)
    drop          bool [B]          use the model's learned null condition for these examples
                                    (condition dropout in training, the unconditional half of
                                    classifier-free guidance)
    tasks         int32 [B]         task indices into `TransformerConfig.tasks` (multi-task COMMIT
                                    models; default: the "generation" task when the model has one)

Fields that are None are absent. A model takes what `TransformerConfig.condition_input` names:
`Condition.for_model(config)` keeps exactly that and says clearly when it is missing. A pytree
(`flax.struct`), so it passes through `jit` as an argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import struct

# batch keys of the condition fields: token caches and data pipelines carry them under these names
BATCH_KEYS = {"labels": "label", "context": "context", "context_mask": "context_mask", "tasks": "task"}
# the task name of plain (class-conditional or unconditional) generation in a multi-task model
GENERATION_TASK = "generation"


@struct.dataclass
class Condition:
    """The condition of B examples; see the module docstring for shapes and dtypes."""

    labels: Any = None
    context: Any = None
    context_mask: Any = None
    drop: Any = None
    tasks: Any = None

    # ---- construction -----------------------------------------------------------------------------
    @classmethod
    def from_batch(cls, batch) -> "Condition":
        """The condition fields of a batch dict (`"label"`, `"context"`, `"context_mask"`)."""
        return cls(**{field: batch[key] for field, key in BATCH_KEYS.items() if key in batch})

    def to_batch(self) -> dict:
        """The present fields under their batch keys (the inverse of `from_batch`; `drop` is not stored)."""
        return {key: getattr(self, field) for field, key in BATCH_KEYS.items() if getattr(self, field) is not None}

    @property
    def is_empty(self) -> bool:
        return self.labels is None and self.context is None and self.tasks is None

    @property
    def batch_size(self) -> int | None:
        for x in (self.labels, self.context, self.tasks):
            if x is not None:
                return int(np.shape(x)[0])
        return None

    # ---- what a model takes -------------------------------------------------------------------------
    def for_model(self, model_config) -> "Condition":
        """Only the fields the model takes (`model_config.condition_input`, and task indices for a
        multi-task model); raises ValueError naming what is missing."""
        kind = model_config.condition_input
        tasks = self._tasks_for(model_config)
        if kind == "labels":
            if self.labels is None:
                raise ValueError(f"the model is class-conditional (conditioning={model_config.conditioning!r}) "
                                 "but the condition has no labels (int32 [B])")
            return Condition(labels=self.labels, drop=self.drop, tasks=tasks)
        if kind == "context":
            if self.context is None:
                raise ValueError("the model uses cross-attention but the condition has no context "
                                 f"(float [B, S, {model_config.context_dim}])")
            return Condition(context=self.context, context_mask=self.context_mask, drop=self.drop, tasks=tasks)
        return Condition(tasks=tasks)

    def _tasks_for(self, model_config):
        """The task indices a model takes: None for single-task models, else the given ones (None when
        not given yet — the training step draws them; sampling fills in `with_default_task`)."""
        return self.tasks if getattr(model_config, "tasks", ()) else None

    def with_default_task(self, model_config, batch_size: int) -> "Condition":
        """For a multi-task model without given tasks: every example on the "generation" task
        (ValueError when the model has none). Otherwise unchanged."""
        names = getattr(model_config, "tasks", ())
        if not names or self.tasks is not None:
            return self
        if GENERATION_TASK not in names:
            raise ValueError(f"the model serves the tasks {list(names)}, not plain {GENERATION_TASK!r}: "
                             "give the tasks (int32 [B]) and their condition tokens")
        return self.replace(tasks=np.full((int(batch_size),), names.index(GENERATION_TASK), np.int32))

    def model_kwargs(self) -> dict:
        """Keyword arguments of `MaskedTransformer.__call__`."""
        kwargs = dict(labels=self.labels, context=self.context, context_mask=self.context_mask,
                      drop_condition=self.drop)
        if self.tasks is not None:
            kwargs["tasks"] = self.tasks
        return kwargs

    def with_drop(self, drop) -> "Condition":
        return self.replace(drop=drop)

    def tile(self, reps: int) -> "Condition":
        """The condition repeated `reps` times along the batch (guidance runs a doubled batch)."""
        import jax.numpy as jnp

        tile = lambda x: None if x is None else jnp.concatenate([x] * reps, 0)
        return Condition(tile(self.labels), tile(self.context), tile(self.context_mask), tile(self.drop),
                         tile(self.tasks))

    def take(self, index) -> "Condition":
        """Examples `index` (a slice or integer array) of every present field (host or device arrays)."""
        pick = lambda x: None if x is None else x[index]
        return Condition(pick(self.labels), pick(self.context), pick(self.context_mask), pick(self.drop),
                         pick(self.tasks))
