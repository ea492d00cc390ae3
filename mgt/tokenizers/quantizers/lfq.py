"""Lookup-free quantization (LFQ; Yu et al., 2023, MAGVIT-v2 "Language Model Beats Diffusion").

Each of the `num_bits` channels is quantized to its sign, `q_i ∈ {-1, +1}`; the code index is
`sum_i [z_i > 0] · 2**i`, so the implicit codebook is `{-1, +1}**num_bits` with `2**num_bits` codes and
no lookup.

Entropy penalty. MAGVIT-v2 trains with `mean per-sample entropy − γ · codebook entropy` of the code
distribution `p(c | z) = softmax_c(−|z − c|² / temperature)`. Over the ±1 codebook this distribution
factorises over bits for every sample, so per-sample entropies are exact sums over any split of the
bits. The codebook entropy (of the batch-averaged distribution) does not factorise; it is computed
by splitting the bits into `num_groups` contiguous groups (≤ 8 bits each by default, so at most a
256-way softmax) and summing the entropies of the groups' batch-averaged distributions — exact when
the groups are independent over the batch, an upper bound otherwise. A 2**18 codebook therefore never
needs a 2**18-way softmax.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.tokenizers.quantizers.base import (
    QuantizerOutput,
    check_int,
    code_usage_metrics,
    entropy_terms,
    straight_through,
)

_MAX_BITS = 30  # indices and the codebook size (and a mask id after it) stay within int32
_DEFAULT_GROUP_BITS = 8


def _group_sizes(num_bits: int, num_groups: int) -> tuple[int, ...]:
    """Split `num_bits` into `num_groups` contiguous groups whose sizes differ by at most one."""
    base, extra = divmod(num_bits, num_groups)
    return tuple(base + 1 if g < extra else base for g in range(num_groups))


def _sign_codes(num_bits: int) -> np.ndarray:
    """float32 `[2**num_bits, num_bits]`: row c holds ±1 with bit i of c mapped to +1 if set."""
    c = np.arange(2**num_bits)[:, None]
    return np.where((c >> np.arange(num_bits)) & 1, 1.0, -1.0).astype(np.float32)


class LookupFreeQuantizer(nnx.Module):
    """LFQ with `codebook_size = 2**num_bits`, `num_levels = 1`.

    Args:
      num_bits: bits per code, 1..30.
      dim: size D of the input vectors; `None` means `num_bits`. Another value adds
        `nnx.Linear(D, num_bits)` before and `nnx.Linear(num_bits, D)` after (`rngs` required).
      rngs: initialises the projections.
      entropy_cost: weight of the entropy penalty (0 disables it).
      commitment_cost: weight of `mean((z − sg(q))²)` in the bit space.
      diversity_gamma: γ, weight of the codebook entropy inside the penalty.
      num_groups: bit groups for the codebook entropy; default `ceil(num_bits / 8)` (groups of ≤ 8 bits).
      temperature: temperature of `softmax(−|z − c|² / temperature)`.
    """

    def __init__(self, num_bits: int, *, dim: int | None = None, rngs: nnx.Rngs | None = None,
                 entropy_cost: float = 0.1, commitment_cost: float = 0.25, diversity_gamma: float = 1.0,
                 num_groups: int | None = None, temperature: float = 1.0):
        self.num_bits = check_int("num_bits", num_bits, 1)
        if self.num_bits > _MAX_BITS:
            raise ValueError(f"num_bits must be at most {_MAX_BITS} (int32 indices), got {num_bits}")
        self.codebook_size = 2**self.num_bits
        self.code_digits = (2,) * self.num_bits  # an index's bits (TransformerConfig.code_digits)
        self.num_levels = 1
        self.dim = self.num_bits if dim is None else check_int("dim", dim, 1)
        if num_groups is None:
            num_groups = math.ceil(self.num_bits / _DEFAULT_GROUP_BITS)
        num_groups = check_int("num_groups", num_groups, 1)
        if num_groups > self.num_bits:
            raise ValueError(f"num_groups must be at most num_bits={self.num_bits}, got {num_groups}")
        self.group_sizes = _group_sizes(self.num_bits, num_groups)
        if max(self.group_sizes) > 16:
            raise ValueError(f"num_groups={num_groups} leaves groups of {max(self.group_sizes)} bits "
                             "(a 2**bits-way softmax each); use groups of at most 16 bits")
        for name, value in (("entropy_cost", entropy_cost), ("commitment_cost", commitment_cost),
                            ("diversity_gamma", diversity_gamma)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.entropy_cost = float(entropy_cost)
        self.commitment_cost = float(commitment_cost)
        self.diversity_gamma = float(diversity_gamma)
        self.temperature = float(temperature)

        if self.dim != self.num_bits:
            if rngs is None:
                raise ValueError(f"rngs is required when dim={self.dim} differs from num_bits={self.num_bits}")
            self.in_proj = nnx.Linear(self.dim, self.num_bits, rngs=rngs)
            self.out_proj = nnx.Linear(self.num_bits, self.dim, rngs=rngs)
        else:
            self.in_proj = self.out_proj = None

    def _to_bits_space(self, z: jax.Array) -> jax.Array:
        if z.shape[-1] != self.dim:
            raise ValueError(f"z must end in dim={self.dim}, got shape {z.shape}")
        x = z.astype(jnp.float32)
        return self.in_proj(x) if self.in_proj is not None else x

    def _project_out(self, codes: jax.Array) -> jax.Array:
        if self.out_proj is not None:
            codes = self.out_proj(codes)
        return codes.astype(jnp.float32)

    def _indices(self, x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(x > 0, (2 ** np.arange(self.num_bits)).astype(np.int32), 0), axis=-1).astype(jnp.int32)

    def encode(self, z: jax.Array) -> jax.Array:
        """`z: float [..., D]` → int32 indices `[...]` in [0, 2**num_bits)."""
        return self._indices(self._to_bits_space(z))

    def codes_from_indices(self, indices: jax.Array) -> jax.Array:
        """int indices `[...]` → ±1 codes float32 `[..., num_bits]`."""
        bits = (indices[..., None].astype(jnp.int32) >> np.arange(self.num_bits, dtype=np.int32)) & 1
        return jnp.where(bits == 1, 1.0, -1.0).astype(jnp.float32)

    def decode(self, indices: jax.Array) -> jax.Array:
        """int indices `[...]` → float32 `[..., D]` (±1 codes, through `out_proj` if present)."""
        return self._project_out(self.codes_from_indices(indices))

    def bit_entropy_terms(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Entropies of `softmax_c(−|x − c|² / T)` for bit-space inputs `x: [..., num_bits]`.

        Returns float32 scalars `(sample_entropy, codebook_entropy)`: the mean over inputs of the
        per-sample entropy (exact), and the sum over bit groups of each group's batch-averaged
        distribution's entropy (exact when groups are independent over the batch).
        """
        x_nb = x.reshape(-1, self.num_bits).astype(jnp.float32)
        sample_entropy = codebook_entropy = jnp.zeros((), jnp.float32)
        start = 0
        for size in self.group_sizes:
            codes_cg = jnp.asarray(_sign_codes(size))
            # −|x − c|² = 2 x·c − |x|² − |c|²; the last two terms are constant over codes c.
            logits_nc = 2.0 * jnp.matmul(x_nb[:, start:start + size], codes_cg.T,
                                         precision=jax.lax.Precision.HIGHEST) / self.temperature
            group_sample, group_codebook = entropy_terms(logits_nc, eps=1e-12)
            sample_entropy += group_sample
            codebook_entropy += group_codebook
            start += size
        return sample_entropy, codebook_entropy

    def __call__(self, z: jax.Array, *, train: bool = False, rng: jax.Array | None = None) -> QuantizerOutput:
        """Quantize `z: float [..., D]`; `rng` is accepted for interface uniformity and unused.

        Returns `QuantizerOutput(quantized float32 [..., D], indices int32 [...],
        losses {"commitment", "entropy" (if entropy_cost > 0)},
        metrics {"perplexity", "usage"[, "sample_entropy", "codebook_entropy"]})`.
        """
        del rng
        x = self._to_bits_space(z)
        q = jnp.where(x > 0, 1.0, -1.0).astype(jnp.float32)
        indices = self._indices(x)
        losses = {"commitment": self.commitment_cost * jnp.mean((x - jax.lax.stop_gradient(q)) ** 2)}
        metrics = code_usage_metrics(indices, self.codebook_size)
        if self.entropy_cost > 0:
            sample_entropy, codebook_entropy = self.bit_entropy_terms(x)
            losses["entropy"] = self.entropy_cost * (sample_entropy - self.diversity_gamma * codebook_entropy)
            metrics["sample_entropy"] = sample_entropy
            metrics["codebook_entropy"] = codebook_entropy
        if train:
            q = straight_through(x, q)
        return QuantizerOutput(self._project_out(q), indices, losses, metrics)
