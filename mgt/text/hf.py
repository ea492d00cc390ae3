"""Frozen Hugging Face–format text encoders in JAX: reading the folder, and what the families share.

A Hugging Face model folder (what `save_pretrained` writes, or a snapshot of a hub repository) holds

    config.json                         the architecture (hidden size, layers, heads, activation, ...)
    model.safetensors                   the weights (or model.safetensors.index.json + shards)
    tokenizer.json                      the `tokenizers` pipeline (or, for BERT, vocab.txt)
    tokenizer_config.json               special tokens (pad, bos, eos), lower-casing for vocab.txt

They are read here without torch and without pickle: weights with `safetensors.numpy`, the tokenizer
with the `tokenizers` package. `HFTextEncoder` is the base the BERT, T5 and CLIP encoders share:
tokenization on the host (padded to `max_length`, longer texts truncated with one warning), then the
model under one `jax.jit` that takes the weights as arguments (so they are not baked into the
program as constants) and is shared by every encoder of the same architecture and shapes.

The layer functions below (`dense`, `layer_norm`, `attention`, ...) are pure functions over a nested
dict of arrays; each family converts the checkpoint's names into that dict once, with the layers
stacked on a leading axis so that `jax.lax.scan` compiles one layer whatever the depth.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mgt.text.base import TextEncoding

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# ---------------------------------------------------------------------------------------------------
# Reading the folder


def check_folder(path) -> str:
    """`path` as an absolute folder path, or a ValueError naming it."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"text encoder path: expected the path of a Hugging Face model folder, got {path!r}")
    folder = os.path.abspath(os.fspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"text encoder folder {folder!r} does not exist (expected a Hugging Face model folder "
                         f"with {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_FILE})")
    return folder


def read_json(folder: str, name: str, *, required: bool = False) -> dict | None:
    """The JSON file `folder/name` as a dict; None when absent and not `required`."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        if required:
            raise ValueError(f"text encoder folder {folder!r} has no {name}")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"text encoder folder {folder!r}: cannot read {name} ({e})") from None


def load_weights(folder: str) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint by its HF name, as numpy arrays in the stored dtype."""
    from safetensors.numpy import load_file

    if os.path.isfile(os.path.join(folder, WEIGHTS_FILE)):
        return load_file(os.path.join(folder, WEIGHTS_FILE))
    index = read_json(folder, WEIGHTS_INDEX_FILE)
    if index is not None:  # a sharded checkpoint: {"weight_map": {name: shard file}}
        weights = {}
        for shard in sorted(set(index["weight_map"].values())):
            if not os.path.isfile(os.path.join(folder, shard)):
                raise ValueError(f"text encoder folder {folder!r} has no {shard} (named by {WEIGHTS_INDEX_FILE})")
            weights.update(load_file(os.path.join(folder, shard)))
        return weights
    hint = ""
    if os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        hint = " (pytorch_model.bin is not read: it needs torch and pickle; convert it to safetensors)"
    raise ValueError(f"text encoder folder {folder!r} has no {WEIGHTS_FILE}{hint}")


def load_tokenizer(folder: str):
    """The folder's `tokenizers.Tokenizer`: from tokenizer.json, else (BERT) built from vocab.txt.

    Built from vocab.txt, it is BERT's WordPiece pipeline (what `BertWordPieceTokenizer` assembles):
    BertNormalizer with tokenizer_config.json's `do_lower_case` (default True), BertPreTokenizer,
    and `[CLS] ... [SEP]` around each text.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    if os.path.isfile(os.path.join(folder, TOKENIZER_FILE)):
        try:
            return Tokenizer.from_file(os.path.join(folder, TOKENIZER_FILE))
        except Exception as e:  # tokenizers raises its own Exception type for malformed files
            raise ValueError(f"text encoder folder {folder!r}: cannot read {TOKENIZER_FILE} ({e})") from None
    if not os.path.isfile(os.path.join(folder, VOCAB_FILE)):
        raise ValueError(f"text encoder folder {folder!r} has no {TOKENIZER_FILE} (nor a BERT {VOCAB_FILE})")
    tok_config = read_json(folder, "tokenizer_config.json") or {}
    specials = {role: special_token(folder, role) or default
                for role, default in [("unk_token", "[UNK]"), ("cls_token", "[CLS]"), ("sep_token", "[SEP]"),
                                      ("pad_token", "[PAD]"), ("mask_token", "[MASK]")]}
    tok = Tokenizer(models.WordPiece.from_file(os.path.join(folder, VOCAB_FILE), unk_token=specials["unk_token"]))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=tok_config.get("tokenize_chinese_chars", True),
        strip_accents=tok_config.get("strip_accents"), lowercase=tok_config.get("do_lower_case", True))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = specials["cls_token"], specials["sep_token"]
    tok.post_processor = processors.BertProcessing((sep, tok.token_to_id(sep)), (cls, tok.token_to_id(cls)))
    tok.add_special_tokens([t for t in specials.values() if tok.token_to_id(t) is not None])
    return tok


def special_token(folder: str, role: str) -> str | None:
    """The text of a special token (`role` = "pad_token", "eos_token", ...) as the tokenizer files name it."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        token = (read_json(folder, name) or {}).get(role)
        if isinstance(token, dict):  # {"content": "<pad>", "lstrip": false, ...}
            token = token.get("content")
        if isinstance(token, str):
            return token
    return None


