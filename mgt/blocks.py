"""Transformer blocks, chosen by `TransformerConfig.block_style`.

- `maskgit`: the official MaskGIT / BERT block — post-LayerNorm (eps 1e-12), GELU(tanh) MLP, biases
  everywhere, dropout after attention and after the MLP. With official weights it reproduces the
  official activations. Optional cross-attention sub-block (post-LN) for an external context.
- `modern`: pre-RMSNorm blocks with SwiGLU, optional QK-norm, optional cross-attention, and adaptive
  LayerNorm (DiT-style shift / scale / gate from a condition vector, zero-initialised) when the
  model is conditioned through adaLN.

Blocks take `(x [B, N, D], key, cond [B, D] | None, context [B, S, C] | None, context_mask [B, S] | None)`
and are stacked and scanned by `MaskedTransformer`. For autoregressive models (`mgt.ar`) they also take
`causal=True` (causal self-attention) or a self-attention KV `cache` with its `cache_index` (see
`MultiHeadAttention`), in which case they return `(x, cache)`. `self_mask` bool `[B, N]` limits the keys
of self-attention (the prefix conditioning's padding positions are False).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mgt.layers import (
    ZEROS,
    GeluMlp,
    LayerNorm,
    MultiHeadAttention,
    RMSNorm,
    SwiGluMlp,
    dropout,
    make_param,
    relative_table_rows,
)


class MaskgitBlock(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        d, eps, dtype = cfg.hidden_dim, cfg.norm_epsilon, cfg.compute_dtype
        self.cfg = cfg
        self.self_attention = MultiHeadAttention(d, cfg.num_heads, dtype=dtype, implementation=cfg.attention_impl,
                                                 rngs=rngs)
        self.attention_output_ln = LayerNorm(d, epsilon=eps, rngs=rngs)
        if cfg.conditioning == "cross_attention":
            self.cross_attention = MultiHeadAttention(d, cfg.num_heads, kv_dim=cfg.context_dim, dtype=dtype,
                                                      implementation=cfg.attention_impl, rngs=rngs)
            self.cross_attention_ln = LayerNorm(d, epsilon=eps, rngs=rngs)
        else:
            self.cross_attention = self.cross_attention_ln = None
        self.mlp = GeluMlp(d, cfg.mlp_dim, dtype=dtype, rngs=rngs)
        self.layer_output_ln = LayerNorm(d, epsilon=eps, rngs=rngs)

    def __call__(self, x, key, cond, context, context_mask, deterministic: bool, *, causal=False, cache=None,
                 cache_index=None, self_mask=None):
        cfg = self.cfg
        k_attn, k_att_out, k_cross, k_mlp = jax.random.split(key, 4)
        h = self.self_attention(x, None, self_mask, dropout_rate=cfg.attention_dropout_rate, key=k_attn,
                                deterministic=deterministic, causal=causal, cache=cache, cache_index=cache_index)
        if cache is not None:
            h, cache = h
        x = self.attention_output_ln(x + dropout(h, cfg.dropout_rate, k_att_out, deterministic))
        if self.cross_attention is not None:
            h = self.cross_attention(x, context, context_mask, dropout_rate=cfg.attention_dropout_rate, key=k_cross,
                                     deterministic=deterministic)
            x = self.cross_attention_ln(x + dropout(h, cfg.dropout_rate, k_cross, deterministic))
        h = self.mlp(x)
        x = self.layer_output_ln(x + dropout(h, cfg.dropout_rate, k_mlp, deterministic))
        return x if cache is None else (x, cache)


class ModernBlock(nnx.Module):
    def __init__(self, cfg, *, rngs: nnx.Rngs):
        d, eps, dtype = cfg.hidden_dim, cfg.norm_epsilon, cfg.compute_dtype
        self.cfg = cfg
        self.attention_norm = RMSNorm(d, epsilon=eps, rngs=rngs)
        self.self_attention = MultiHeadAttention(d, cfg.num_heads, use_bias=False, qk_norm=cfg.qk_norm,
                                                 norm_epsilon=eps, dtype=dtype, implementation=cfg.attention_impl,
                                                 rngs=rngs)
        if cfg.conditioning == "cross_attention":
            self.cross_norm = RMSNorm(d, epsilon=eps, rngs=rngs)
            self.cross_attention = MultiHeadAttention(d, cfg.num_heads, kv_dim=cfg.context_dim, use_bias=False,
                                                      qk_norm=cfg.qk_norm, norm_epsilon=eps, dtype=dtype,
                                                      implementation=cfg.attention_impl, rngs=rngs)
        else:
            self.cross_norm = self.cross_attention = None
        # zero: the block starts as one without the bias
        self.relative_bias = (make_param(rngs, ZEROS, (cfg.num_heads, relative_table_rows(cfg.grid)), ("heads", None))
                              if cfg.relative_bias else None)
        self.mlp_norm = RMSNorm(d, epsilon=eps, rngs=rngs)
        self.mlp = SwiGluMlp(d, cfg.mlp_dim, dtype=dtype, rngs=rngs)
        # adaLN-zero: the block starts as the identity when conditioned through adaLN.
        self.modulation = (make_param(rngs, ZEROS, (d, 6, d), ("embed", None, "mlp"))
                           if cfg.conditioning in ("adaln", "pooled_adaln") else None)

    def __call__(self, x, key, cond, context, context_mask, deterministic: bool, *, causal=False, cache=None,
                 cache_index=None, self_mask=None, grid_positions=None, relative_index=None):
        """relative_index: int `[L, L]` (`mgt.layers.relative_offset_index`): each score's row of the
        relative-bias table (with `cfg.relative_bias`)."""
        cfg = self.cfg
        k_attn, k_res1, k_cross, k_mlp = jax.random.split(key, 4)
        if self.modulation is not None:
            mod = jnp.einsum("bd,dke->bke", jax.nn.silu(cond).astype(jnp.float32), self.modulation[...])
            shift1, scale1, gate1, shift2, scale2, gate2 = [mod[:, i, None, :] for i in range(6)]
        else:
            shift1 = scale1 = shift2 = scale2 = 0.0
            gate1 = gate2 = 1.0
        h = self.attention_norm(x) * (1 + scale1) + shift1
        # [H, L, L]: each score's bias, gathered from the table by the pair's grid offset
        bias = None
        if self.relative_bias is not None and relative_index is not None:
            bias = self.relative_bias[...][:, relative_index]
        h = self.self_attention(h.astype(x.dtype), None, self_mask, dropout_rate=cfg.attention_dropout_rate,
                                key=k_attn, deterministic=deterministic, causal=causal, cache=cache,
                                cache_index=cache_index, grid_positions=grid_positions, bias=bias)
        if cache is not None:
            h, cache = h
        x = x + (gate1 * dropout(h, cfg.dropout_rate, k_res1, deterministic)).astype(x.dtype)
        if self.cross_attention is not None:
            h = self.cross_attention(self.cross_norm(x), context, context_mask, dropout_rate=cfg.attention_dropout_rate,
                                     key=k_cross, deterministic=deterministic)
            x = x + dropout(h, cfg.dropout_rate, k_cross, deterministic)
        h = self.mlp_norm(x) * (1 + scale2) + shift2
        h = self.mlp(h.astype(x.dtype))
        x = x + (gate2 * dropout(h, cfg.dropout_rate, k_mlp, deterministic)).astype(x.dtype)
        return x if cache is None else (x, cache)


BLOCK_STYLES = {"maskgit": MaskgitBlock, "modern": ModernBlock}
