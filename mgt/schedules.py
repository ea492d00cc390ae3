"""Mask schedules γ(r): the fraction of tokens still masked at progress r ∈ [0, 1].

Shared by training (the mask ratio of an example is γ(r) with r ~ U[0, 1)) and decoding (after step s
of T, ⌊N0 · γ((s+1)/T)⌋ tokens stay masked). Definitions follow the official MaskGIT code:

    linear / uniform   1 − r
    square             1 − r²        (pow2)
    cubic              1 − r³        (pow3)
    sqrt               1 − r^0.5     (pow0.5)
    powP               1 − r^P       (e.g. "pow2.5")
    cosine             cos(π/2 · r)  (default)
    arccos             arccos(r) / (π/2)
    log                −log2(r) / log2(N)         (N = number of tokens)
    exp                1 − 2^(−log2(N) · (1 − r))

Every result is clipped to [1e-6, 1] as the official code does.
"""

from __future__ import annotations

import math
import re

import jax.numpy as jnp

SCHEDULE_NAMES = ("cosine", "linear", "uniform", "square", "cubic", "sqrt", "arccos", "log", "exp", "powP")
_POW = re.compile(r"^pow(\d+(\.\d*)?|\.\d+)$")
_ALIASES = {"square": 2.0, "cubic": 3.0, "sqrt": 0.5}


def check_schedule(name: str) -> str:
    """Return `name` if it names a schedule, else raise ValueError listing the valid names."""
    if not isinstance(name, str) or not (
        name in ("cosine", "linear", "uniform", "arccos", "log", "exp") or name in _ALIASES or _POW.match(name)
    ):
        raise ValueError(f"schedule={name!r} is not a mask schedule; expected one of {SCHEDULE_NAMES}")
    return name


def mask_ratio(name: str, r, num_tokens=None):
    """γ(r) for schedule `name`, clipped to [1e-6, 1].

    Args:
      name: a schedule name (see module docstring).
      r: progress in [0, 1]; float or float32 array of any shape.
      num_tokens: N, the number of tokens (only `log` and `exp` use it); scalar or broadcastable.
    Returns:
      float32 array shaped like `r`.
    """
    check_schedule(name)
    r = jnp.asarray(r, jnp.float32)
    if name in ("linear", "uniform"):
        out = 1.0 - r
    elif name == "cosine":
        out = jnp.cos(math.pi / 2 * r)
    elif name == "arccos":
        out = jnp.arccos(jnp.clip(r, -1.0, 1.0)) / (math.pi / 2)
    elif name in ("log", "exp"):
        if num_tokens is None:
            raise ValueError(f"schedule {name!r} needs num_tokens (the number of tokens N)")
        log2n = jnp.log2(jnp.maximum(jnp.asarray(num_tokens, jnp.float32), 2.0))
        if name == "log":
            out = -jnp.log2(r) / log2n  # r = 0 gives +inf, clipped to 1 below
        else:
            out = 1.0 - jnp.exp2(-log2n * (1.0 - r))
    else:
        p = _ALIASES.get(name) or float(name[3:])
        out = 1.0 - r**p
    return jnp.clip(out, 1e-6, 1.0)