# ---------------------------------------------------------------------------------------------------
# Checkpoint names → parameter trees


class Weights:
    """The checkpoint's tensors, taken by name and cast to the compute dtype, with one error for a missing one.

    Args:
      tensors: name → numpy array, as `load_weights` returns.
      folder: for error messages.
      prefix: dropped from every name that has it ("text_model." in CLIP checkpoints, "bert." in BERT
        checkpoints saved with a head).
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], folder: str, dtype, prefix: str = ""):
        self.tensors = {(k[len(prefix):] if prefix and k.startswith(prefix) else k): v for k, v in tensors.items()}
        self.folder = folder
        self.dtype = dtype

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str, transpose: bool = False) -> np.ndarray:
        """The tensor `name` in float32 numpy (an nn.Linear [out, in] weight transposed to [in, out])."""
        if name not in self.tensors:
            raise ValueError(f"text encoder folder {self.folder!r}: {WEIGHTS_FILE} has no tensor {name!r}")
        array = np.asarray(self.tensors[name], np.float32)
        return array.T if transpose else array

    def stacked(self, template: str, num_layers: int, transpose: bool = False) -> np.ndarray:
        """`template.format(i)` for every layer, stacked on a new leading axis (for `jax.lax.scan`)."""
        return np.stack([self.get(template.format(i), transpose) for i in range(num_layers)])

    def to_device(self, tree: dict) -> dict:
        """The numpy tree as device arrays in the compute dtype."""
        return jax.tree.map(lambda a: jnp.asarray(a, self.dtype), tree)


def linear(weights: Weights, template: str, num_layers: int | None = None, bias: bool = True) -> dict:
    """The nn.Linear `template` ("encoder.layer.{}.attention.self.query") as {"kernel" [in, out], "bias"}.

    With `num_layers`, the template's `{}` is each layer index and the arrays are stacked on axis 0.
    """
    get = ((lambda name, t=False: weights.stacked(template + name, num_layers, t)) if num_layers is not None
           else (lambda name, t=False: weights.get(template + name, t)))
    params = {"kernel": get(".weight", True)}
    if bias:
        params["bias"] = get(".bias")
    return params


def norm(weights: Weights, template: str, num_layers: int | None = None, bias: bool = True) -> dict:
    """The LayerNorm `template` as {"scale", "bias"} (stacked with `num_layers`)."""
    get = (lambda name: weights.stacked(template + name, num_layers)) if num_layers is not None else (
        lambda name: weights.get(template + name))
    params = {"scale": get(".weight")}
    if bias:
        params["bias"] = get(".bias")
    return params


# ---------------------------------------------------------------------------------------------------
# Layers (pure functions; x is in the compute dtype, normalisation and softmax run in float32)


def precision_for(dtype) -> jax.lax.Precision:
    """Full float32 matmuls for a float32 encoder (GPUs would otherwise use TF32 and miss HF parity)."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


def dense(x_bli, params: dict, precision) -> jax.Array:
    """x [..., in] @ kernel [in, out] (+ bias)."""
    y = jnp.einsum("...i,io->...o", x_bli, params["kernel"], precision=precision)
    return y + params["bias"] if "bias" in params else y


