"""Sampling token grids from a `MaskedTransformer` with the decoding engine.

`sample(model, rng, ...)` validates its inputs on the host, then runs the decoding engine with the
model as a pytree `logits_fn` (`ModelLogits`): the parameters are arguments of the compiled loop —
never baked in as constants — so new weights (a later training step, EMA weights) reuse the code.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from typing import Any

from flax import nnx, struct

from mgt.decoding import decode


@struct.dataclass
class ModelLogits:
    """The decoding engine's `logits_fn` for an nnx model with a fixed condition, as a pytree.

    Being a pytree (the model's weights and the condition are its leaves, the graph definition is
    static), it is passed to compiled functions as an argument: `mgt.decoding.decode` never bakes the
    weights into the compiled program as constants, and new weights reuse the compiled code.
    Called with a doubled batch and `drop_condition` (classifier-free guidance) the condition is
    tiled to match.
    """

    graphdef: Any = struct.field(pytree_node=False)
    state: Any
    labels: Any = None
    context: Any = None
    context_mask: Any = None

    def __call__(self, tokens, drop_condition=None):
        # Merge inside every call: NNX modules must not cross JAX trace levels, and the decoding
        # loop calls this from inside its own lax.scan.
        model = nnx.merge(self.graphdef, self.state, copy=True)
        lab, ctx, cmask = self.labels, self.context, self.context_mask
        if drop_condition is not None:
            reps = tokens.shape[0] // (lab.shape[0] if lab is not None else ctx.shape[0])
            tile = lambda x: None if x is None else jnp.concatenate([x] * reps, 0)
            lab, ctx, cmask = tile(lab), tile(ctx), tile(cmask)
        return model(tokens, labels=lab, context=ctx, context_mask=cmask, drop_condition=drop_condition)


def model_logits_fn(model, *, labels=None, context=None, context_mask=None) -> ModelLogits:
    """`ModelLogits` for `model`: `fn(tokens, drop_condition=None) -> logits [B, ..., V]`."""
    graphdef, state = nnx.split(model)
    labels = None if labels is None else jnp.asarray(labels, jnp.int32)
    return ModelLogits(graphdef, state, labels, context, context_mask)


def model_inputs(model, *, batch_size=None, labels=None, context=None, context_mask=None, tokens=None,
                 guidance_scale=0.0):
    """Check a model's sampling inputs on the host → `(ModelLogits, starting tokens)`.

    The starting grid is all masked unless `tokens` is given; its batch size comes from
    `batch_size`, `labels` or `context`.
    """
    if tokens is None:
        if batch_size is None:
            batch_size = len(labels) if labels is not None else (context.shape[0] if context is not None else None)
        if batch_size is None:
            raise ValueError("sampling needs batch_size, labels, context or tokens to know the batch size")
        tokens = model.spec.masked(batch_size)
    model.check_inputs(tokens, labels)
    if guidance_scale and not model.config.null_condition:
        raise ValueError("guidance_scale != 0 needs a model trained with a null condition (null_condition=True)")
    fn = model_logits_fn(model, labels=labels, context=context, context_mask=context_mask)
    return fn, np.asarray(tokens, np.int32)


def sample(model, rng, *, batch_size: int | None = None, labels=None, context=None, context_mask=None,
           tokens=None, mask_id: int | None = None, **decode_kwargs):
    """Generate token grids with `model` (its weights are arguments of the compiled loop).

    Args:
      model: a `MaskedTransformer`.
      rng: one PRNG key or B keys.
      batch_size: B when neither `tokens` nor `labels` gives it.
      labels: int32 `[B]` for class-conditional models.
      context / context_mask: `[B, S, C]` / bool `[B, S]` for cross-attention models.
      tokens: int32 `[B, *grid(, K)]` starting grid (partly known for editing); all masked by default.
      mask_id: defaults to the model's `spec.mask_id`.
      **decode_kwargs: options of `mgt.decoding.decode` (num_steps, schedule, guidance_scale, ...).
    Returns:
      int32 tokens `[B, *grid(, K)]` (and the history with `return_history=True`).
    """
    fn, tokens = model_inputs(model, batch_size=batch_size, labels=labels, context=context,
                              context_mask=context_mask, tokens=tokens,
                              guidance_scale=decode_kwargs.get("guidance_scale", 0.0))
    return decode(fn, tokens, rng, mask_id=model.spec.mask_id if mask_id is None else mask_id, **decode_kwargs)
