"""Basic layers of the masked Transformer: parameters with logical axis names, norms, attention, MLPs.

Every parameter carries logical axis names (`out_sharding`) so that `mgt.sharding` can map them to a
mesh with `data` and `fsdp` axes; eager sharding is off so that models also build outside a mesh.
Parameters are float32; `dtype` is the compute dtype (bfloat16 on accelerators); norms and softmax
run in float32.

Logical axis names: "embed" (model width), "mlp" (MLP width), "heads", "kv" (head dim), "vocab",
"levels" (code levels), "pos" (positions), "context" (context embedding width), "layers" (stacked).
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.profiling import scoped

# Official MaskGIT init: truncated normal (±2σ) with σ = 0.02.
TRUNC_NORMAL = nnx.initializers.truncated_normal(stddev=0.02)
ZEROS = nnx.initializers.zeros_init()
ONES = nnx.initializers.ones_init()


def make_param(rngs: nnx.Rngs | None, init, shape: Sequence[int], names: Sequence[str | None]) -> nnx.Param:
    """A float32 nnx.Param with logical axis `names` (one per dimension)."""
    shape = tuple(int(s) for s in shape)
    if len(names) != len(shape):
        raise ValueError(f"logical names {names} do not match parameter shape {shape}")
    key = rngs.params() if rngs is not None else jax.random.key(0)
    return nnx.Param(init(key, shape, jnp.float32), out_sharding=tuple(names), eager_sharding=False)


def dropout(x, rate: float, key, deterministic: bool):
    """Inverted dropout with an explicit key (works inside scanned layers)."""
    if deterministic or rate == 0.0 or key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class LayerNorm(nnx.Module):
    """LayerNorm with `scale` and `bias` `[D]`, computed in float32 (official eps: 1e-12)."""

    def __init__(self, dim: int, *, epsilon: float = 1e-6, rngs: nnx.Rngs | None = None):
        self.epsilon = epsilon
        self.scale = make_param(rngs, ONES, (dim,), ("embed",))
        self.bias = make_param(rngs, ZEROS, (dim,), ("embed",))

    @scoped("norm")
    def __call__(self, x):
        dtype = x.dtype
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * self.scale[...] + self.bias[...]).astype(dtype)


class RMSNorm(nnx.Module):
    """RMSNorm with `scale` `[D]`, computed in float32."""

    def __init__(self, dim: int, *, epsilon: float = 1e-6, names=("embed",), rngs: nnx.Rngs | None = None):
        self.epsilon = epsilon
        self.scale = make_param(rngs, ONES, (dim,), names)

    @scoped("norm")
    def __call__(self, x):
        dtype = x.dtype
        x = x.astype(jnp.float32)
        y = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + self.epsilon)
        return (y * self.scale[...]).astype(dtype)


class Dense(nnx.Module):
    """y = x @ kernel + bias, kernel `[in, out]` with logical `names`."""

    def __init__(self, in_dim: int, out_dim: int, *, names=("embed", "mlp"), use_bias=True, init=TRUNC_NORMAL,
                 dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        self.dtype = dtype
        self.kernel = make_param(rngs, init, (in_dim, out_dim), names)
        self.bias = make_param(rngs, ZEROS, (out_dim,), (names[1],)) if use_bias else None

    def __call__(self, x):
        y = jnp.einsum("...i,io->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class MultiHeadAttention(nnx.Module):
    """Multi-head attention with the official MaskGIT parameter shapes.

    query/key/value kernels `[D_in, H, Dh]` and biases `[H, Dh]`; out kernel `[H, Dh, D]`, bias `[D]`.
    Self-attention when `kv` is None, else cross-attention to `kv` `[B, S, kv_dim]`. Attention is
    an explicit float32 softmax (what XLA fuses on any backend), or cuDNN's fused attention through
    `jax.nn.dot_product_attention` when `implementation="cudnn"` and no attention dropout is active.
    `rope=True` (self-attention only) rotates queries and keys by their positions (`rotary`), so that
    attention scores depend on relative positions.
    """

    def __init__(self, dim: int, num_heads: int, *, head_dim: int | None = None, kv_dim: int | None = None,
                 use_bias=True, qk_norm=False, norm_epsilon=1e-6, dtype=jnp.float32, implementation=None,
                 rope: bool = False, rngs: nnx.Rngs | None = None):
        head_dim = head_dim or dim // num_heads
        kv_dim = kv_dim or dim
        if rope and head_dim % 2:
            raise ValueError(f"rope needs an even head_dim, got {head_dim}")
        self.num_heads, self.head_dim, self.dtype, self.implementation = num_heads, head_dim, dtype, implementation
        self.rope = bool(rope)
        kv_names = "context" if kv_dim != dim else "embed"

        def proj(in_dim, in_name):
            return _HeadProjection(in_dim, num_heads, head_dim, in_name, use_bias, rngs)

        self.query = proj(dim, "embed")
        self.key = proj(kv_dim, kv_names)
        self.value = proj(kv_dim, kv_names)
        self.out = _OutProjection(num_heads, head_dim, dim, use_bias, rngs)
        if qk_norm:
            self.query_norm = RMSNorm(head_dim, epsilon=norm_epsilon, names=("kv",), rngs=rngs)
            self.key_norm = RMSNorm(head_dim, epsilon=norm_epsilon, names=("kv",), rngs=rngs)
        else:
            self.query_norm = self.key_norm = None

    @scoped("attention")
    def __call__(self, x, kv=None, kv_mask=None, *, dropout_rate=0.0, key=None, deterministic=True,
                 causal=False, cache=None, cache_index=None, grid_positions=None, bias=None):
        """x `[B, T, D]`, kv `[B, S, Dkv]` or None, kv_mask bool `[B, S]` (True = attend) → `[B, T, D]`.

        grid_positions: int `[T, A]` (self-attention only): rotate queries and keys by each position's
          A grid coordinates (`rotary_grid`), so that scores depend on grid offsets.
        bias: float `[H, T, S]` or `[B, H, T, S]`, added to the attention scores (a relative position bias).

        Autoregressive use (self-attention only):
          causal: position t attends to positions <= t only.
          cache: `(keys, values)`, each `[B, L, H, Dh]`: incremental decoding. The T new positions are
            written at `cache_index` (int32 scalar, may be traced) with `lax.dynamic_update_slice`
            and attend causally to the cache; returns `(y [B, T, D], (keys, values))`.
        """
        if cache is not None and (kv is not None or kv_mask is not None):
            raise ValueError("cache is for self-attention only; got kv / kv_mask as well")
        kv = x if kv is None else kv
        q = self.query(x.astype(self.dtype), self.dtype)
        k = self.key(kv.astype(self.dtype), self.dtype)
        v = self.value(kv.astype(self.dtype), self.dtype)
        if self.query_norm is not None:
            q, k = self.query_norm(q), self.key_norm(k)
        if self.rope:
            if kv is not x:
                raise ValueError("rope is for self-attention; got kv (cross-attention)")
            positions = jnp.arange(q.shape[1]) + (0 if cache is None else jnp.asarray(cache_index, jnp.int32))
            q, k = rotary(q, positions), rotary(k, positions)
        if grid_positions is not None:
            if kv is not x:
                raise ValueError("grid_positions are for self-attention; got kv (cross-attention)")
            q, k = rotary_grid(q, grid_positions), rotary_grid(k, grid_positions)
        mask = None if kv_mask is None else kv_mask[:, None, None, :]  # [B, 1, T, S] broadcast
        if cache is not None:
            cache = _update_cache(cache, k, v, cache_index)
            k, v = cache[0].astype(q.dtype), cache[1].astype(q.dtype)
            t, s = q.shape[1], k.shape[1]
            query_pos = cache_index + jnp.arange(t)
            mask = (jnp.arange(s)[None, :] <= query_pos[:, None])[None, None]  # [1, 1, T, L]
            causal = False  # the cache mask already is the causal mask at these positions
        scale = 1.0 / math.sqrt(self.head_dim)
        if self.implementation == "cudnn" and (deterministic or dropout_rate == 0.0):
            y = jax.nn.dot_product_attention(q, k, v, bias=None if bias is None else jnp.broadcast_to(
                bias, (q.shape[0],) + bias.shape[-3:]).astype(q.dtype), mask=mask, scale=scale, is_causal=causal,
                implementation="cudnn")
        else:
            # Written out rather than `jax.nn.dot_product_attention(implementation="xla")`, which
            # computes the same thing through 5-D grouped-query shapes that cost XLA a transpose of
            # q, k, v and the probabilities at every call on a CPU.
            logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32) * scale
            if bias is not None:
                logits = logits + bias.astype(jnp.float32)
            if causal:
                t, s = q.shape[1], k.shape[1]
                tril = jnp.tril(jnp.ones((t, s), bool))[None, None]
                mask = tril if mask is None else mask & tril
            if mask is not None:
                logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
            probs = dropout(jax.nn.softmax(logits, -1), dropout_rate, key, deterministic)
            y = jnp.einsum("bnts,bsnh->btnh", probs.astype(self.dtype), v)
        y = self.out(y, self.dtype)
        return y if cache is None else (y, cache)


def rotary(x, positions, max_wavelength: float = 10_000.0):
    """Rotary position embedding (RoPE, Su et al. 2021) of x `[B, T, H, Dh]` (Dh even) at int
    `positions` `[T]`: each pair of channels (i, i + Dh/2) rotated by positions / max_wavelength^(2i/Dh),
    so that the dot product of a rotated query and key depends on their positions' difference only."""
    half = x.shape[-1] // 2
    inv_freq = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(positions, jnp.float32)[:, None] * inv_freq[None]  # [T, Dh/2]
    sin, cos = jnp.sin(angles)[None, :, None], jnp.cos(angles)[None, :, None]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def rotary_grid(x, positions, max_wavelength: float = 100.0):
    """Axial RoPE of x `[B, T, H, Dh]` at int grid coordinates `positions` `[T, A]`: the channel pairs are
    shared out among the A axes (as evenly as possible), each share rotated by its axis' coordinate
    (`rotary`), so that the dot product of a rotated query and key depends on their coordinates'
    differences only. The longest wavelength is short (100, not 10,000): token grids are a few dozen
    cells a side."""
    axes, pairs = positions.shape[-1], x.shape[-1] // 2
    sizes = [2 * (pairs // axes + int(i < pairs % axes)) for i in range(axes)]
    parts = jnp.split(x, list(itertools.accumulate(sizes[:-1])), axis=-1)
    return jnp.concatenate([rotary(part, positions[:, i], max_wavelength) if part.shape[-1] else part
                            for i, part in enumerate(parts)] + ([x[..., 2 * pairs:]] if x.shape[-1] % 2 else []), -1)


def relative_table_rows(grid) -> int:
    """Rows of a relative-bias table over `grid`: one per grid offset (`prod(2 g - 1)`), one for the prefix."""
    return math.prod(2 * int(g) - 1 for g in grid) + 1


def relative_offset_index(grid: tuple[int, ...], length: int) -> np.ndarray:
    """int32 `[length, length]`: each (query, key) pair's row in a relative-bias table of
    `prod(2 g - 1) + 1` rows — the cells (the last `prod(grid)` of `length` rows, raster order) by their
    grid offset, any pair with a prefix row (class / task token) the last row."""
    grid = tuple(int(g) for g in grid)
    cells = np.stack(np.unravel_index(np.arange(math.prod(grid)), grid), -1)  # [N, A]
    offset = cells[:, None, :] - cells[None, :, :] + (np.asarray(grid) - 1)  # [N, N, A] in [0, 2g - 2]
    index = np.ravel_multi_index(tuple(np.moveaxis(offset, -1, 0)), tuple(2 * g - 1 for g in grid))
    prefix = length - len(cells)
    out = np.full((length, length), math.prod(2 * g - 1 for g in grid), np.int32)
    out[prefix:, prefix:] = index
    return out


def _update_cache(cache, k, v, index):
    """Write k, v `[B, T, H, Dh]` into the cache `(keys, values)` `[B, L, H, Dh]` at position `index`."""
    keys, values = cache
    zero = jnp.zeros((), jnp.int32)
    start = (zero, jnp.asarray(index, jnp.int32), zero, zero)
    keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), start)
    values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), start)
    return keys, values


