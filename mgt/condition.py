"""`Condition`: what a batch of generations or training examples is conditioned on — one structure
from the task's batch through the token cache, the training step (with condition dropout), sampling
and the CLI.

    labels        int32 [B]         class ids (class_token / adaLN conditioning)
    context       float32 [B, S, C] an embedding sequence (a frozen text encoder's) for the context
                                    conditionings (cross_attention, prefix, pooled_adaln)
    context_ids   int32 [B, S]      token ids of the context instead, for a model that embeds them with
                                    its own jointly trained encoder (`TransformerConfig.context_vocab_size`)
    context_mask  bool [B, S]       which context positions are real (default: all)
    drop          bool [B]          use the model's learned null condition for these examples
                                    (condition dropout in training, the unconditional half of
                                    classifier-free guidance)
    tasks         int32 [B]         task indices into `TransformerConfig.tasks` (multi-task COMMIT
                                    models; default: the "generation" task when the model has one)
    text          str [B]           the captions / prompts the context came from (numpy unicode array):
                                    metadata for writers and metrics, never given to a model (a static,
                                    non-pytree field that `for_model` drops)

Fields that are None are absent. A model takes what `TransformerConfig.condition_input` names:
`Condition.for_model(config)` keeps exactly that and says clearly when it is missing. A pytree
(`flax.struct`), so it passes through `jit` as an argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from flax import struct

# batch keys of the condition fields: token caches and data pipelines carry them under these names
BATCH_KEYS = {"labels": "label", "context": "context", "context_ids": "context_ids", "context_mask": "context_mask",
              "tasks": "task", "text": "text"}
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
    context_ids: Any = None
    text: Any = struct.field(pytree_node=False, default=None)

    # ---- construction -----------------------------------------------------------------------------
    @classmethod
    def from_batch(cls, batch) -> "Condition":
        """The condition fields of a batch dict (`"label"`, `"context"`, `"context_ids"`, `"context_mask"`)."""
        return cls(**{field: batch[key] for field, key in BATCH_KEYS.items() if key in batch})

    def to_batch(self) -> dict:
        """The present fields under their batch keys (the inverse of `from_batch`; `drop` is not stored)."""
        return {key: getattr(self, field) for field, key in BATCH_KEYS.items() if getattr(self, field) is not None}

    @property
    def is_empty(self) -> bool:
        return self.labels is None and self.context is None and self.context_ids is None and self.tasks is None

    @property
    def batch_size(self) -> int | None:
        for x in (self.labels, self.context, self.context_ids, self.tasks, self.text):
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
            if getattr(model_config, "context_vocab_size", 0):
                if self.context_ids is None:
                    raise ValueError(f"the model embeds its context itself (conditioning="
                                     f"{model_config.conditioning!r}, context_vocab_size > 0) but the condition has "
                                     "no context_ids (int32 [B, S])")
                return Condition(context_ids=self.context_ids, context_mask=self.context_mask, drop=self.drop,
                                 tasks=tasks)
            if self.context is None:
                raise ValueError(f"the model is conditioned on a context sequence (conditioning="
                                 f"{model_config.conditioning!r}) but the condition has no context "
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
        if self.context_ids is not None:
            kwargs["context_ids"] = self.context_ids
        if self.tasks is not None:
            kwargs["tasks"] = self.tasks
        return kwargs

    def with_drop(self, drop) -> "Condition":
        return self.replace(drop=drop)

    def tile(self, reps: int) -> "Condition":
        """The condition repeated `reps` times along the batch (guidance runs a doubled batch)."""
        import jax.numpy as jnp

        return self.replace(text=None).map(lambda x: jnp.concatenate([x] * reps, 0))

    def concatenate(self, other: "Condition") -> "Condition":
        """This condition's examples, then `other`'s (the same fields present in both)."""
        import jax.numpy as jnp

        mine, theirs = self.replace(text=None).fields(), other.replace(text=None).fields()
        if set(mine) != set(theirs):
            raise ValueError(f"cannot join conditions with fields {sorted(mine)} and {sorted(theirs)}")
        return Condition(**{k: jnp.concatenate([jnp.asarray(mine[k]), jnp.asarray(theirs[k])], 0) for k in mine})

    def take(self, index) -> "Condition":
        """Examples `index` (a slice or integer array) of every present field (host or device arrays)."""
        return self.map(lambda x: x[index])

    def fields(self) -> dict:
        """The present fields by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def map(self, fn) -> "Condition":
        """`fn` applied to every present field."""
        return Condition(**{k: fn(v) for k, v in self.fields().items()})
