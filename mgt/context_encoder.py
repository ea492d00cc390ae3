"""`ContextEncoder`: a small bidirectional Transformer that embeds context token ids, trained with the
masked transformer that attends to its output (the "small trainable text encoder" of a text-to-image
model: the ids come from `mgt.text.vocabulary`, but the engine only sees integers).

ids int32 `[B, S]` (0 = padding by convention; `mask` bool `[B, S]` says which are real) →
float32 `[B, S, width]`: token embeddings plus learned position embeddings (`positions="learned"`) or
rotary positions in every self-attention (`"rope"`: scores depend on relative positions only; on
the captioned shapes it did not change what the model learns, README), `num_layers` pre-RMSNorm
blocks (self-attention over the real positions, SwiGLU MLP), a final RMSNorm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mgt.layers import TRUNC_NORMAL, MultiHeadAttention, RMSNorm, SwiGluMlp, dropout, make_param

POSITION_ENCODINGS = ("learned", "rope")


class ContextLayer(nnx.Module):
    def __init__(self, width: int, num_heads: int, *, epsilon: float, dtype, rope: bool = False, rngs: nnx.Rngs):
        self.attention_norm = RMSNorm(width, epsilon=epsilon, names=("context",), rngs=rngs)
        self.attention = MultiHeadAttention(width, num_heads, use_bias=False, dtype=dtype, rope=rope, rngs=rngs)
        self.mlp_norm = RMSNorm(width, epsilon=epsilon, names=("context",), rngs=rngs)
        self.mlp = SwiGluMlp(width, 4 * width, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask, key, rate: float, deterministic: bool):
        k_attn, k_mlp = jax.random.split(key)
        x = x + dropout(self.attention(self.attention_norm(x), None, mask), rate, k_attn, deterministic)
        return x + dropout(self.mlp(self.mlp_norm(x)), rate, k_mlp, deterministic)


class ContextEncoder(nnx.Module):
    """See the module docstring. `vocab_size` ids, at most `max_length` positions, `width` wide;
    `positions`: "learned" or "rope"."""

    def __init__(self, vocab_size: int, max_length: int, width: int, *, num_layers: int = 2, num_heads: int = 4,
                 epsilon: float = 1e-6, dtype=jnp.float32, positions: str = "learned", rngs: nnx.Rngs):
        if positions not in POSITION_ENCODINGS:
            raise ValueError(f"ContextEncoder: positions must be one of {POSITION_ENCODINGS}, got {positions!r}")
        if width % num_heads:
            num_heads = next(h for h in range(min(num_heads, width), 0, -1) if width % h == 0)
        if positions == "rope" and (width // num_heads) % 2:
            num_heads = next(h for h in range(num_heads, 0, -1) if width % h == 0 and (width // h) % 2 == 0)
        self.token_embeddings = make_param(rngs, TRUNC_NORMAL, (vocab_size, width), ("vocab", "context"))
        self.max_length = int(max_length)
        if positions == "learned":
            self.position_embeddings = make_param(rngs, TRUNC_NORMAL, (max_length, width), ("pos", "context"))
        else:
            self.position_embeddings = None
        self.layers = nnx.List([ContextLayer(width, num_heads, epsilon=epsilon, dtype=dtype, rope=positions == "rope",
                                             rngs=rngs) for _ in range(num_layers)])
        self.final_norm = RMSNorm(width, epsilon=epsilon, names=("context",), rngs=rngs)

    def __call__(self, ids, mask=None, *, deterministic: bool = True, dropout_rng=None, dropout_rate: float = 0.0):
        """ids int32 `[B, S]`, mask bool `[B, S]` (default: ids != 0) → float32 `[B, S, width]`."""
        ids = jnp.asarray(ids, jnp.int32)
        mask = (ids != 0) if mask is None else jnp.asarray(mask, bool)
        # a row without any real position (an empty text) attends to its first position rather than to nothing
        mask = mask | ((jnp.arange(ids.shape[1]) == 0)[None] & ~mask.any(1, keepdims=True))
        if ids.shape[1] > self.max_length:
            raise ValueError(f"ContextEncoder: ids hold {ids.shape[1]} positions; at most max_length={self.max_length}")
        x = jnp.take(self.token_embeddings[...], ids, axis=0)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings[: ids.shape[1]]
        keys = jax.random.split(dropout_rng if dropout_rng is not None else jax.random.key(0), len(self.layers))
        for layer, key in zip(self.layers, keys):
            x = layer(x, mask, key, dropout_rate, deterministic)
        return self.final_norm(x).astype(jnp.float32)
