"""The T5 encoder (T5 v1.1, mT5, Flan-T5) in JAX: HF's `T5EncoderModel` at inference.

    x = shared[ids]                      no position embedding, no scaling
    per layer (pre-norm):  x = x + o(attention(RMSNorm(x)) + position bias)
                           x = x + wo(act(wi_0(RMSNorm(x))) * wi_1(RMSNorm(x)))     (gated, v1.1)
                           x = x + wo(act(wi(RMSNorm(x))))                          (original T5)
    final RMSNorm

No projection has a bias and the attention logits are not scaled by 1/sqrt(d) (T5 folds that into its
initialisation). The relative position bias is an embedding of bucketed key-minus-query offsets held by
the first layer and shared by all (bidirectional buckets: half for each sign, half of those exact and the
rest logarithmic up to `relative_attention_max_distance`). RMSNorm is T5LayerNorm: x / rms(x) * scale,
in float32. `feed_forward_proj` "gated-gelu" means the tanh GELU (`gelu_new`), as HF's config maps it.
`pooled` is None: T5 has no sentence vector.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mgt.text.hf import (
    ACTIVATIONS,
    HFTextEncoder,
    Prepared,
    Weights,
    activation,
    attention,
    key_mask_bias,
    precision_for,
)


@dataclasses.dataclass(frozen=True)
class T5Spec:
    """The static (hashable) part of a T5 encoder."""

    num_heads: int
    eps: float
    act: str
    gated: bool
    num_buckets: int
    max_distance: int
    precision: jax.lax.Precision


def relative_position_buckets(seq_len: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket int [Lq, Lk] of each key-minus-query offset: HF's bidirectional `_relative_position_bucket`,
    in float32 like torch so that the logarithmic bins' boundaries round the same way."""
    offset = np.arange(seq_len)[None, :] - np.arange(seq_len)[:, None]
    half = num_buckets // 2
    buckets = (offset > 0).astype(np.int64) * half
    distance = np.abs(offset)
    max_exact = half // 2
    log_ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
    large = max_exact + (log_ratio / np.float32(math.log(max_distance / max_exact))
                         * np.float32(half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return buckets + np.where(distance < max_exact, distance, large)


@functools.partial(jax.jit, static_argnames=("spec",))
def t5_forward(params: dict, ids_bl, mask_bl, spec: T5Spec):
    """Last hidden state float32 [B, L, D] of HF's T5EncoderModel, and None (no pooled vector)."""
    seq_len = ids_bl.shape[1]
    x = params["embed"][ids_bl]
    buckets = relative_position_buckets(seq_len, spec.num_buckets, spec.max_distance)  # static: L is static
    position_bias = params["relative_bias"][buckets].astype(jnp.float32).transpose(2, 0, 1)[None]  # [1, H, L, L]
    bias = position_bias + key_mask_bias(mask_bl)
    act = ACTIVATIONS[spec.act]
    dot = lambda x, kernel: jnp.einsum("bli,io->blo", x, kernel, precision=spec.precision)

    def layer(x, p):
        h = rms_norm(x, p["attention_norm"], spec.eps)
        a = attention(dot(h, p["q"]), dot(h, p["k"]), dot(h, p["v"]), spec.num_heads, bias, 1.0, spec.precision)
        x = x + dot(a, p["o"])
        h = rms_norm(x, p["mlp_norm"], spec.eps)
        hidden = act(dot(h, p["wi_0"])) * dot(h, p["wi_1"]) if spec.gated else act(dot(h, p["wi"]))
        return x + dot(hidden, p["wo"]), None

    x, _ = jax.lax.scan(layer, x, params["layers"])
    return rms_norm(x, params["final_norm"], spec.eps).astype(jnp.float32), None


def rms_norm(x_bld, scale, eps: float):
    """T5LayerNorm: x / sqrt(mean(x^2) + eps) * scale, computed in float32."""
    x = x_bld.astype(jnp.float32)
    y = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + eps)
    return (y * scale.astype(jnp.float32)).astype(x_bld.dtype)


class T5Encoder(HFTextEncoder):
    """A frozen T5 encoder from a Hugging Face folder (see the module docstring).

    Reads a T5EncoderModel or a full T5 (T5ForConditionalGeneration) checkpoint; the decoder's weights
    are ignored. tokenizer.json's post-processor appends </s> (added when it has none).

    Args:
      path: the folder (config.json with model_type "t5" or "mt5", model.safetensors, tokenizer.json).
      max_length: L (T5's positions are relative: no upper limit).
      dtype: compute dtype, "float32" (default) or "bfloat16"; "float16" overflows in large T5s.
    """

    family = "t5"
    model_types = ("t5", "mt5")
    _forward = staticmethod(t5_forward)

    def _position_limit(self):
        return None

    def _default_specials(self):
        return None, "</s>"

    def _prepare(self, weights: Weights) -> Prepared:
        cfg = self.config
        # "gated-gelu" → gated, gelu_new (HF's T5Config); "relu" → plain; "gated-silu" → gated, silu
        ff_proj = cfg.get("feed_forward_proj", "relu")
        gated = ff_proj.startswith("gated-")
        act_name = "gelu_new" if ff_proj == "gated-gelu" else ff_proj.split("-")[-1]
        n = cfg["num_layers"]
        block = "encoder.block.{}.layer."
        kernel = lambda name: weights.stacked(block + name + ".weight", n, transpose=True)
        layers = {
            "attention_norm": weights.stacked(block + "0.layer_norm.weight", n),
            "q": kernel("0.SelfAttention.q"), "k": kernel("0.SelfAttention.k"),
            "v": kernel("0.SelfAttention.v"), "o": kernel("0.SelfAttention.o"),
            "mlp_norm": weights.stacked(block + "1.layer_norm.weight", n),
            "wo": kernel("1.DenseReluDense.wo"),
        }
        if gated:
            layers["wi_0"], layers["wi_1"] = kernel("1.DenseReluDense.wi_0"), kernel("1.DenseReluDense.wi_1")
        else:
            layers["wi"] = kernel("1.DenseReluDense.wi")
        embed = "shared.weight" if "shared.weight" in weights else "encoder.embed_tokens.weight"
        params = {
            "embed": weights.get(embed),
            "relative_bias": weights.get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            "layers": layers,
            "final_norm": weights.get("encoder.final_layer_norm.weight"),
        }
        spec = T5Spec(num_heads=cfg["num_heads"], eps=float(cfg.get("layer_norm_epsilon", 1e-6)),
                      act=activation(act_name, self.path), gated=gated,
                      num_buckets=cfg.get("relative_attention_num_buckets", 32),
                      max_distance=cfg.get("relative_attention_max_distance", 128),
                      precision=precision_for(self.dtype))
        return Prepared(weights.to_device(params), spec, cfg["d_model"], None)