def layer_norm(x_bld, params: dict, eps: float) -> jax.Array:
    """torch.nn.LayerNorm over the last axis (biased variance), computed in float32."""
    x = x_bld.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + eps) * params["scale"].astype(jnp.float32)
    return (y + params["bias"].astype(jnp.float32)).astype(x_bld.dtype)


def attention(q_bld, k_bld, v_bld, num_heads: int, bias, scale: float, precision) -> jax.Array:
    """Multi-head attention of projected q, k, v [B, L, H*Dh] → [B, L, H*Dh].

    `bias` is added to the float32 logits [B, H, Lq, Lk] (broadcast): T5's position bias, and the
    masks as `finfo(float32).min` where a key may not be seen (what HF's eager attention adds).
    """
    b, lq, _ = q_bld.shape
    split = lambda x: x.reshape(b, x.shape[1], num_heads, -1)
    q, k, v = split(q_bld), split(k_bld), split(v_bld)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=precision, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits * scale + bias, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=precision)
    return out.reshape(b, lq, -1)


def key_mask_bias(mask_bl) -> jax.Array:
    """Additive logits bias [B, 1, 1, L] hiding padded keys (HF's extended attention mask)."""
    return jnp.where(mask_bl, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]


# HF's ACT2FN names → functions. "gelu" is the exact (erf) GELU; "gelu_new" and "gelu_pytorch_tanh"
# are the tanh approximation that T5 v1.1 uses; "quick_gelu" is OpenAI CLIP's x * sigmoid(1.702 x).
ACTIVATIONS: dict[str, Callable] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str, folder: str) -> str:
    """`name` checked against `ACTIVATIONS` (kept as a string: it is part of a hashable spec)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"text encoder folder {folder!r}: activation {name!r} is not supported; "
                         f"expected one of {sorted(ACTIVATIONS)}")
    return name


# ---------------------------------------------------------------------------------------------------
# The shared encoder


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What a family's `_prepare` returns: the device parameters and the hashable static model spec."""

    params: dict
    spec: Any
    width: int
    pooled_width: int | None


