"""Optimisers from config: AdamW with linear warm-up and cosine decay, clipping, accumulation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def make_optimizer(cfg, total_steps: int, *, learning_rate=None) -> optax.GradientTransformation:
    """`cfg` has learning_rate, b1, b2, weight_decay, warmup_steps, grad_clip, grad_accum.

    Weight decay applies to matrices and embedding tables only (ndim >= 2), not to biases or norms.
    """
    lr = float(cfg.learning_rate if learning_rate is None else learning_rate)
    warmup = int(min(cfg.warmup_steps, max(total_steps - 1, 0)))
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(total_steps, warmup + 1),
                                                  end_value=0.1 * lr)
    decay_mask = lambda params: jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)
    chain = []
    if cfg.grad_clip and cfg.grad_clip > 0:
        chain.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
    chain.append(optax.adamw(schedule, b1=float(cfg.b1), b2=float(cfg.b2), weight_decay=float(cfg.weight_decay),
                             mask=decay_mask))
    tx = optax.chain(*chain)
    if int(cfg.get("grad_accum", 1)) > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(cfg.grad_accum))
    return tx
