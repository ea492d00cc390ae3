"""The official MaskGIT checkpoints ↔ mgt modules: file I/O, size inference and the key mapping.

The official release (google-research/maskgit) ships one file per model: the msgpack bytes of
`flax.serialization.to_bytes({"params": tree})`. This module reads and writes such files without
TensorFlow, infers every size it can from the parameter shapes, and translates the trees:

    transformer   official `{"params": {"Embed_0": ..., "TransformerLayer_N": ..., "MlmLayer_0": ...}}`
                  ↔ `MaskedTransformer(TransformerConfig(block_style="maskgit", conditioning="class_token"))`
                  (the N layers are stacked along axis 0 of the scanned `blocks`);
    tokenizer     official `{"params": {"encoder": ..., "decoder": ..., "quantizer": {"codebook"}}}`
                  ↔ `VQGAN` (the mapping itself lives in `mgt.tokenizers.vqgan`).

Every function on trees accepts leaves that are numpy / jax arrays or `jax.ShapeDtypeStruct`s, so
the inference and the key checks run on the full-size abstract trees without allocating anything.
Trees are nested dicts; the top-level `"params"` key is optional on input.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from mgt.registry import flatten_dict, nest_dict
from mgt.tokenizers.vqgan import VQGAN, VQGANConfig, from_official_tree, to_official_tree
from mgt.tokenizers.vqgan import _official_map as _vqgan_official_map
from mgt.transformer import MaskedTransformer, TransformerConfig

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "read_checkpoint",
    "write_checkpoint",
    "flatten_tree",
    "nest_tree",
    "check_tree",
    "infer_transformer_config",
    "infer_vqgan_config",
    "transformer_to_official_tree",
    "transformer_from_official_tree",
    "vqgan_to_official_tree",
    "vqgan_from_official_tree",
    "abstract_transformer",
    "abstract_vqgan",
]

DEFAULT_NUM_CLASSES = 1000  # ImageNet

# TransformerConfig fields the official architecture fixes: an override to another value is refused.
_FIXED_TRANSFORMER_FIELDS = dict(block_style="maskgit", conditioning="class_token", position_embedding="learned",
                                 num_levels=1, null_condition=False, context_dim=0, qk_norm=False)

_LAYER = re.compile(r"^TransformerLayer_(\d+)$")


# ---- files -------------------------------------------------------------------------------------
def read_checkpoint(path, *, argument: str = "path") -> dict:
    """Read an official checkpoint file → its `params` tree (nested dict of numpy arrays).

    Args:
      path: the file (no extension in the official release).
      argument: the caller's argument name, used in error messages.
    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: naming the file, when it is not Flax msgpack bytes of a `{"params": {...}}` dict
        (corrupted or truncated files included).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{argument}={path!r}: no such file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        restored = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises ValueError, ExtraData, UnpackValueError, TypeError, ...
        raise ValueError(
            f"{argument}={path!r} is not a Flax msgpack checkpoint (corrupted or truncated? "
            f"{len(data)} bytes): {type(e).__name__}: {e}"
        ) from None
    if not isinstance(restored, dict):
        raise ValueError(f"{argument}={path!r} holds a {type(restored).__name__}; expected the variables "
                         f"dict {{'params': {{...}}}} written by flax.serialization.to_bytes")
    params = restored.get("params", restored)
    if not isinstance(params, dict) or not params:
        raise ValueError(f"{argument}={path!r} has no parameter tree under 'params'; top-level keys: "
                         f"{sorted(map(str, restored))}")
    bad = sorted("/".join(k) for k, v in flatten_tree(params).items() if not isinstance(v, np.ndarray))
    if bad:
        raise ValueError(f"{argument}={path!r}: leaves that are not arrays: {bad[:10]}")
    return params


def write_checkpoint(path, tree: Mapping) -> None:
    """Write `tree` (with or without the top `"params"` key) as the official code does:
    `flax.serialization.to_bytes({"params": tree})`. Leaves are stored as numpy arrays."""
    params = _params(tree)
    params = jax.tree.map(np.asarray, dict(params))
    with open(os.fspath(path), "wb") as f:
        f.write(serialization.to_bytes({"params": params}))