class _HeadProjection(nnx.Module):
    def __init__(self, in_dim, num_heads, head_dim, in_name, use_bias, rngs):
        self.kernel = make_param(rngs, TRUNC_NORMAL, (in_dim, num_heads, head_dim), (in_name, "heads", "kv"))
        self.bias = make_param(rngs, ZEROS, (num_heads, head_dim), ("heads", "kv")) if use_bias else None

    def __call__(self, x, dtype):
        # As one [D, N·Dh] matmul: an einsum may order the output dims so that XLA transposes the
        # kernel at every call.
        d, n, h = self.kernel.shape
        y = (x @ self.kernel[...].astype(dtype).reshape(d, n * h)).reshape(x.shape[:-1] + (n, h))
        return y + self.bias[...].astype(dtype) if self.bias is not None else y


class _OutProjection(nnx.Module):
    def __init__(self, num_heads, head_dim, dim, use_bias, rngs):
        self.kernel = make_param(rngs, TRUNC_NORMAL, (num_heads, head_dim, dim), ("heads", "kv", "embed"))
        self.bias = make_param(rngs, ZEROS, (dim,), ("embed",)) if use_bias else None

    def __call__(self, y, dtype):
        n, h, d = self.kernel.shape
        out = y.reshape(y.shape[:-2] + (n * h,)) @ self.kernel[...].astype(dtype).reshape(n * h, d)
        return out + self.bias[...].astype(dtype) if self.bias is not None else out


