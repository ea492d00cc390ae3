"""What every quantizer returns, the variable type for non-trainable quantizer state, and shared math.

A quantizer maps continuous vectors `z: float32 [..., D]` to discrete codes and back:

    __call__(z, *, train=False, rng=None) -> QuantizerOutput
    encode(z)        -> int32 indices [...]  (one level) or [..., K] (K residual levels)
    decode(indices)  -> float32 [..., D]     the code vectors, in the input space
    codebook_size    V, codes per level (int)
    num_levels       K (int)
"""

from __future__ import annotations

import math
import operator

import flax
import jax
import jax.numpy as jnp
from flax import nnx

# Codebooks larger than this get their usage metrics from a sort of the indices instead of a
# histogram with one bin per code (a 2**18 LFQ codebook would otherwise need 2**18 bins per call).
_MAX_HISTOGRAM_BINS = 1 << 16


@flax.struct.dataclass
class QuantizerOutput:
    """The result of a quantizer's forward pass (a pytree: it can leave `jit`).

    Attributes:
      quantized: float32 `[..., D]`, the code vectors in the input space. In training it carries the
        straight-through gradient (VQ: `z + stop_gradient(q - z)`; FSQ/LFQ: rounding / sign with a
        straight-through gradient), so `d quantized / d z` is the identity for VQ.
      indices: int32 `[...]` for single-level quantizers, `[..., K]` for residual VQ.
      losses: already-weighted scalar float32 loss terms, e.g. `{"commitment", "codebook", "entropy"}`;
        a trainer adds `sum(losses.values())` to its objective. Empty for FSQ.
      metrics: scalar float32 diagnostics, e.g. `{"perplexity", "usage"}`
        (`"perplexity_0", "usage_0", ...` per level for residual VQ).
    """

    quantized: jax.Array
    indices: jax.Array
    losses: dict[str, jax.Array]
    metrics: dict[str, jax.Array]


class CodebookStat(nnx.Variable):
    """Non-trainable quantizer state changed by training calls.

    EMA cluster sizes and sums, the EMA-updated codebook, the k-means `initialized` flag, the
    dead-code usage EMA and ring buffer. Kept out of `nnx.Param` so that optimisers skip it; select it
    with `nnx.state(model, CodebookStat)`. Mutations inside `jit` need `nnx.jit` (or a train step that
    returns the module's non-Param state).
    """


def straight_through(z: jax.Array, q: jax.Array) -> jax.Array:
    """`q` in the forward pass, identity gradient to `z` in the backward pass."""
    return z + jax.lax.stop_gradient(q - z)


def round_ste(x: jax.Array) -> jax.Array:
    """`round(x)` whose gradient is the identity."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """`x / max(|x|, eps)` along `axis` (norm computed in float32).

    Written as `x · rsqrt(max(|x|², eps²))` so that the gradient at x = 0 is finite: `sqrt` has an
    infinite derivative at 0, and `maximum`'s zero gradient times it is NaN (a silent stretch of audio
    through a bias-free codec gives exactly zero latents)."""
    x32 = x.astype(jnp.float32)
    squared = jnp.sum(x32 * x32, axis=axis, keepdims=True)
    return (x32 * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))).astype(x.dtype)


def entropy(probs: jax.Array, axis: int = -1, eps: float = 1e-5) -> jax.Array:
    """`-sum(p log(p + eps))` along `axis` (the official MaskGIT smoothing)."""
    return -jnp.sum(probs * jnp.log(probs + eps), axis=axis)


def entropy_terms(logits: jax.Array, eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
    """Entropy terms of `softmax(logits)` for `logits: [N, C]`, as in the official MaskGIT entropy loss.

    Returns float32 scalars `(sample_entropy, codebook_entropy)`: the mean over the N rows of each row's
    entropy, and the entropy of the row-averaged distribution (smoothed with `eps`). The entropy loss
    is `sample_entropy - codebook_entropy`: confident assignments that spread over the codebook.
    """
    logits = logits.astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    sample_entropy = -jnp.mean(jnp.sum(probs * log_probs, axis=-1))
    codebook_entropy = entropy(jnp.mean(probs, axis=0), eps=eps)
    return sample_entropy, codebook_entropy


def code_histogram(indices: jax.Array, codebook_size: int) -> jax.Array:
    """float32 `[codebook_size]` counts of each code in `indices` (any shape, int).

    Written with jnp ops over the whole array: on a sharded batch under `jit`, GSPMD adds the
    per-device counts, so the histogram is global without named axes.
    """
    flat = indices.reshape(-1).astype(jnp.int32)
    return jnp.zeros((codebook_size,), jnp.float32).at[flat].add(1.0, mode="drop")


def code_usage_metrics(indices: jax.Array, codebook_size: int) -> dict[str, jax.Array]:
    """Codebook usage over all of `indices` (int, any shape): float32 scalars

    `perplexity` = exp(entropy of the code histogram) in [1, min(V, N)] and
    `usage` = fraction of the V codes that occur at least once, in [1/V, 1].

    Small codebooks use a V-bin histogram; large ones sort the N indices and count runs (exact, O(N log
    N), no V-sized arrays).
    """
    flat = indices.reshape(-1).astype(jnp.int32)
    n = flat.shape[0]
    if codebook_size <= _MAX_HISTOGRAM_BINS:
        counts = code_histogram(flat, codebook_size)
        used = jnp.sum(counts > 0)
    else:
        ordered = jnp.sort(flat)
        starts = jnp.concatenate([jnp.ones((1,), bool), ordered[1:] != ordered[:-1]])
        run_ids = jnp.cumsum(starts) - 1  # 0 .. (#distinct - 1)
        counts = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), run_ids, num_segments=n)
        used = jnp.sum(starts)
    probs = counts / max(n, 1)
    log_probs = jnp.log(jnp.where(probs > 0, probs, 1.0))
    ent = -jnp.sum(probs * log_probs)
    return {
        "perplexity": jnp.exp(ent).astype(jnp.float32),
        "usage": (used / codebook_size).astype(jnp.float32),
    }


def check_int(name: str, value, minimum: int = 1) -> int:
    """Return `value` as an int if it is an integer >= `minimum`, else raise a ValueError naming it."""
    try:
        as_int = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if isinstance(value, bool) or as_int < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return as_int


def check_unit_interval(name: str, value, *, closed_right: bool = True) -> float:
    """Return `value` as a float in [0, 1] (or [0, 1)), else raise a ValueError naming it."""
    value = float(value)
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok or math.isnan(value):
        bracket = "]" if closed_right else ")"
        raise ValueError(f"{name} must be in [0, 1{bracket}, got {value}")
    return value