# ---- trees -------------------------------------------------------------------------------------
def _params(tree: Mapping) -> Mapping:
    if not isinstance(tree, Mapping):
        raise ValueError(f"expected a nested dict of parameters, got {type(tree).__name__}")
    if set(tree) == {"params"} and isinstance(tree["params"], Mapping):
        return tree["params"]
    return tree


flatten_tree, nest_tree = flatten_dict, nest_dict  # `{'a': {'b': x}}` ↔ `{('a', 'b'): x}`


def check_tree(given: Mapping, expected: Mapping, what: str) -> None:
    """Compare two trees (nested or flat dicts) by keys and leaf shapes.

    Raises ValueError listing every missing, unexpected and mis-shaped key, prefixed by `what`
    (e.g. "transformer_path='...'").
    """
    given = given if _is_flat(given) else flatten_tree(_params(given))
    expected = expected if _is_flat(expected) else flatten_tree(_params(expected))
    missing = sorted("/".join(k) for k in expected if k not in given)
    unexpected = sorted("/".join(k) for k in given if k not in expected)
    misshaped = sorted(
        f"{'/'.join(k)}: got {tuple(np.shape(given[k]))}, expected {tuple(np.shape(v))}"
        for k, v in expected.items() if k in given and tuple(np.shape(given[k])) != tuple(np.shape(v))
    )
    if missing or unexpected or misshaped:
        parts = [f"{name} ({len(keys)}): {keys}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
        raise ValueError(f"{what}: the parameter tree does not match the expected model: " + "; ".join(parts))


def _is_flat(tree: Mapping) -> bool:
    return bool(tree) and all(isinstance(k, tuple) for k in tree)


def _shape(flat: Mapping, key: tuple, what: str, field: str) -> tuple[int, ...]:
    if key not in flat:
        raise ValueError(f"{what}: cannot infer {field}: the tree has no {'/'.join(key)} "
                         f"(top-level keys: {sorted({k[0] for k in flat})}); pass {field}=... or check the file")
    return tuple(int(d) for d in np.shape(flat[key]))


def _abstract(x) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct)


def _stack(leaves: list, dtype):
    if any(_abstract(x) for x in leaves):
        return jax.ShapeDtypeStruct((len(leaves),) + tuple(np.shape(leaves[0])), dtype)
    return jnp.asarray(np.stack([np.asarray(x) for x in leaves]), dtype)


def _expand0(leaf, dtype):
    if _abstract(leaf):
        return jax.ShapeDtypeStruct((1,) + tuple(leaf.shape), dtype)
    return jnp.asarray(np.asarray(leaf)[None], dtype)


def _convert(leaf, dtype):
    if _abstract(leaf):
        return jax.ShapeDtypeStruct(tuple(leaf.shape), dtype)
    return jnp.asarray(np.asarray(leaf), dtype)


def _take(leaf, index: int):
    if _abstract(leaf):
        return jax.ShapeDtypeStruct(tuple(leaf.shape[1:]), leaf.dtype)
    return leaf[index]


def _param_flat(model_or_state) -> dict[tuple, nnx.Variable]:
    """A module (possibly abstract) or its state → `{path: nnx.Param}` (other variables dropped)."""
    state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state
    out = {}
    for path, leaf in nnx.to_flat_state(state):
        if isinstance(leaf, nnx.Variable) and not isinstance(leaf, nnx.Param):
            continue
        out[tuple(path)] = leaf
    return out


def _value(leaf):
    return leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf


