"""Finite scalar quantization (FSQ; Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Each of the `len(levels)` channels is bounded with tanh and rounded to one of `levels[i]` values; the
code is the tuple of rounded values and its index the mixed-radix number
`sum_i k_i · prod(levels[:i])` with digits `k_i ∈ [0, levels[i])`. There is no codebook to learn, no
loss, and every one of the `prod(levels)` codes is reachable.

Code values (normalised to [-1, 1]) for a channel with L levels:
- odd L: `{-1, …, 0, …, 1}`, L evenly spaced values;
- even L (paper default): `{-1, …, 0, …, 1 - 2/L}` — the grid of `L // 2`-scaled integers, with a zero;
- even L with `symmetric=True`: `{±1/(L-1), ±3/(L-1), …, ±1}`, symmetric about 0 and without a zero.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.tokenizers.quantizers.base import QuantizerOutput, check_int, code_usage_metrics


class FiniteScalarQuantizer(nnx.Module):
    """FSQ over `levels` (each >= 2); `codebook_size = prod(levels)`, `num_levels = 1`.

    Args:
      levels: values per channel, e.g. `(8, 5, 5, 5)` (1000 codes) or `(8, 8, 8, 5, 5, 5)` (64000).
      dim: size D of the input vectors. `None` (default) means `len(levels)`; any other value adds
        `nnx.Linear(D, len(levels))` before and `nnx.Linear(len(levels), D)` after the quantizer
        (then `rngs` is required).
      rngs: initialises the projections.
      symmetric: place the values of even-level channels symmetrically about 0 (no zero value).
    """

    def __init__(self, levels: Sequence[int], *, dim: int | None = None, rngs: nnx.Rngs | None = None,
                 symmetric: bool = False):
        try:
            levels = tuple(levels)
        except TypeError:
            raise ValueError(f"levels must be a sequence of integers >= 2, got {levels!r}") from None
        if not levels:
            raise ValueError("levels must be a non-empty sequence of integers >= 2, got ()")
        levels = tuple(check_int(f"levels[{i}]", level, 2) for i, level in enumerate(levels))
        self.levels = levels
        self.codebook_size = math.prod(levels)
        self.code_digits = levels  # an index's mixed-radix digits (TransformerConfig.code_digits)
        if self.codebook_size > np.iinfo(np.int32).max:
            raise ValueError(f"levels give prod(levels)={self.codebook_size} codes, more than int32 indices hold")
        self.num_levels = 1
        self.num_channels = len(levels)
        self.dim = self.num_channels if dim is None else check_int("dim", dim, 1)
        self.symmetric = bool(symmetric)

        levels_c = np.asarray(levels, np.float64)
        even = levels_c % 2 == 0
        shifted = even & self.symmetric  # even channels whose values sit on half-integers
        eps = 1e-3
        # Rounded values v lie on integers (or half-integers where `shifted`); digit k = v + scale and
        # the normalised code is v / scale.
        scale = np.where(shifted, (levels_c - 1) / 2, np.floor(levels_c / 2))
        offset = np.where(even & ~shifted, 0.5, 0.0)  # paper's asymmetric even grid
        half_range = (levels_c - 1) * (1 - eps) / 2
        # The paper's shift: tan, where arctanh would be exact (bound(0) = 0) for L >= 4 but undefined
        # for L = 2; for L >= 4 the two differ by < 0.2%.
        shift = np.tan(offset / half_range)
        # Per-channel constants are kept as tuples (static module attributes, not state leaves), in a
        # tuple of pairs rather than a dict: a module's graph definition must be hashable to be a
        # static jit argument (e.g. a tokenizer inside mgt.GenerationPipeline).
        self._constants = (
            ("scale", tuple(scale.tolist())),
            ("offset", tuple(offset.tolist())),
            ("half_range", tuple(half_range.tolist())),
            ("shift", tuple(shift.tolist())),
            ("round_shift", tuple(np.where(shifted, 0.5, 0.0).tolist())),
        )
        self._basis = tuple(np.cumprod((1,) + levels[:-1]).tolist())

        if self.dim != self.num_channels:
            if rngs is None:
                raise ValueError(f"rngs is required when dim={self.dim} differs from len(levels)={self.num_channels}")
            self.in_proj = nnx.Linear(self.dim, self.num_channels, rngs=rngs)
            self.out_proj = nnx.Linear(self.num_channels, self.dim, rngs=rngs)
        else:
            self.in_proj = self.out_proj = None

    def _constant(self, name: str) -> np.ndarray:
        return np.asarray(dict(self._constants)[name], np.float32)

    @property
    def _scale(self) -> np.ndarray:
        """float32 `[C]`: rounded value v ↔ digit `v + scale` ↔ normalised code `v / scale`."""
        return self._constant("scale")

    @property
    def _offset(self) -> np.ndarray:
        return self._constant("offset")

    @property
    def _half_range(self) -> np.ndarray:
        return self._constant("half_range")

    @property
    def _shift(self) -> np.ndarray:
        return self._constant("shift")

    @property
    def _round_shift(self) -> np.ndarray:
        return self._constant("round_shift")

    def _bounded(self, z: jax.Array) -> jax.Array:
        """`z [..., D]` → bounded channel values `[..., C]` before rounding (float32)."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"z must end in dim={self.dim}, got shape {z.shape}")
        x = z.astype(jnp.float32)
        if self.in_proj is not None:
            x = self.in_proj(x)
        return jnp.tanh(x + self._shift) * self._half_range - self._offset

    def _round(self, bounded: jax.Array, train: bool) -> jax.Array:
        """Bounded values → rounded values v (integers or half-integers), straight-through in training."""
        target = jnp.round(bounded - self._round_shift) + self._round_shift
        if train:
            return bounded + jax.lax.stop_gradient(target - bounded)
        return target

    def _digits_to_indices(self, digits: jax.Array) -> jax.Array:
        return jnp.sum(digits.astype(jnp.int32) * np.asarray(self._basis, np.int32), axis=-1).astype(jnp.int32)

    def codes_from_indices(self, indices: jax.Array) -> jax.Array:
        """int indices `[...]` in [0, prod(levels)) → normalised codes float32 `[..., C]` in [-1, 1]."""
        digits = (indices[..., None].astype(jnp.int32) // np.asarray(self._basis, np.int32)) % np.asarray(
            self.levels, np.int32)
        return (digits.astype(jnp.float32) - self._scale) / self._scale

    def indices_from_codes(self, codes: jax.Array) -> jax.Array:
        """Normalised codes `[..., C]` (values on the grid) → int32 indices `[...]`."""
        digits = jnp.round(codes.astype(jnp.float32) * self._scale + self._scale)
        return self._digits_to_indices(digits)

    def encode(self, z: jax.Array) -> jax.Array:
        """`z: float [..., D]` → int32 indices `[...]` in [0, prod(levels))."""
        values = self._round(self._bounded(z), train=False)
        return self._digits_to_indices(jnp.round(values + self._scale))

    def decode(self, indices: jax.Array) -> jax.Array:
        """int indices `[...]` → float32 `[..., D]` (normalised codes, through `out_proj` if present)."""
        return self._project_out(self.codes_from_indices(indices))

    def _project_out(self, codes: jax.Array) -> jax.Array:
        if self.out_proj is not None:
            codes = self.out_proj(codes)
        return codes.astype(jnp.float32)

    def __call__(self, z: jax.Array, *, train: bool = False, rng: jax.Array | None = None) -> QuantizerOutput:
        """Quantize `z: float [..., D]`; `rng` is accepted for interface uniformity and unused.

        Returns `QuantizerOutput(quantized float32 [..., D], indices int32 [...], losses {},
        metrics {"perplexity", "usage"})`. In training, rounding passes gradients straight through
        (the tanh bound keeps its gradient).
        """
        del rng
        values = self._round(self._bounded(z), train=train)
        codes = values / self._scale
        digits = jnp.round(jax.lax.stop_gradient(values) + self._scale)
        indices = self._digits_to_indices(digits)
        return QuantizerOutput(self._project_out(codes), indices, {}, code_usage_metrics(indices, self.codebook_size))