class GeluMlp(nnx.Module):
    """BERT MLP: Dense(mlp) → GELU (tanh approximation, the `jax.nn.gelu` default) → Dense(dim)."""

    def __init__(self, dim, mlp_dim, *, dtype=jnp.float32, use_bias=True, rngs=None):
        self.intermediate_output = Dense(dim, mlp_dim, names=("embed", "mlp"), use_bias=use_bias, dtype=dtype,
                                         rngs=rngs)
        self.layer_output = Dense(mlp_dim, dim, names=("mlp", "embed"), use_bias=use_bias, dtype=dtype, rngs=rngs)

    @scoped("mlp")
    def __call__(self, x):
        return self.layer_output(jax.nn.gelu(self.intermediate_output(x), approximate=True))


class SwiGluMlp(nnx.Module):
    """SwiGLU MLP: (silu(x W_gate) * x W_up) W_down, no biases."""

    def __init__(self, dim, mlp_dim, *, dtype=jnp.float32, rngs=None):
        self.gate = Dense(dim, mlp_dim, names=("embed", "mlp"), use_bias=False, dtype=dtype, rngs=rngs)
        self.up = Dense(dim, mlp_dim, names=("embed", "mlp"), use_bias=False, dtype=dtype, rngs=rngs)
        self.down = Dense(mlp_dim, dim, names=("mlp", "embed"), use_bias=False, dtype=dtype, rngs=rngs)

    @scoped("mlp")
    def __call__(self, x):
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))