# ---- transformer: sizes ------------------------------------------------------------------------
def infer_transformer_config(tree: Mapping, *, num_classes: int | None = None, what: str = "transformer",
                             **overrides) -> TransformerConfig:
    """The `TransformerConfig` of an official transformer tree, from its parameter shapes.

    Inferred: `num_layers` (the TransformerLayer_N entries), `hidden_dim` and the vocabulary
    (`Embed_0/word_embeddings` `[vocab, D]`), `num_heads` (`query/kernel` `[D, heads, head_dim]`),
    `mlp_dim`, the grid (`position_embeddings` has 1 + h·w rows; a square grid unless `grid` is
    given) and `codebook_size = vocab − num_classes − 1`. `num_classes` defaults to 1000, or to
    `vocab − codebook_size − 1` when `codebook_size` is given. Dropout rates are the official 0.1
    (they only act in training).

    Args:
      tree: the official params tree (arrays or `jax.ShapeDtypeStruct`s; `"params"` key optional).
      num_classes: class tokens in the vocabulary.
      what: names the tree in error messages (e.g. "transformer_path='/x/maskgit_imagenet256'").
      **overrides: other `TransformerConfig` fields (`dtype`, `attention_impl`, `remat`, `grid`, ...).
    Raises:
      ValueError: a key needed for the inference is absent, sizes are inconsistent, or an override
        names an unknown field or contradicts the official architecture.
    """
    flat = flatten_tree(_params(tree))
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown transformer option(s) {unknown}; expected some of {sorted(fields)}")
    for name, value in _FIXED_TRANSFORMER_FIELDS.items():
        if name in overrides and overrides[name] != value:
            raise ValueError(f"{name}={overrides[name]!r}: the official MaskGIT transformer has {name}={value!r}")

    vocab, hidden = _shape(flat, ("Embed_0", "word_embeddings", "embedding"), what, "hidden_dim")
    layers = sorted(int(m.group(1)) for m in {_LAYER.match(k[0]) for k in flat} if m)
    if "num_layers" in overrides:
        num_layers = int(overrides.pop("num_layers"))
    elif layers:
        num_layers = layers[-1] + 1
    else:
        raise ValueError(f"{what}: no TransformerLayer_N entries in the tree; cannot infer num_layers")
    layer0 = f"TransformerLayer_{layers[0] if layers else 0}"
    q_in, heads, head_dim = _shape(flat, (layer0, "Attention_0", "self_attention", "query", "kernel"),
                                   what, "num_heads")
    if heads * head_dim != hidden:
        raise ValueError(f"{what}: query kernel [{q_in}, {heads}, {head_dim}] has heads·head_dim = "
                         f"{heads * head_dim} != hidden size {hidden}; mgt's attention needs head_dim = hidden / heads")
    mlp_dim = _shape(flat, (layer0, "Mlp_0", "intermediate_output", "kernel"), what, "mlp_dim")[1]
    seq_len = _shape(flat, ("Embed_0", "position_embeddings", "embedding"), what, "grid")[0]

    num_cells = seq_len - 1  # the class token comes first
    grid = overrides.pop("grid", None)
    if grid is None:
        side = math.isqrt(max(num_cells, 0))
        if num_cells < 1 or side * side != num_cells:
            raise ValueError(f"{what}: position_embeddings has {seq_len} rows; 1 + side² expected for a square "
                             f"grid — pass grid=(h, w) with h·w = {num_cells}")
        grid = (side, side)
    grid = tuple(int(g) for g in grid)
    if math.prod(grid) != num_cells:
        raise ValueError(f"grid={grid} has {math.prod(grid)} cells; position_embeddings has {seq_len} rows "
                         f"(1 class token + {num_cells} cells)")

    codebook_size = overrides.pop("codebook_size", None)
    if num_classes is None:
        num_classes = (vocab - int(codebook_size) - 1) if codebook_size is not None else DEFAULT_NUM_CLASSES
    if codebook_size is None:
        codebook_size = vocab - int(num_classes) - 1
    if int(codebook_size) < 1 or int(num_classes) < 1 or int(codebook_size) + int(num_classes) + 1 != vocab:
        raise ValueError(f"{what}: vocabulary of {vocab} rows does not split as codebook_size={codebook_size} + "
                         f"num_classes={num_classes} + 1 mask; pass num_classes (default {DEFAULT_NUM_CLASSES})")
    kwargs = dict(grid=grid, codebook_size=int(codebook_size), num_classes=int(num_classes),
                  num_layers=num_layers, hidden_dim=hidden, num_heads=heads, mlp_dim=mlp_dim,
                  dropout_rate=0.1, attention_dropout_rate=0.1, **_FIXED_TRANSFORMER_FIELDS)
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


