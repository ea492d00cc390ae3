"""The autoregressive baseline: the same Transformer run causally in raster order, with a KV cache.

MaskGIT is measured against an autoregressive transformer over the same token grid (the VQGAN
transformer it builds on). `ARTransformer` reuses the blocks of `mgt.blocks` and the layers of
`mgt.layers` — same `TransformerConfig`, same parameter names as `MaskedTransformer` — with causal
self-attention:

    sequence input   [prefix, t_0, t_1, ..., t_{N-2}]      (teacher forcing: input j is token j-1)
    output j         logits of t_j over the V codes         (N = prod(grid) cells, raster order)

The prefix is the class token `V + c` with class_token conditioning (the official vocabulary layout;
the null class with `drop_condition`), and otherwise a BOS token, which is the mask id — a row of the
vocabulary a causal model never needs as a mask. Input j carries the position embedding of cell j,
the cell it predicts, so both "learned" and "factorized" position embeddings keep their meaning.
"adaln" and "cross_attention" conditioning work as in `MaskedTransformer` (with a BOS prefix).

Generation runs one cell per step with a fixed-shape KV cache `[layers, B, N, H, Dh]`
(`init_cache`, `decode_step`), and `ar_sample` runs the whole raster loop as one jitted `lax.scan`
whose parameters are jit arguments. `ar_loss` is the training objective (next-token cross-entropy).
Only grids with one code level (K = 1) are supported; grids may have any rank.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from mgt.decoding import _filter_logits, example_keys
from mgt.layers import dropout
from mgt.masking import masked_cross_entropy
from mgt.profiling import scoped
from mgt.transformer import MaskedTransformer, TransformerConfig

__all__ = ["ARTransformer", "KVCache", "ar_loss", "ar_sample", "ar_decode_loop"]


class KVCache(NamedTuple):
    """Self-attention keys and values of every layer: each `[layers, B, N, H, Dh]` (by default in the
    compute dtype). Row n of layer l holds the key / value of sequence position n once it is decoded."""

    keys: jax.Array
    values: jax.Array


class ARTransformer(MaskedTransformer):
    """A causal Transformer over a raster-ordered token grid; see the module docstring.

    Args:
      config: a `TransformerConfig` with `num_levels == 1` (any grid rank, any block style and
        conditioning). `dropout_rate` / `attention_dropout_rate` apply when called with
        `deterministic=False`.
      rngs: parameter initialisation keys.

    The parameters and modules are `MaskedTransformer`'s; attention is causal and the prefix (class
    or BOS token) takes the place of t_{-1}, so the sequence has one position per cell.
    """

    causal_attention = True
    prefix_positions = False

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, TransformerConfig):
            raise ValueError(f"config must be a TransformerConfig, got {type(config).__name__}")
        if config.num_levels != 1:
            raise ValueError(f"ARTransformer supports num_levels=1 only (one code per cell), got "
                             f"num_levels={config.num_levels}; multi-level autoregression is not implemented")
        if config.tasks:
            raise ValueError(f"ARTransformer serves one task; got tasks={config.tasks} (COMMIT multi-task "
                             "conditioning is for masked models)")
        if config.conditioning in ("prefix", "pooled_adaln") or config.context_vocab_size:
            raise ValueError(f"ARTransformer supports the conditionings none, class_token, adaln and cross_attention "
                             f"over a given context; got conditioning={config.conditioning!r}, "
                             f"context_vocab_size={config.context_vocab_size}")
        if config.rope:
            raise ValueError("ARTransformer: rope=True is for masked models (its cached decoding has no grid RoPE)")
        if config.relative_bias:
            raise ValueError("ARTransformer: relative_bias=True is for masked models (its cached decoding has no "
                             "relative bias)")
        super().__init__(config, rngs=rngs)

    # ------------------------------------------------------------------------------------------
    @property
    def seq_len(self) -> int:
        """N = prod(grid): the causal sequence has one position per cell (the prefix replaces t_{-1})."""
        return self.spec.num_cells

    @property
    def bos_id(self) -> int:
        """The start token of models without a class prefix: the mask id."""
        return self.spec.mask_id

    @scoped("transformer")
    def __call__(self, tokens, *, labels=None, context=None, context_mask=None, drop_condition=None,
                 deterministic: bool = True, dropout_rng=None):
        """Teacher-forced next-token logits.

        Args:
          tokens: int32 `[B, *grid]` codes in [0, V).
          labels: int32 `[B]` class ids (class_token / adaln conditioning).
          context / context_mask: float `[B, S, context_dim]` / bool `[B, S]` (cross_attention).
          drop_condition: bool `[B]` — use the null condition for these examples.
          deterministic: False enables dropout (needs `dropout_rng`).
        Returns:
          float32 `[B, *grid, V]`: entry at cell j is the distribution of t_j given the prefix and
          t_0 .. t_{j-1} (raster order).
        """
        cfg = self.config
        if tuple(tokens.shape[1:]) != cfg.grid:
            raise ValueError(f"tokens has shape {tuple(tokens.shape)}; expected [batch, *{cfg.grid}]")
        b, n = tokens.shape[0], self.seq_len
        flat = tokens.reshape(b, n).astype(jnp.int32)
        prefix = self._prefix_ids(b, labels, drop_condition)
        inputs = jnp.concatenate([prefix[:, None], flat[:, :-1]], axis=1)  # [B, N]
        keys = jax.random.split(dropout_rng if dropout_rng is not None else jax.random.key(0), cfg.num_layers + 1)
        x = self._embed(inputs, self._positions())
        if cfg.block_style == "maskgit" and not deterministic:
            x = dropout(x, cfg.dropout_rate, keys[-1], deterministic)
        cond = self._cond_vector(b, labels, drop_condition)
        context, context_mask = self._context(b, context, context_mask, drop_condition)
        x = self._run_blocks(x.astype(cfg.compute_dtype), keys[:-1], cond, context, context_mask, deterministic)
        return self._head(x).reshape(tokens.shape + (cfg.codebook_size,))

    # ---- incremental decoding --------------------------------------------------------------------
    def init_cache(self, batch_size: int, dtype=None) -> KVCache:
        """An empty KV cache: zeros `[layers, B, N, H, Dh]` (dtype: the compute dtype by default)."""
        cfg = self.config
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size}; expected >= 1")
        dtype = cfg.compute_dtype if dtype is None else jnp.dtype(dtype)
        shape = (cfg.num_layers, int(batch_size), self.seq_len, cfg.num_heads, cfg.hidden_dim // cfg.num_heads)
        return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    @scoped("transformer")
    def decode_step(self, token, position, cache: KVCache, *, labels=None, context=None, context_mask=None,
                    drop_condition=None):
        """One step of raster decoding with the KV cache (inference: no dropout).

        Args:
          token: int32 `[B]`, the code at cell `position - 1` (ignored at position 0, where the
            class / BOS prefix is the input).
          position: int32 scalar in [0, N) (may be traced): the cell whose logits are computed.
          cache: a `KVCache` holding positions < `position` (from `init_cache` and earlier steps).
          labels / context / context_mask / drop_condition: as in `__call__`.
        Returns:
          `(logits float32 [B, V] of the code at cell `position`, updated cache)`.
        """
        cfg = self.config
        b = token.shape[0]
        position = jnp.asarray(position, jnp.int32)
        prefix = self._prefix_ids(b, labels, drop_condition)
        inputs = jnp.where(position == 0, prefix, token.astype(jnp.int32))[:, None]  # [B, 1]
        x = self._embed(inputs, self._position_row(position)[None])
        cond = self._cond_vector(b, labels, drop_condition)
        context, context_mask = self._context(b, context, context_mask, drop_condition)
        keys = jax.random.split(jax.random.key(0), cfg.num_layers)  # unused: deterministic

        # The stacked cache is a scan carry and only the new row goes back into it, so XLA updates
        # it in place: stacking each layer's updated cache as a scan output would copy the whole
        # cache at every step (several times the attention's own reads of it).
        @nnx.scan(in_axes=(0, nnx.Carry, 0, 0, None, None, None, None), out_axes=nnx.Carry)
        def run(block, carry, key, layer, cond, context, context_mask, index):
            x, all_keys, all_values = carry
            layer_cache = (jax.lax.dynamic_index_in_dim(all_keys, layer, keepdims=False),
                           jax.lax.dynamic_index_in_dim(all_values, layer, keepdims=False))
            x, (layer_keys, layer_values) = block(x, key, cond, context, context_mask, True, cache=layer_cache,
                                                  cache_index=index)
            zero = jnp.zeros((), jnp.int32)
            start = (layer, zero, index, zero, zero)
            row = lambda c: jax.lax.dynamic_slice_in_dim(c, index, 1, axis=1)[None]  # [1, B, 1, H, Dh]
            all_keys = jax.lax.dynamic_update_slice(all_keys, row(layer_keys), start)
            all_values = jax.lax.dynamic_update_slice(all_values, row(layer_values), start)
            return x, all_keys, all_values

        carry = (x.astype(cfg.compute_dtype), cache.keys, cache.values)
        layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
        x, new_keys, new_values = run(self.blocks, carry, keys, layers, cond, context, context_mask, position)
        return self._head(x)[:, 0], KVCache(new_keys, new_values)

    # ---- host-side validation --------------------------------------------------------------------
    def check_inputs(self, tokens=None, labels=None, *, context=None, context_mask=None,
                     batch_size: int | None = None, allow_mask: bool = False):
        """Validate concrete tokens and the condition before compiling (AR inputs hold no mask ids)."""
        super().check_inputs(tokens, labels, context=context, context_mask=context_mask, batch_size=batch_size,
                             allow_mask=False)

    # ---- pieces ----------------------------------------------------------------------------------
    @scoped("embed")
    def _embed(self, inputs, positions):
        """inputs int32 `[B, T]`, positions float `[T, D]` → float32 `[B, T, D]`."""
        x = jnp.take(self.token_table()[0], inputs, axis=0) + positions[None].astype(jnp.float32)
        return self.embeddings_ln(x) if self.embeddings_ln is not None else x

    def _position_row(self, position):
        """`[D]`: the position embedding of cell `position` (int32 scalar, may be traced)."""
        cfg = self.config
        if cfg.position_embedding == "learned":
            return jax.lax.dynamic_index_in_dim(self.position_embeddings[...], position, keepdims=False)
        coords = jnp.unravel_index(position, cfg.grid)
        return sum(jax.lax.dynamic_index_in_dim(table[...], c, keepdims=False)
                   for table, c in zip(self.axis_embeddings, coords))

    def _prefix_ids(self, b, labels, drop_condition):
        """int32 `[B]`: the class token (class_token conditioning) or the BOS id."""
        if self.config.conditioning != "class_token":
            return jnp.full((b,), self.bos_id, jnp.int32)
        return self._class_ids(b, labels, drop_condition)

    def _cond_vector(self, b, labels, drop_condition):
        if self.config.conditioning != "adaln":
            return None
        return jnp.take(self.class_embeddings[...], self._adaln_ids(b, labels, drop_condition), axis=0)

    def _head(self, x, vocab=None):
        """`[B, T, D]` → float32 logits `[B, T, V]` over the codes only."""
        return super()._head(x, self.config.codebook_size)[:, :, 0, : self.config.codebook_size]


# ----------------------------------------------------------------------------------------------
# Training objective
# ----------------------------------------------------------------------------------------------
def ar_loss(model: ARTransformer, tokens, labels=None, *, context=None, context_mask=None, drop_condition=None,
            deterministic: bool = True, dropout_rng=None, label_smoothing: float = 0.0):
    """Next-token cross-entropy of `model` on `tokens` (the objective `config.model.objective = "ar"`).

    Args:
      model: an `ARTransformer`.
      tokens: int32 `[B, *grid]` codes in [0, V).
      labels: int32 `[B]` for class-conditional models.
      context / context_mask / drop_condition / deterministic / dropout_rng: as `ARTransformer.__call__`.
      label_smoothing: ε of `mgt.masking.masked_cross_entropy`.
    Returns:
      float32 scalar: the mean over all B·N cells (nats per token).
    """
    logits = model(tokens, labels=labels, context=context, context_mask=context_mask,
                   drop_condition=drop_condition, deterministic=deterministic, dropout_rng=dropout_rng)
    return masked_cross_entropy(logits, tokens, label_smoothing=label_smoothing)


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _SampleOptions:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    cache_dtype: str | None = None


def ar_sample(model: ARTransformer, rng, *, labels=None, batch_size: int | None = None, context=None,
              context_mask=None, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
              cache_dtype=None):
    """Generate token grids cell by cell in raster order with the KV cache.

    The N steps run as one compiled `lax.scan` (one compile per model structure, batch size and
    options); the parameters are jit arguments, so new weights reuse the compiled code.

    Args:
      model: an `ARTransformer`.
      rng: one PRNG key or B keys (example b's output depends only on its own key).
      labels: int32 `[B]` class ids for class-conditional models.
      batch_size: B when neither `labels` nor `context` gives it.
      context / context_mask: `[B, S, C]` / bool `[B, S]` for cross-attention models.
      temperature: > 0; logits are divided by it.
      top_k / top_p: sample only from the k most likely codes / the smallest set of mass >= p.
      cache_dtype: dtype of the KV cache (default: the model's compute dtype).
    Returns:
      int32 tokens `[B, *grid]` in [0, V).
    """
    if not isinstance(model, ARTransformer):
        raise ValueError(f"model must be an ARTransformer, got {type(model).__name__}")
    if batch_size is None:
        if labels is not None:
            batch_size = len(labels)
        elif context is not None:
            batch_size = context.shape[0]
        else:
            raise ValueError("ar_sample needs batch_size, labels or context to know the batch size")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected >= 1")
    model.check_inputs(labels=labels, context=context, context_mask=context_mask, batch_size=batch_size)
    if not temperature > 0:
        raise ValueError(f"temperature={temperature}; expected > 0")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k={top_k}; expected an integer >= 1 or None")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p}; expected 0 < top_p <= 1 or None")
    opts = _SampleOptions(float(temperature), None if top_k is None else int(top_k),
                          None if top_p is None else float(top_p),
                          None if cache_dtype is None else jnp.dtype(cache_dtype).name)
    keys = example_keys(rng, batch_size)
    labels = None if labels is None else jnp.asarray(labels, jnp.int32)
    graphdef, state = nnx.split(model)
    return _ar_sample_jit(graphdef, state, keys, labels, context, context_mask, opts)


@functools.partial(jax.jit, static_argnums=(0, 6))
def _ar_sample_jit(graphdef, state, keys, labels, context, context_mask, opts):
    model = nnx.merge(graphdef, state, copy=True)
    return ar_decode_loop(model, keys, labels=labels, context=context, context_mask=context_mask,
                          temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p,
                          cache_dtype=opts.cache_dtype)


def ar_decode_loop(model: ARTransformer, keys, *, labels=None, context=None, context_mask=None,
                   temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                   cache_dtype=None):
    """The raster sampling loop, traceable inside a caller's jit (no validation: see `ar_sample`).

    keys: `[B]` PRNG keys. Returns int32 `[B, *grid]`.
    """
    b = keys.shape[0]
    cfg = model.config
    graphdef, state = nnx.split(model)
    cache = model.init_cache(b, cache_dtype)

    def step(carry, position):
        prev, cache = carry
        # NNX modules must not cross trace levels: re-merge inside the scan body.
        m = nnx.merge(graphdef, state, copy=True)
        logits, cache = m.decode_step(prev, position, cache, labels=labels, context=context,
                                      context_mask=context_mask)
        filtered = _filter_logits(logits / temperature, top_k, top_p)
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, position))(keys)
        token = jax.vmap(jax.random.categorical)(step_keys, filtered).astype(jnp.int32)
        return (token, cache), token

    start = (jnp.zeros((b,), jnp.int32), cache)
    _, tokens_nb = jax.lax.scan(step, start, jnp.arange(model.seq_len, dtype=jnp.int32))
    return tokens_nb.T.reshape((b,) + cfg.grid)
