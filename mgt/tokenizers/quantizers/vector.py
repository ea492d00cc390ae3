"""Vector quantization (VQ-VAE / VQGAN / MaskGIT) with the usual training aids.

The nearest code is found by squared Euclidean distance written as `|z|² − 2 z·e + |e|²`, exactly as in
the official MaskGIT tokenizer, whose checkpoint stores the codebook as `quantizer/codebook`
`[codebook_size, dim]`; `VectorQuantizer.codebook` has that name and shape so weights load directly.

Options (all off by default, so the default module is the official quantizer):
- `use_ema`: codebook updated as an exponential moving average of assigned vectors (VQ-VAE-2) rather
  than by gradients; the codebook is then a `CodebookStat`, not an `nnx.Param`.
- `l2_normalize`: cosine-similarity codes (ViT-VQGAN): inputs and codes are unit vectors.
- `lookup_dim`: factorised codes (ViT-VQGAN): a linear map to a low-dimensional lookup space and back.
- `kmeans_init`: the first training call sets the codebook by k-means over that batch.
- `dead_code_threshold`: codes whose usage falls below the threshold are replaced by recent inputs.

State written by training calls: the EMA statistics and codebook, the k-means flag, the dead-code
buffers live in `CodebookStat` variables. k-means initialisation and dead-code revival also write the
codebook itself; with a trainable (`nnx.Param`) codebook, that write survives `nnx.jit` and
`nnx.value_and_grad` / `nnx.grad`, but a hand-written train step that keeps only non-Param state from
the forward pass drops it (use `use_ema=True` there, or keep the Param writes too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mgt.tokenizers.quantizers.base import (
    CodebookStat,
    QuantizerOutput,
    check_int,
    check_unit_interval,
    code_histogram,
    code_usage_metrics,
    entropy_terms,
    l2_normalize,
    straight_through,
)

_HIGHEST = jax.lax.Precision.HIGHEST


def squared_euclidean_distance(x_nd: jax.Array, codebook_vd: jax.Array) -> jax.Array:
    """`[N, D] × [V, D] → [N, V]` squared distances as `|x|² − 2 x·e + |e|²` (the official formula).

    The dot products use full float32 precision so that the argmin does not depend on the backend's
    default (TF32 / bfloat16 passes) matmul precision.
    """
    x2 = jnp.sum(x_nd * x_nd, axis=-1, keepdims=True)
    e2 = jnp.sum(codebook_vd * codebook_vd, axis=-1)[None, :]
    xe = jnp.matmul(x_nd, codebook_vd.T, precision=_HIGHEST)
    return x2 - 2 * xe + e2


def kmeans(x_nd: jax.Array, num_clusters: int, key: jax.Array, *, iterations: int = 10,
           spherical: bool = False) -> jax.Array:
    """Lloyd's k-means over the rows of `x_nd: float32 [N, D]` → centres `float32 [num_clusters, D]`.

    Centres start at rows sampled from `x_nd` (with replacement when N < num_clusters); an empty
    cluster keeps its previous centre. `spherical` keeps centres on the unit sphere (cosine codes).
    Fixed shapes and iteration count: jittable.
    """
    n = x_nd.shape[0]
    x_nd = x_nd.astype(jnp.float32)
    start = jax.random.choice(key, n, (num_clusters,), replace=n < num_clusters)
    centers = x_nd[start]

    def step(_, centers_vd):
        assign_n = jnp.argmin(squared_euclidean_distance(x_nd, centers_vd), axis=-1)
        sums_vd = jax.ops.segment_sum(x_nd, assign_n, num_segments=num_clusters)
        counts_v = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), assign_n, num_segments=num_clusters)
        means_vd = sums_vd / jnp.maximum(counts_v, 1.0)[:, None]
        if spherical:
            means_vd = l2_normalize(means_vd)
        return jnp.where(counts_v[:, None] > 0, means_vd, centers_vd)

    return jax.lax.fori_loop(0, iterations, step, centers)


class VectorQuantizer(nnx.Module):
    """Nearest-neighbour vector quantizer over a learned codebook `[codebook_size, D_lookup]`.

    Args:
      codebook_size: V, the number of codes (>= 2).
      dim: D, the size of the input vectors.
      rngs: initialises the codebook (and projections); seeds k-means / revival sampling.
      commitment_cost: weight of `mean((sg(q) − z)²)` (pulls the encoder to its codes).
      codebook_cost: weight of `mean((q − sg(z))²)` (pulls codes to the encoder); unused with EMA.
      entropy_cost: weight of the official entropy loss over `softmax(−distance / entropy_temperature)`:
        mean per-sample entropy minus the entropy of the batch-averaged distribution. 0 disables it.
      entropy_temperature: temperature of that softmax (official: 0.01).
      use_ema: update the codebook by EMA of assigned vectors (Laplace-smoothed cluster sizes).
      ema_decay: decay of those EMAs and of the dead-code usage EMA, in [0, 1).
      l2_normalize: normalise inputs and codes to unit length before the lookup.
      lookup_dim: if set, look up in a `lookup_dim`-dimensional space reached by `nnx.Linear(dim,
        lookup_dim)` and mapped back by `nnx.Linear(lookup_dim, dim)`; the codebook is then
        `[V, lookup_dim]`.
      kmeans_init: set the codebook by `kmeans_iterations` of k-means on the first training batch.
      dead_code_threshold: revive codes whose usage EMA falls below this, where usage is the code's
        share of the batch times V (1.0 = a uniform share; starts at 1.0). 0 disables revival.
      dtype: computation dtype of the lookup (distances); outputs are float32.
      kmeans_iterations: Lloyd iterations of the k-means initialisation.
      dead_code_buffer_size: rows in the ring buffer of recent inputs that revived codes are drawn
        from (default `max(2 V, 256)`).
      ema_epsilon: Laplace smoothing of the EMA cluster sizes.
    """

    def __init__(self, codebook_size: int, dim: int, *, rngs: nnx.Rngs, commitment_cost: float = 0.25,
                 codebook_cost: float = 1.0, entropy_cost: float = 0.0, entropy_temperature: float = 0.01,
                 use_ema: bool = False, ema_decay: float = 0.99, l2_normalize: bool = False,
                 lookup_dim: int | None = None, kmeans_init: bool = False, dead_code_threshold: float = 0.0,
                 dtype=jnp.float32, kmeans_iterations: int = 10, dead_code_buffer_size: int | None = None,
                 ema_epsilon: float = 1e-5):
        self.codebook_size = check_int("codebook_size", codebook_size, 2)
        self.code_digits = ()  # learned codes: no digit structure (TransformerConfig.code_digits)
        self.num_levels = 1
        self.dim = check_int("dim", dim, 1)
        if lookup_dim is not None:
            lookup_dim = check_int("lookup_dim", lookup_dim, 1)
        if entropy_temperature <= 0:
            raise ValueError(f"entropy_temperature must be > 0, got {entropy_temperature}")
        for name, value in (("commitment_cost", commitment_cost), ("codebook_cost", codebook_cost),
                            ("entropy_cost", entropy_cost), ("dead_code_threshold", dead_code_threshold)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.commitment_cost = float(commitment_cost)
        self.codebook_cost = float(codebook_cost)
        self.entropy_cost = float(entropy_cost)
        self.entropy_temperature = float(entropy_temperature)
        self.use_ema = bool(use_ema)
        self.ema_decay = check_unit_interval("ema_decay", ema_decay, closed_right=False)
        self.ema_epsilon = float(ema_epsilon)
        self.l2_normalize = bool(l2_normalize)
        self.lookup_dim = lookup_dim
        self.kmeans_init = bool(kmeans_init)
        self.kmeans_iterations = check_int("kmeans_iterations", kmeans_iterations, 1)
        self.dead_code_threshold = float(dead_code_threshold)
        self.dtype = dtype

        code_dim = self.dim if lookup_dim is None else lookup_dim
        self.code_dim = code_dim
        if lookup_dim is not None:
            self.in_proj = nnx.Linear(self.dim, lookup_dim, dtype=dtype, rngs=rngs)
            self.out_proj = nnx.Linear(lookup_dim, self.dim, dtype=dtype, rngs=rngs)
        else:
            self.in_proj = self.out_proj = None

        # The official initialiser (flax variance_scaling(1, "fan_in", "uniform") on [V, D]).
        init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
        codebook_vd = init(rngs.params(), (self.codebook_size, code_dim), jnp.float32)
        if self.use_ema:
            self.codebook = CodebookStat(codebook_vd)
            # Starting the cluster sizes at 1 makes `embed_sum / cluster_size` equal the initial codebook.
            self.cluster_size = CodebookStat(jnp.ones((self.codebook_size,), jnp.float32))
            self.embed_sum = CodebookStat(codebook_vd)
        else:
            self.codebook = nnx.Param(codebook_vd)

        if self.kmeans_init:
            self.initialized = CodebookStat(jnp.zeros((), jnp.bool_))
        if self.dead_code_threshold > 0:
            if dead_code_buffer_size is None:
                dead_code_buffer_size = max(2 * self.codebook_size, 256)
            buffer_size = check_int("dead_code_buffer_size", dead_code_buffer_size, 1)
            self.code_usage = CodebookStat(jnp.ones((self.codebook_size,), jnp.float32))
            self.buffer = CodebookStat(jnp.zeros((buffer_size, code_dim), jnp.float32))
            self.buffer_count = CodebookStat(jnp.zeros((), jnp.int32))
            self.buffer_position = CodebookStat(jnp.zeros((), jnp.int32))
        if self.kmeans_init or self.dead_code_threshold > 0:
            # A plain integer seed and a call counter (not a key) keep the state checkpoint-friendly.
            self.seed = CodebookStat(jax.random.randint(rngs.params(), (), 0, jnp.iinfo(jnp.int32).max))
            self.train_calls = CodebookStat(jnp.zeros((), jnp.int32))

    # ------------------------------------------------------------------ lookup space
    def _to_lookup(self, z: jax.Array) -> jax.Array:
        if z.shape[-1] != self.dim:
            raise ValueError(f"z must end in dim={self.dim}, got shape {z.shape}")
        x = z.astype(self.dtype)
        if self.in_proj is not None:
            x = self.in_proj(x)
        if self.l2_normalize:
            x = l2_normalize(x)
        return x

    def _from_lookup(self, x: jax.Array) -> jax.Array:
        if self.out_proj is not None:
            x = self.out_proj(x.astype(self.dtype))
        return x.astype(jnp.float32)

    def code_vectors(self) -> jax.Array:
        """The codes as used by the lookup: `[V, D_lookup]` in the compute dtype (unit rows if l2)."""
        codebook = self.codebook[...].astype(self.dtype)
        return l2_normalize(codebook) if self.l2_normalize else codebook

    def distances(self, z: jax.Array) -> jax.Array:
        """`z: [..., D]` → squared distances to every code, `[..., V]` in the compute dtype."""
        x = self._to_lookup(z)
        dist = squared_euclidean_distance(x.reshape(-1, self.code_dim), self.code_vectors())
        return dist.reshape(x.shape[:-1] + (self.codebook_size,))

    def encode(self, z: jax.Array) -> jax.Array:
        """`z: float [..., D]` → int32 indices `[...]` of the nearest codes."""
        return jnp.argmin(self.distances(z), axis=-1).astype(jnp.int32)

    def decode(self, indices: jax.Array) -> jax.Array:
        """int indices `[...]` in [0, V) → float32 code vectors `[..., D]` (projected back if `lookup_dim`)."""
        return self._from_lookup(jnp.take(self.code_vectors(), indices, axis=0))

    # ------------------------------------------------------------------ forward pass
    def __call__(self, z: jax.Array, *, train: bool = False, rng: jax.Array | None = None) -> QuantizerOutput:
        """Quantize `z: float [..., D]`.

        In training (`train=True`) the output is straight-through, and EMA statistics, k-means
        initialisation and dead-code revival update the module's state (use `nnx.jit`). `rng`
        optionally replaces the module's own seed for the k-means / revival sampling.

        Returns `QuantizerOutput(quantized float32 [..., D], indices int32 [...],
        losses {"commitment", "codebook" (without EMA), "entropy" (if entropy_cost > 0)},
        metrics {"perplexity", "usage"})`. Losses are computed in the lookup space.
        """
        x = self._to_lookup(z)
        lead_shape = x.shape[:-1]
        x_nd = x.reshape(-1, self.code_dim)
        sampling = train and (self.kmeans_init or self.dead_code_threshold > 0)
        if sampling:
            if rng is None:
                rng = jax.random.fold_in(jax.random.key(self.seed[...]), self.train_calls[...])
            kmeans_key, buffer_key, revive_key = jax.random.split(rng, 3)
            if self.kmeans_init:
                self._kmeans_initialize(jax.lax.stop_gradient(x_nd), kmeans_key)

        codebook_vd = self.code_vectors()
        distances_nv = squared_euclidean_distance(x_nd, codebook_vd)
        indices_n = jnp.argmin(distances_nv, axis=-1).astype(jnp.int32)
        q_nd = jnp.take(codebook_vd, indices_n, axis=0)

        x32, q32 = x_nd.astype(jnp.float32), q_nd.astype(jnp.float32)
        losses = {"commitment": self.commitment_cost * jnp.mean((jax.lax.stop_gradient(q32) - x32) ** 2)}
        if not self.use_ema:
            losses["codebook"] = self.codebook_cost * jnp.mean((q32 - jax.lax.stop_gradient(x32)) ** 2)
        if self.entropy_cost > 0:
            sample_entropy, codebook_entropy = entropy_terms(-distances_nv / self.entropy_temperature)
            losses["entropy"] = self.entropy_cost * (sample_entropy - codebook_entropy)
        metrics = code_usage_metrics(indices_n, self.codebook_size)

        if train:
            x_sg = jax.lax.stop_gradient(x32)
            if self.use_ema:
                self._ema_update(x_sg, indices_n)
            if self.dead_code_threshold > 0:
                self._push_buffer(x_sg, buffer_key)
                self._revive_dead_codes(indices_n, revive_key)
            if sampling:
                self.train_calls.set_value(self.train_calls[...] + 1)

        q = q_nd.reshape(lead_shape + (self.code_dim,))
        if train:
            q = straight_through(x, q)
        return QuantizerOutput(self._from_lookup(q), indices_n.reshape(lead_shape), losses, metrics)

    # ------------------------------------------------------------------ state updates (training only)
    def _kmeans_initialize(self, x_nd: jax.Array, key: jax.Array) -> None:
        done = self.initialized[...]
        new_codebook = jax.lax.cond(
            done,
            lambda: self.codebook[...],
            lambda: kmeans(x_nd, self.codebook_size, key, iterations=self.kmeans_iterations,
                           spherical=self.l2_normalize).astype(self.codebook[...].dtype),
        )
        self.codebook.set_value(new_codebook)
        if self.use_ema:
            self.cluster_size.set_value(jnp.where(done, self.cluster_size[...], 1.0))
            self.embed_sum.set_value(jnp.where(done, self.embed_sum[...], new_codebook))
        self.initialized.set_value(jnp.ones((), jnp.bool_))

    def _ema_update(self, x_nd: jax.Array, indices_n: jax.Array) -> None:
        decay, v = self.ema_decay, self.codebook_size
        counts_v = code_histogram(indices_n, v)
        sums_vd = jax.ops.segment_sum(x_nd, indices_n, num_segments=v)
        cluster_size = decay * self.cluster_size[...] + (1 - decay) * counts_v
        embed_sum = decay * self.embed_sum[...] + (1 - decay) * sums_vd
        total = jnp.sum(cluster_size)
        smoothed = (cluster_size + self.ema_epsilon) / (total + v * self.ema_epsilon) * total
        self.cluster_size.set_value(cluster_size)
        self.embed_sum.set_value(embed_sum)
        self.codebook.set_value(embed_sum / smoothed[:, None])

    def _push_buffer(self, x_nd: jax.Array, key: jax.Array) -> None:
        n, size = x_nd.shape[0], self.buffer[...].shape[0]
        rows = x_nd
        if n > size:  # keep a random subset of this batch
            rows = x_nd[jax.random.choice(key, n, (size,), replace=False)]
        m = rows.shape[0]
        start = self.buffer_position[...]
        positions = (start + jnp.arange(m, dtype=jnp.int32)) % size
        self.buffer.set_value(self.buffer[...].at[positions].set(rows))
        self.buffer_position.set_value((start + m) % size)
        self.buffer_count.set_value(jnp.minimum(self.buffer_count[...] + m, size))

    def _revive_dead_codes(self, indices_n: jax.Array, key: jax.Array) -> None:
        v, n = self.codebook_size, indices_n.shape[0]
        share_v = code_histogram(indices_n, v) * (v / n)
        usage_v = self.ema_decay * self.code_usage[...] + (1 - self.ema_decay) * share_v
        dead_v = usage_v < self.dead_code_threshold
        pick_v = jax.random.randint(key, (v,), 0, jnp.maximum(self.buffer_count[...], 1))
        candidates_vd = self.buffer[...][pick_v].astype(self.codebook[...].dtype)
        self.codebook.set_value(jnp.where(dead_v[:, None], candidates_vd, self.codebook[...]))
        if self.use_ema:
            self.cluster_size.set_value(jnp.where(dead_v, 1.0, self.cluster_size[...]))
            self.embed_sum.set_value(jnp.where(dead_v[:, None], candidates_vd, self.embed_sum[...]))
        self.code_usage.set_value(jnp.where(dead_v, 1.0, usage_v))