class HFTextEncoder:
    """A frozen text encoder read from a Hugging Face–format folder (the base of the BERT, T5, CLIP ones).

    Satisfies `mgt.text.base.TextEncoder`. Subclasses set `family` and `model_types`, and implement
    `_prepare` (checkpoint → parameters and spec) and `_forward` (a module-level `jax.jit`-ed function
    `(params, ids [B, L] int32, mask [B, L] bool, spec) -> (embeddings [B, L, D], pooled [B, P] or None)`).

    Args:
      path: the model folder.
      max_length: L, the token positions of every encoding (special tokens included); longer texts are
        truncated with one warning per `encode` call.
      dtype: the compute dtype, "float32" (default; matches HF to ~1e-5), "bfloat16" or "float16". The
        outputs are float32 whatever it is.

    Attributes:
      width: D; pooled_width: the width of `pooled` (None when the encoder has none); config: config.json.
    """

    family = ""
    model_types: tuple[str, ...] = ()
    _forward: Callable

    def __init__(self, path: str, max_length: int, dtype: str = "float32"):
        self.path = check_folder(path)
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"{self.family} text encoder dtype: got {dtype!r}; expected one of {list(COMPUTE_DTYPES)}")
        self.dtype = COMPUTE_DTYPES[dtype]
        self.config = self._read_config()
        model_type = self.config.get("model_type")
        if self.model_types and model_type not in self.model_types:
            raise ValueError(f"text encoder folder {self.path!r}: config.json has model_type {model_type!r}; the "
                             f"{self.family} encoder expects one of {list(self.model_types)}")
        limit = self._position_limit()
        if not isinstance(max_length, (int, np.integer)) or max_length < 2 or (limit and max_length > limit):
            raise ValueError(f"{self.family} text encoder max_length: got {max_length!r}; expected an int in "
                             f"[2, {limit or 'inf'}] (the model's position limit)")
        self.max_length = int(max_length)
        self.tokenizer = self._make_tokenizer()
        prepared = self._prepare(Weights(load_weights(self.path), self.path, self.dtype, self._weights_prefix()))
        self.params, self.spec = prepared.params, prepared.spec
        self.width, self.pooled_width = prepared.width, prepared.pooled_width

    # -- hooks -------------------------------------------------------------------------------------

    def _read_config(self) -> dict:
        return read_json(self.path, CONFIG_FILE, required=True)

    def _position_limit(self) -> int | None:
        """The most positions the model has (None: no limit, e.g. T5's relative positions)."""
        return self.config.get("max_position_embeddings")

    def _weights_prefix(self) -> str:
        return ""

    def _default_specials(self) -> tuple[str | None, str | None]:
        """(first, last) special tokens to add when tokenizer.json has no post-processor."""
        return None, None

    def _prepare(self, weights: Weights) -> Prepared:
        raise NotImplementedError

    # -- tokenization ------------------------------------------------------------------------------

    def _make_tokenizer(self):
        from tokenizers import processors

        tok = load_tokenizer(self.path)
        if tok.post_processor is None:
            first, last = self._default_specials()
            parts = [t for t in (first, last) if t is not None]
            if parts:
                single = " ".join(([first] if first else []) + ["$A"] + ([last] if last else []))
                tok.post_processor = processors.TemplateProcessing(
                    single=single, special_tokens=[(t, self._token_id(tok, t)) for t in parts])
        pad_token, pad_id = self._pad(tok)
        tok.enable_truncation(max_length=self.max_length)
        tok.enable_padding(length=self.max_length, pad_id=pad_id, pad_token=pad_token)
        return tok

    def _token_id(self, tok, token: str) -> int:
        token_id = tok.token_to_id(token)
        if token_id is None:
            raise ValueError(f"text encoder folder {self.path!r}: the tokenizer has no token {token!r}")
        return token_id

    def _pad(self, tok) -> tuple[str, int]:
        """The padding token: tokenizer.json's own padding, else tokenizer_config.json's pad_token, else
        config.json's pad_token_id (what HF's tokenizer and model would use)."""
        if tok.padding is not None:
            return tok.padding["pad_token"], tok.padding["pad_id"]
        token = special_token(self.path, "pad_token")
        if token is not None:
            return token, self._token_id(tok, token)
        pad_id = self.config.get("pad_token_id")
        if pad_id is not None and tok.id_to_token(pad_id) is not None:
            return tok.id_to_token(pad_id), pad_id
        raise ValueError(f"text encoder folder {self.path!r}: no padding token (tokenizer_config.json has no "
                         "pad_token and config.json no pad_token_id)")

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids int32 [B, L] and mask bool [B, L] (on the host), every text padded or truncated to L."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"{self.family} text encoder: expected a list of strings, got {texts!r:.80}")
        encodings = self.tokenizer.encode_batch(list(texts))
        truncated = [t for t, e in zip(texts, encodings) if e.overflowing]
        if truncated:
            warnings.warn(f"{self.family} text encoder: {len(truncated)} of {len(texts)} texts are longer than "
                          f"max_length={self.max_length} tokens and were truncated (first: {str(truncated[0])!r:.80})",
                          stacklevel=3)
        ids = np.array([e.ids for e in encodings], np.int32).reshape(len(texts), self.max_length)
        mask = np.array([e.attention_mask for e in encodings], bool).reshape(len(texts), self.max_length)
        return ids, mask

    # -- encoding ----------------------------------------------------------------------------------

    def encode_tokens(self, ids_bl, mask_bl) -> TextEncoding:
        """The model alone on tokenized input (what a benchmark times): ids int32 [B, L], mask bool [B, L]."""
        mask_bl = jnp.asarray(mask_bl, bool)
        embeddings, pooled = self._forward(self.params, jnp.asarray(ids_bl, jnp.int32), mask_bl, self.spec)
        return TextEncoding(embeddings=embeddings, mask=mask_bl, pooled=pooled)

    def encode(self, texts: list[str]) -> TextEncoding:
        """Embeddings float32 [B, L, D], mask bool [B, L], pooled float32 [B, P] or None (see mgt.text.base)."""
        return self.encode_tokens(*self.tokenize(texts))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(path={self.path!r}, max_length={self.max_length}, "
                f"dtype={jnp.dtype(self.dtype).name!r}, width={self.width})")

