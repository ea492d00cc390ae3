"""Residual vector quantization (SoundStream, EnCodec, DAC): K codebooks applied to successive residuals.

Level 0 quantizes `z`, level k quantizes what levels 0..k-1 left over; the reconstruction is the sum
of the level codes, so any prefix of levels decodes to a coarser approximation. Quantizer dropout
(SoundStream) trains every prefix: per example, only the first `n ~ U{1..K}` levels enter the output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mgt.tokenizers.quantizers.base import QuantizerOutput, check_int, check_unit_interval
from mgt.tokenizers.quantizers.vector import VectorQuantizer


class ResidualVectorQuantizer(nnx.Module):
    """K `VectorQuantizer`s on successive residuals; `codebook_size` = V per level, `num_levels` = K.

    Args:
      num_levels: K >= 1.
      codebook_size: V, codes per level.
      dim: D, the size of the input vectors.
      rngs: initialises every level.
      quantizer_dropout: probability, per example (leading axis of `z`), of keeping only the first
        `n ~ U{1..K}` levels in the training output. Needs `rng` in training calls.
      **vq_kwargs: passed to every level's `VectorQuantizer` (commitment_cost, use_ema, kmeans_init, ...).
    """

    def __init__(self, num_levels: int, codebook_size: int, dim: int, *, rngs: nnx.Rngs,
                 quantizer_dropout: float = 0.0, **vq_kwargs):
        self.num_levels = check_int("num_levels", num_levels, 1)
        self.codebook_size = check_int("codebook_size", codebook_size, 2)
        self.code_digits = ()  # learned codes: no digit structure (TransformerConfig.code_digits)
        self.dim = check_int("dim", dim, 1)
        self.quantizer_dropout = check_unit_interval("quantizer_dropout", quantizer_dropout)
        self.levels = nnx.List([VectorQuantizer(self.codebook_size, self.dim, rngs=rngs, **vq_kwargs)
                                for _ in range(self.num_levels)])

    def encode(self, z: jax.Array) -> jax.Array:
        """`z: float [..., D]` → int32 indices `[..., K]` (level k quantizes the k-th residual)."""
        residual = z.astype(jnp.float32)
        indices = []
        for level in self.levels:
            idx = level.encode(residual)
            residual = residual - level.decode(idx)
            indices.append(idx)
        return jnp.stack(indices, axis=-1)

    def decode(self, indices: jax.Array) -> jax.Array:
        """int indices `[..., k]` with 1 <= k <= K → float32 `[..., D]`, the sum of the first k levels' codes."""
        k = indices.shape[-1]
        if not 1 <= k <= self.num_levels:
            raise ValueError(f"indices must end in 1..{self.num_levels} levels, got shape {indices.shape}")
        out = self.levels[0].decode(indices[..., 0])
        for j in range(1, k):
            out = out + self.levels[j].decode(indices[..., j])
        return out

    def __call__(self, z: jax.Array, *, train: bool = False, rng: jax.Array | None = None,
                 dropout: bool = True) -> QuantizerOutput:
        """Quantize `z: float [..., D]`.

        Every level sees its full residual (losses and codebook updates of all levels); quantizer
        dropout only masks levels out of the returned `quantized`. As in DAC, the next residual is
        `residual − (straight-through code)`: without lookup projections its gradient is zero, so
        `d quantized / d z` is the identity (straight-through, like `z + sg(sum of codes − z)`), while
        levels with `lookup_dim` projections still get reconstruction gradients for them.

        Returns `QuantizerOutput(quantized float32 [..., D], indices int32 [..., K],
        losses {name: sum over levels}, metrics {"perplexity_k", "usage_k"} for each level k)`.
        `rng` (a key) is required in training when `quantizer_dropout > 0` (unless `dropout=False`: every
        level kept in this call); it also seeds the levels' k-means / revival sampling.
        """
        dropout = dropout and train and self.quantizer_dropout > 0
        if dropout and rng is None:
            raise ValueError("rng is required for training calls when quantizer_dropout > 0")
        level_keys = [None] * self.num_levels
        if rng is not None:
            rng, *level_keys = jax.random.split(rng, self.num_levels + 1)

        z32 = z.astype(jnp.float32)
        residual = z32
        total = jnp.zeros_like(z32)
        # Per-example number of levels kept; K (all) outside dropout.
        keep_levels = None
        if dropout:
            batch = z.shape[0] if z.ndim > 1 else 1
            drop_key, count_key = jax.random.split(rng)
            dropped = jax.random.bernoulli(drop_key, self.quantizer_dropout, (batch,))
            count = jax.random.randint(count_key, (batch,), 1, self.num_levels + 1)
            keep_levels = jnp.where(dropped, count, self.num_levels)
            keep_levels = keep_levels.reshape((batch,) + (1,) * (z.ndim - 1)) if z.ndim > 1 else keep_levels

        indices, losses, metrics = [], {}, {}
        for k, level in enumerate(self.levels):
            out = level(residual, train=train, rng=level_keys[k])
            if keep_levels is None:
                total = total + out.quantized
            else:
                total = total + jnp.where(k < keep_levels, out.quantized, 0.0)
            residual = residual - out.quantized
            indices.append(out.indices)
            for name, value in out.losses.items():
                losses[name] = losses.get(name, 0.0) + value
            for name, value in out.metrics.items():
                metrics[f"{name}_{k}"] = value
        return QuantizerOutput(total, jnp.stack(indices, axis=-1), losses, metrics)