def abstract_transformer(config: TransformerConfig) -> MaskedTransformer:
    """A `MaskedTransformer` whose parameters are `jax.ShapeDtypeStruct`s (nothing allocated)."""
    return nnx.eval_shape(lambda: MaskedTransformer(config, rngs=nnx.Rngs(0)))


# ---- transformer: key mapping ------------------------------------------------------------------
# Our scanned block's sub-modules → the official TransformerLayer_N sub-paths.
_BLOCK_PREFIX = {
    "self_attention": ("Attention_0", "self_attention"),
    "attention_output_ln": ("Attention_0", "attention_output_ln"),
    "mlp": ("Mlp_0",),
    "layer_output_ln": ("Mlp_0", "layer_output_ln"),
}
# Our top-level parameters → (official path, whether ours has an extra leading axis of size 1).
_TOP_LEVEL = {
    ("word_embeddings",): (("Embed_0", "word_embeddings", "embedding"), True),
    ("position_embeddings",): (("Embed_0", "position_embeddings", "embedding"), False),
    ("mlm_bias",): (("MlmLayer_0", "mlm_bias", "bias"), True),
}
_TOP_PREFIX = {"embeddings_ln": ("Embed_0", "embeddings_ln"), "mlm_dense": ("MlmLayer_0", "mlm_dense"),
               "mlm_ln": ("MlmLayer_0", "mlm_ln")}


