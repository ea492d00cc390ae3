"""BERT-family text encoders (BERT, MiniLM, sentence-transformers models built on them) in JAX.

The architecture of HF's `BertModel` at inference:

    x = LayerNorm(word[ids] + position[0..L) + token_type[0])
    per layer (post-LN):  x = LayerNorm(x + out(attention(x)));  x = LayerNorm(x + down(act(up(x))))

with the padding mask on the attention keys, `hidden_act` from config.json ("gelu" is the exact erf
GELU) and LayerNorm epsilon `layer_norm_eps`. `embeddings` is the last hidden state (padded positions
included, as HF computes them; `mask` says which are real).

`pooled`, in order of preference:
  - sentence-transformers' pooling when the folder has it (the Pooling module named in modules.json,
    else `1_Pooling/config.json`): the mean of the real tokens' states for `pooling_mode_mean_tokens`
    (all-MiniLM-L6-v2), the [CLS] state for `pooling_mode_cls_token`. A following Normalize module
    is not applied: `pooled` is the unnormalised mean (divide by its norm for sentence-transformers'
    unit vectors);
  - otherwise HF's pooler, tanh(dense(state of [CLS])), when the checkpoint has `pooler.dense`;
  - otherwise None.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp

from mgt.text.hf import (
    ACTIVATIONS,
    HFTextEncoder,
    Prepared,
    Weights,
    activation,
    attention,
    dense,
    key_mask_bias,
    layer_norm,
    linear,
    norm,
    precision_for,
    read_json,
)

POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


@dataclasses.dataclass(frozen=True)
class BertSpec:
    """The static (hashable) part of a BERT model: one compiled program per distinct spec and shape."""

    num_heads: int
    eps: float
    act: str
    pooling: str | None  # "mean", "cls", "pooler" or None
    precision: jax.lax.Precision


@functools.partial(jax.jit, static_argnames=("spec",))
def bert_forward(params: dict, ids_bl, mask_bl, spec: BertSpec):
    """Last hidden state float32 [B, L, D] and pooled float32 [B, D] (or None) of HF's BertModel."""
    seq_len = ids_bl.shape[1]
    emb = params["embeddings"]
    x = emb["word"][ids_bl] + emb["position"][:seq_len] + emb["token_type"][0]
    x = layer_norm(x, emb["norm"], spec.eps)
    bias = key_mask_bias(mask_bl)
    act = ACTIVATIONS[spec.act]
    dot = functools.partial(dense, precision=spec.precision)

    def layer(x, p):
        head_dim = p["query"]["kernel"].shape[-1] // spec.num_heads
        a = attention(dot(x, p["query"]), dot(x, p["key"]), dot(x, p["value"]), spec.num_heads, bias,
                      head_dim ** -0.5, spec.precision)
        x = layer_norm(x + dot(a, p["attention_out"]), p["attention_norm"], spec.eps)
        x = layer_norm(x + dot(act(dot(x, p["up"])), p["down"]), p["mlp_norm"], spec.eps)
        return x, None

    x, _ = jax.lax.scan(layer, x, params["layers"])
    x = x.astype(jnp.float32)
    if spec.pooling == "mean":  # sentence-transformers: sum over real tokens / max(count, 1e-9)
        weights = mask_bl[..., None].astype(jnp.float32)
        pooled = (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    elif spec.pooling == "cls":
        pooled = x[:, 0]
    elif spec.pooling == "pooler":
        pooled = jnp.tanh(dense(x[:, 0], jax.tree.map(lambda a: a.astype(jnp.float32), params["pooler"]),
                                spec.precision))
    else:
        pooled = None
    return x, pooled


class BertEncoder(HFTextEncoder):
    """A frozen BERT-family encoder from a Hugging Face folder (see the module docstring).

    Args:
      path: the folder (config.json with model_type "bert", model.safetensors, tokenizer.json or vocab.txt).
      max_length: L, at most config.json's max_position_embeddings.
      dtype: compute dtype, "float32" (default), "bfloat16" or "float16".
    """

    family = "bert"
    model_types = ("bert",)
    _forward = staticmethod(bert_forward)

    def _default_specials(self):
        return "[CLS]", "[SEP]"

    def _prepare(self, weights: Weights) -> Prepared:
        cfg = self.config
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"text encoder folder {self.path!r}: position_embedding_type "
                             f"{cfg['position_embedding_type']!r} is not supported; expected 'absolute'")
        # checkpoints saved with a head ("bert.encoder...") and old TF conversions (LayerNorm.gamma/beta)
        weights.tensors = {k.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight")
                           .replace("LayerNorm.beta", "LayerNorm.bias"): v for k, v in weights.tensors.items()}
        n = cfg["num_hidden_layers"]
        layer = "encoder.layer.{}."
        params = {
            "embeddings": {
                "word": weights.get("embeddings.word_embeddings.weight"),
                "position": weights.get("embeddings.position_embeddings.weight"),
                "token_type": weights.get("embeddings.token_type_embeddings.weight"),
                "norm": norm(weights, "embeddings.LayerNorm"),
            },
            "layers": {
                "query": linear(weights, layer + "attention.self.query", n),
                "key": linear(weights, layer + "attention.self.key", n),
                "value": linear(weights, layer + "attention.self.value", n),
                "attention_out": linear(weights, layer + "attention.output.dense", n),
                "attention_norm": norm(weights, layer + "attention.output.LayerNorm", n),
                "up": linear(weights, layer + "intermediate.dense", n),
                "down": linear(weights, layer + "output.dense", n),
                "mlp_norm": norm(weights, layer + "output.LayerNorm", n),
            },
        }
        pooling = self._sentence_pooling()
        if pooling is None and "pooler.dense.weight" in weights:
            pooling = "pooler"
            params["pooler"] = linear(weights, "pooler.dense")
        width = cfg["hidden_size"]
        spec = BertSpec(num_heads=cfg["num_attention_heads"], eps=float(cfg.get("layer_norm_eps", 1e-12)),
                        act=activation(cfg.get("hidden_act", "gelu"), self.path), pooling=pooling,
                        precision=precision_for(self.dtype))
        return Prepared(weights.to_device(params), spec, width, width if pooling else None)

    def _sentence_pooling(self) -> str | None:
        """"mean" or "cls" from a sentence-transformers Pooling config in the folder, else None."""
        pooling_dir = "1_Pooling"
        for module in read_json(self.path, "modules.json") or []:
            if str(module.get("type", "")).endswith("Pooling"):
                pooling_dir = module.get("path") or pooling_dir
        name = os.path.join(pooling_dir, "config.json")
        pooling = read_json(self.path, name)
        if pooling is None:
            return None
        modes = [key for key, value in pooling.items() if key.startswith("pooling_mode") and value is True]
        if len(modes) != 1 or modes[0] not in POOLING_MODES:
            raise ValueError(f"text encoder folder {self.path!r}: {name} enables {modes}; expected exactly one "
                             f"of {list(POOLING_MODES)}")
        return POOLING_MODES[modes[0]]
