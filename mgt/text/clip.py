"""CLIP's text tower in JAX: HF's `CLIPTextModel` (and `CLIPTextModelWithProjection`) at inference.

    x = token[ids] + position[0..L)
    per layer (pre-LN):  x = x + out(causal attention(LayerNorm(x)));  x = x + fc2(act(fc1(LayerNorm(x))))
    final LayerNorm

`hidden_act` from the config ("quick_gelu" for OpenAI's models, "gelu" for some OpenCLIP ones).

The attention mask is the causal one only, as CLIP was trained and as Stable Diffusion and HF (called
without an attention mask) run it: real tokens never see the padding that follows them, so their
states are the same with or without a padding mask, and the padded positions hold the states of the
padded sequence (which some models condition on) rather than undefined values.

`pooled` is the final state at the end-of-text token, found as HF's CLIPTextTransformer finds it: with
the old configs' `eos_token_id` 2 (before transformers PR #24773), the position of the largest token
id (the end token has the largest id in CLIP's vocabulary); otherwise the first position holding
`eos_token_id` (the padding may be that token too). When the checkpoint has `text_projection`
(CLIPTextModelWithProjection, CLIPModel) and `projection=True`, `pooled` is that projection of it
(HF's `text_embeds`), [B, projection_dim].
"""

from __future__ import annotations

import dataclasses
import functools

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
    dense,
    layer_norm,
    linear,
    norm,
    precision_for,
    special_token,
)

LEGACY_EOS_TOKEN_ID = 2  # configs written before transformers PR #24773: pool at the largest token id


@dataclasses.dataclass(frozen=True)
class CLIPSpec:
    """The static (hashable) part of a CLIP text tower."""

    num_heads: int
    eps: float
    act: str
    eos_token_id: int
    project: bool
    precision: jax.lax.Precision


@functools.partial(jax.jit, static_argnames=("spec",))
def clip_forward(params: dict, ids_bl, mask_bl, spec: CLIPSpec):
    """Last hidden state float32 [B, L, D] and pooled float32 [B, D] (or [B, P] projected)."""
    del mask_bl  # causal attention alone: see the module docstring
    seq_len = ids_bl.shape[1]
    x = params["token"][ids_bl] + params["position"][:seq_len]
    causal = np.tril(np.ones((seq_len, seq_len), bool))
    bias = jnp.where(causal, 0.0, jnp.finfo(jnp.float32).min)[None, None]
    act = ACTIVATIONS[spec.act]
    dot = functools.partial(dense, precision=spec.precision)

    def layer(x, p):
        h = layer_norm(x, p["attention_norm"], spec.eps)
        head_dim = p["q"]["kernel"].shape[-1] // spec.num_heads
        a = attention(dot(h, p["q"]), dot(h, p["k"]), dot(h, p["v"]), spec.num_heads, bias, head_dim ** -0.5,
                      spec.precision)
        x = x + dot(a, p["out"])
        h = layer_norm(x, p["mlp_norm"], spec.eps)
        return x + dot(act(dot(h, p["fc1"])), p["fc2"]), None

    x, _ = jax.lax.scan(layer, x, params["layers"])
    x = layer_norm(x, params["final_norm"], spec.eps).astype(jnp.float32)
    if spec.eos_token_id == LEGACY_EOS_TOKEN_ID:
        eos_b = jnp.argmax(ids_bl, axis=-1)
    else:  # the first end token (argmax returns the first maximum)
        eos_b = jnp.argmax(ids_bl == spec.eos_token_id, axis=-1)
    pooled = jnp.take_along_axis(x, eos_b[:, None, None], axis=1)[:, 0]
    if spec.project:
        pooled = jnp.einsum("bd,dp->bp", pooled, params["projection"].astype(jnp.float32), precision=spec.precision)
    return x, pooled


class CLIPTextEncoder(HFTextEncoder):
    """A frozen CLIP text encoder from a Hugging Face folder (see the module docstring).

    Reads CLIPTextModel, CLIPTextModelWithProjection and full CLIPModel checkpoints (the text half,
    config.json's `text_config`); tokenizer.json's post-processor adds the start and end tokens.

    Args:
      path: the folder (config.json with model_type "clip_text_model" or "clip", model.safetensors,
        tokenizer.json).
      max_length: L, at most max_position_embeddings (77 for OpenAI's models).
      dtype: compute dtype, "float32" (default), "bfloat16" or "float16".
      projection: pool through `text_projection` when the checkpoint has it (default True).
    """

    family = "clip"
    model_types = ("clip_text_model", "clip")
    _forward = staticmethod(clip_forward)

    def __init__(self, path: str, max_length: int, dtype: str = "float32", projection: bool = True):
        self.projection = projection
        super().__init__(path, max_length, dtype)

    def _read_config(self) -> dict:
        config = super()._read_config()
        if "text_config" in config:  # a full CLIPModel: its text tower's config, and the shared projection
            return {**config["text_config"], "model_type": config.get("model_type"),
                    "projection_dim": config.get("projection_dim", config["text_config"].get("projection_dim"))}
        return config

    def _weights_prefix(self) -> str:
        return "text_model."

    def _default_specials(self):
        return special_token(self.path, "bos_token"), special_token(self.path, "eos_token")

    def _prepare(self, weights: Weights) -> Prepared:
        cfg = self.config
        n = cfg["num_hidden_layers"]
        layer = "encoder.layers.{}."
        params = {
            "token": weights.get("embeddings.token_embedding.weight"),
            "position": weights.get("embeddings.position_embedding.weight"),
            "layers": {
                "attention_norm": norm(weights, layer + "layer_norm1", n),
                "q": linear(weights, layer + "self_attn.q_proj", n),
                "k": linear(weights, layer + "self_attn.k_proj", n),
                "v": linear(weights, layer + "self_attn.v_proj", n),
                "out": linear(weights, layer + "self_attn.out_proj", n),
                "mlp_norm": norm(weights, layer + "layer_norm2", n),
                "fc1": linear(weights, layer + "mlp.fc1", n),
                "fc2": linear(weights, layer + "mlp.fc2", n),
            },
            "final_norm": norm(weights, "final_layer_norm"),
        }
        project = bool(self.projection) and "text_projection.weight" in weights
        if project:
            params["projection"] = weights.get("text_projection.weight", transpose=True)  # [D, P]
        eos_token_id = cfg.get("eos_token_id")
        if eos_token_id is None:  # very old configs: fall back to the tokenizer's end token
            eos_token_id = self._token_id(self.tokenizer, special_token(self.path, "eos_token") or "<|endoftext|>")
        spec = CLIPSpec(num_heads=cfg["num_attention_heads"], eps=float(cfg.get("layer_norm_eps", 1e-5)),
                        act=activation(cfg.get("hidden_act", "quick_gelu"), self.path), eos_token_id=int(eos_token_id),
                        project=project, precision=precision_for(self.dtype))
        width = cfg["hidden_size"]
        return Prepared(weights.to_device(params), spec, width, params["projection"].shape[1] if project else width)