def _official_path(path: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """Our param path → (official path, kind) with kind "block" (stacked over layers; the official
    path lacks its TransformerLayer_N head), "expand" (ours has a leading axis of 1) or "plain"."""
    path = tuple(str(p) for p in path)
    if path[0] == "blocks" and len(path) >= 3 and path[1] in _BLOCK_PREFIX:
        return _BLOCK_PREFIX[path[1]] + path[2:], "block"
    if path in _TOP_LEVEL:
        official, expand = _TOP_LEVEL[path]
        return official, "expand" if expand else "plain"
    if len(path) == 2 and path[0] in _TOP_PREFIX:
        return _TOP_PREFIX[path[0]] + path[1:], "plain"
    raise KeyError("/".join(path))


def _transformer_mapping(flat: Mapping[tuple, Any]) -> dict[tuple, tuple[tuple[str, ...], str]]:
    mapping, unknown = {}, []
    for path in flat:
        try:
            mapping[path] = _official_path(path)
        except KeyError:
            unknown.append("/".join(map(str, path)))
    if unknown:
        raise ValueError(f"parameters with no official MaskGIT name: {sorted(unknown)} (only the official "
                         "architecture — block_style='maskgit', conditioning='class_token', learned positions, "
                         "one code level — can be exported)")
    return mapping


def transformer_to_official_tree(model_or_state) -> dict:
    """A maskgit-style `MaskedTransformer` (or its `nnx.Param` state) → the official variables dict
    `{"params": {"Embed_0": ..., "TransformerLayer_0": ..., ..., "MlmLayer_0": ...}}`.

    Leaves are jax arrays (or `ShapeDtypeStruct`s for an abstract model): layer n of the stacked
    `blocks` becomes `TransformerLayer_n`; the level axis of `word_embeddings` `[1, vocab, D]` and of
    `mlm_bias` `[1, vocab]` is dropped. Raises ValueError for parameters with no official name.
    """
    flat = {p: _value(v) for p, v in _param_flat(model_or_state).items()}
    mapping = _transformer_mapping(flat)
    out = {}
    for path, (official, kind) in mapping.items():
        leaf = flat[path]
        if kind == "block":
            for n in range(int(np.shape(leaf)[0])):
                out[(f"TransformerLayer_{n}",) + official] = _take(leaf, n)
        elif kind == "expand":
            if np.shape(leaf)[0] != 1:
                raise ValueError(f"{'/'.join(map(str, path))} has {np.shape(leaf)[0]} code levels; "
                                 f"the official layout has one")
            out[official] = _take(leaf, 0)
        else:
            out[official] = leaf
    return {"params": nest_tree(out)}


def transformer_from_official_tree(tree: Mapping, target, *, what: str = "transformer") -> nnx.State:
    """The official transformer tree → an `nnx.State` of `target`'s parameters.

    `target` is a `MaskedTransformer` (possibly abstract) or its `nnx.Param` state; it fixes the
    expected names and shapes. With array leaves the result holds jax arrays in each target
    parameter's dtype, ready for `nnx.update(target, state)` / `nnx.merge(graphdef, state)`; with
    `ShapeDtypeStruct` leaves it holds `ShapeDtypeStruct`s (an abstract check of the mapping).
    Raises ValueError (prefixed by `what`) listing every missing, unexpected or mis-shaped key.
    """
    given = flatten_tree(_params(tree))
    target_flat = _param_flat(target)
    expected = flatten_tree(_params(transformer_to_official_tree(nnx.from_flat_state(list(target_flat.items())))))
    check_tree(given, expected, what)
    mapping = _transformer_mapping(target_flat)
    new = []
    for path, leaf in target_flat.items():
        official, kind = mapping[path]
        dtype = _value(leaf).dtype
        if kind == "block":
            num_layers = int(np.shape(_value(leaf))[0])
            value = _stack([given[(f"TransformerLayer_{n}",) + official] for n in range(num_layers)], dtype)
        elif kind == "expand":
            value = _expand0(given[official], dtype)
        else:
            value = _convert(given[official], dtype)
        new.append((path, leaf.replace(value) if isinstance(leaf, nnx.Variable) else value))
    return nnx.from_flat_state(new)


# ---- tokenizer ---------------------------------------------------------------------------------
def infer_vqgan_config(tree: Mapping, *, what: str = "tokenizer", **overrides) -> VQGANConfig:
    """The `VQGANConfig` of an official tokenizer tree, from its parameter shapes.

    Inferred: `codebook_size` and `embedding_dim` (`quantizer/codebook` `[V, D]`), `image_channels`
    and `base_channels` (`encoder/Conv_0/kernel` `[3, 3, C, base]`), the number of resolution levels
    (the decoder's plain convs: input, one upsampling conv per level but the first, output),
    `num_res_blocks` (encoder ResBlocks / (levels + 1)) and `channel_multipliers` (the output width
    of each level's first encoder ResBlock / base). `num_groups` is not stored in the weights: the
    official 32 unless overridden.

    Args:
      tree: the official params tree (arrays or `ShapeDtypeStruct`s; `"params"` key optional).
      what: names the tree in error messages.
      **overrides: `VQGANConfig` fields (`num_res_blocks`, `channel_multipliers`, `num_groups`, `dtype`, ...).
    Raises:
      ValueError: a needed key is absent, the block counts do not fit, or an override is unknown.
    """
    flat = flatten_tree(_params(tree))
    fields = {f.name for f in dataclasses.fields(VQGANConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown tokenizer option(s) {unknown}; expected some of {sorted(fields)}")
    codebook_size, embedding_dim = _shape(flat, ("quantizer", "codebook"), what, "codebook_size")
    _, _, image_channels, base = _shape(flat, ("encoder", "Conv_0", "kernel"), what, "base_channels")
    base = int(overrides.get("base_channels", base))
    enc_blocks = {int(k[1][len("ResBlock_"):]) for k in flat
                  if k[0] == "encoder" and re.fullmatch(r"ResBlock_\d+", k[1])}
    num_enc_blocks = max(enc_blocks) + 1 if enc_blocks else 0
    dec_convs = {int(k[1][len("Conv_"):]) for k in flat if k[0] == "decoder" and re.fullmatch(r"Conv_\d+", k[1])}

    mults = overrides.get("channel_multipliers")
    num_res_blocks = overrides.get("num_res_blocks")
    if mults is not None:
        num_levels = len(tuple(mults))
    elif dec_convs:
        num_levels = max(dec_convs)  # Conv_0 (in), Conv_1 .. Conv_{L-1} (upsampling), Conv_L (out)
    elif num_res_blocks is not None and num_enc_blocks:
        num_levels = num_enc_blocks // int(num_res_blocks) - 1
    else:
        raise ValueError(f"{what}: no decoder/Conv_N entries; cannot infer the number of levels — "
                         "pass channel_multipliers=(...)")
    if num_levels < 1:
        raise ValueError(f"{what}: inferred {num_levels} resolution levels; pass channel_multipliers=(...)")
    if num_res_blocks is None:
        if num_enc_blocks == 0 or num_enc_blocks % (num_levels + 1):
            raise ValueError(f"{what}: {num_enc_blocks} encoder ResBlocks do not split into {num_levels} levels + "
                             f"the bottleneck; pass num_res_blocks=... and channel_multipliers=(...)")
        num_res_blocks = num_enc_blocks // (num_levels + 1)
    num_res_blocks = int(num_res_blocks)
    if mults is None:
        mults = []
        for level in range(num_levels):
            width = _shape(flat, ("encoder", f"ResBlock_{level * num_res_blocks}", "Conv_0", "kernel"),
                           what, "channel_multipliers")[3]
            if width % base:
                raise ValueError(f"{what}: encoder ResBlock_{level * num_res_blocks} has {width} channels, not a "
                                 f"multiple of base_channels={base}; pass channel_multipliers=(...)")
            mults.append(width // base)
    kwargs = dict(image_channels=image_channels, base_channels=base, channel_multipliers=tuple(mults),
                  num_res_blocks=num_res_blocks, embedding_dim=embedding_dim, codebook_size=codebook_size)
    kwargs.update(overrides)
    config = VQGANConfig(**kwargs)
    widths = sorted({config.base_channels * m for m in config.channel_multipliers})
    if any(w % config.num_groups for w in widths):
        raise ValueError(f"{what}: GroupNorm num_groups={config.num_groups} does not divide the channel widths "
                         f"{widths} (the official tokenizer uses 32, which the weights do not record); "
                         "pass num_groups=... dividing every width")
    return config


def abstract_vqgan(config: VQGANConfig) -> VQGAN:
    """A `VQGAN` whose parameters are `jax.ShapeDtypeStruct`s (nothing allocated)."""
    return nnx.eval_shape(lambda: VQGAN(config, rngs=nnx.Rngs(0)))


def vqgan_to_official_tree(model_or_state) -> dict:
    """A `VQGAN` (or its state) → the official `{"params": {"encoder", "decoder", "quantizer"}}` tree."""
    return to_official_tree(model_or_state)


def vqgan_from_official_tree(tree: Mapping, target, *, what: str = "tokenizer") -> nnx.State:
    """The official tokenizer tree → an `nnx.State` of `target`'s (a possibly abstract `VQGAN`)
    parameters; `ShapeDtypeStruct` leaves give an abstract state. Raises ValueError (prefixed by
    `what`) listing every missing, unexpected or mis-shaped key."""
    given = flatten_tree(_params(tree))
    target_flat = _param_flat(target)
    expected = flatten_tree(_params(to_official_tree(nnx.from_flat_state(list(target_flat.items())))))
    check_tree(given, expected, what)
    if not any(_abstract(v) for v in given.values()):
        return from_official_tree(nest_tree(given), nnx.from_flat_state(list(target_flat.items())))
    # Abstract: the same mapping (mgt.tokenizers.vqgan's), applied to ShapeDtypeStructs.
    official_of = _vqgan_official_map(target_flat)
    new = [(p, leaf.replace(_convert(given[official_of[p]], _value(leaf).dtype))) for p, leaf in target_flat.items()]
    return nnx.from_flat_state(new)
