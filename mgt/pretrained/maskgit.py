"""The official MaskGIT ImageNet models (google-research/maskgit) as an mgt pipeline.

    from mgt.pretrained import maskgit

    pipe = maskgit.load("tokenizer_imagenet256_checkpoint", "maskgit_imagenet256_checkpoint")
    images = pipe.generate([207, 360], jax.random.key(0))           # float32 [2, 256, 256, 3] in [0, 1]
    edit = pipe.edit(image, (64, 64, 96, 96), label=279, rng=jax.random.key(1))   # edit.image [256, 256, 3]
    pipe.save("my_tokenizer", "my_transformer")                      # back to the official format

`load` reads the official checkpoint files (Flax msgpack; no TensorFlow), infers the model sizes from
the parameter shapes (`mgt.pretrained.maskgit_convert`), and builds mgt's `MaskedTransformer`
(block_style="maskgit", class-token conditioning) and `VQGAN` with the official weights. With float32
weights, `official_logits`, `tokenizer.encode` and `tokenizer.decode` reproduce the official model.

Every computation is one jitted function per input shape with the parameters passed as arguments
(nothing is baked into the compiled code), run under `jax.default_matmul_precision(matmul_precision)`
— "highest" by default, so that GPUs do not round float32 matmuls and convolutions to TF32 and the
outputs keep their parity with the official float32 model; pass `matmul_precision=None` for the
backend's default (faster on GPUs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.decoding import DecodeOptions, _validate, decode_loop, example_keys
from mgt.modalities.image.editing import EditResult, box_to_token_mask, composite
from mgt.pretrained.maskgit_convert import (
    abstract_transformer,
    abstract_vqgan,
    infer_transformer_config,
    infer_vqgan_config,
    read_checkpoint,
    transformer_from_official_tree,
    transformer_to_official_tree,
    vqgan_from_official_tree,
    vqgan_to_official_tree,
    write_checkpoint,
)
from mgt.sampling import LayerWeightsCache, model_logits_fn
from mgt.tokenizers.vqgan import VQGAN, VQGANConfig
from mgt.tokens import TokenSpec, check_token_values
from mgt.transformer import MaskedTransformer, TransformerConfig

__all__ = ["MaskGITPipeline", "MaskGITTokenizer", "load", "from_official_trees"]

_TRANSFORMER_FIELDS = frozenset(f.name for f in dataclasses.fields(TransformerConfig))
_VQGAN_FIELDS = frozenset(f.name for f in dataclasses.fields(VQGANConfig))
# decode options the pipeline sets itself
_RESERVED_DECODE_OPTIONS = ("mask_id", "guidance_scale", "stages")


# ---- loading -----------------------------------------------------------------------------------
def load(tokenizer_path, transformer_path, *, num_classes: int | None = None,
         matmul_precision: str | None = "highest", **overrides) -> "MaskGITPipeline":
    """Load the official MaskGIT checkpoint files into a `MaskGITPipeline`.

    Args:
      tokenizer_path: the VQGAN file (e.g. `tokenizer_imagenet256_checkpoint`).
      transformer_path: the transformer file (e.g. `maskgit_imagenet256_checkpoint`).
      num_classes: class tokens in the transformer's vocabulary; default: inferred from the
        tokenizer's codebook size V as `vocab − V − 1` (1000 for the ImageNet files).
      matmul_precision: `jax.default_matmul_precision` for every computation ("highest" keeps
        float32 parity on GPUs; None: the backend's default).
      **overrides: fields of `TransformerConfig` (e.g. `dtype="bfloat16"`, `attention_impl`,
        `grid`) and of `VQGANConfig` (e.g. `num_res_blocks`, `channel_multipliers`, `num_groups`);
        a name in both (`dtype`) applies to both.
    Returns:
      the pipeline, holding both models with the checkpoint's weights.
    Raises:
      FileNotFoundError: a path does not exist.
      ValueError: naming the file, for a corrupted or truncated file, sizes that cannot be inferred,
        or parameters that are missing, unexpected or mis-shaped (all listed).
    """
    tokenizer_what = f"tokenizer_path={os.fspath(tokenizer_path)!r}"
    transformer_what = f"transformer_path={os.fspath(transformer_path)!r}"
    _split_overrides(overrides)  # unknown names fail before any file is read
    tokenizer_tree = read_checkpoint(tokenizer_path, argument="tokenizer_path")
    transformer_tree = read_checkpoint(transformer_path, argument="transformer_path")
    return from_official_trees(tokenizer_tree, transformer_tree, num_classes=num_classes,
                               matmul_precision=matmul_precision, tokenizer_what=tokenizer_what,
                               transformer_what=transformer_what, **overrides)


def from_official_trees(tokenizer_tree: Mapping, transformer_tree: Mapping, *, num_classes: int | None = None,
                        matmul_precision: str | None = "highest", tokenizer_what: str = "tokenizer tree",
                        transformer_what: str = "transformer tree", **overrides) -> "MaskGITPipeline":
    """`load` for parameter trees already in memory (nested dicts of arrays in the official layout,
    with or without the top `"params"` key). `*_what` name the trees in error messages."""
    transformer_overrides, tokenizer_overrides = _split_overrides(overrides)
    vqgan_config = infer_vqgan_config(tokenizer_tree, what=tokenizer_what, **tokenizer_overrides)
    if num_classes is None and "codebook_size" not in transformer_overrides:
        # the tokenizer's codebook fixes the split of the vocabulary [codes | classes | mask]
        transformer_overrides["codebook_size"] = vqgan_config.codebook_size
    transformer_config = infer_transformer_config(transformer_tree, num_classes=num_classes, what=transformer_what,
                                                  **transformer_overrides)
    if vqgan_config.codebook_size != transformer_config.codebook_size:
        vocab = transformer_config.spec.vocab_size
        raise ValueError(
            f"{tokenizer_what} has {vqgan_config.codebook_size} codes but {transformer_what} has "
            f"{transformer_config.codebook_size} (vocabulary {vocab} = codes + num_classes="
            f"{transformer_config.num_classes} + 1 mask); pass num_classes={vocab - vqgan_config.codebook_size - 1} "
            "if the classes differ, or check that the two files belong together"
        )
    vqgan = _build(abstract_vqgan(vqgan_config), vqgan_from_official_tree, tokenizer_tree, tokenizer_what)
    transformer = _build(abstract_transformer(transformer_config), transformer_from_official_tree,
                         transformer_tree, transformer_what)
    return MaskGITPipeline(transformer, vqgan, matmul_precision=matmul_precision)


def _split_overrides(overrides: Mapping[str, Any]) -> tuple[dict, dict]:
    unknown = sorted(set(overrides) - _TRANSFORMER_FIELDS - _VQGAN_FIELDS)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; "
                         f"expected TransformerConfig fields {sorted(_TRANSFORMER_FIELDS)} "
                         f"or VQGANConfig fields {sorted(_VQGAN_FIELDS)}")
    return ({k: v for k, v in overrides.items() if k in _TRANSFORMER_FIELDS},
            {k: v for k, v in overrides.items() if k in _VQGAN_FIELDS})


def _build(abstract: nnx.Module, convert, tree: Mapping, what: str):
    """Fill an abstract module with the converted weights, without initialising it first."""
    graphdef, _ = nnx.split(abstract)
    return nnx.merge(graphdef, convert(tree, abstract, what=what))


def _as_float_images(images) -> jax.Array:
    images = jnp.asarray(images)
    return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)


def _precision(precision):
    return contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)


# ---- the tokenizer -----------------------------------------------------------------------------
class MaskGITTokenizer:
    """The pipeline's `VQGAN` (`.model`) behind jitted `encode` / `decode`.

    One compiled function per input shape; the parameters are arguments, so weights changed on
    `.model` (e.g. with `nnx.update`) are used by the next call. Satisfies `mgt.tokenizers.Tokenizer`.
    """

    def __init__(self, model: VQGAN, *, matmul_precision: str | None = "highest"):
        self.model = model
        self.config: VQGANConfig = model.config
        self.codebook_size = model.codebook_size
        self.num_levels = 1
        self.downsample_factor = model.downsample_factor
        self.matmul_precision = matmul_precision

    def token_spec(self, input_shape: tuple[int, ...]) -> TokenSpec:
        """`(H, W, 3)` → `TokenSpec(grid=(H/f, W/f), codebook_size=V)`."""
        return self.model.token_spec(input_shape)

    def encode(self, images) -> jax.Array:
        """float32 `[B, H, W, 3]` in [0, 1] (uint8 is scaled) → int32 tokens `[B, H/f, W/f]` (nearest codes)."""
        graphdef, state = nnx.split(self.model)
        with _precision(self.matmul_precision):
            return _vqgan_encode_jit(graphdef, state, _as_float_images(images))

    def encode_latents(self, images) -> jax.Array:
        """float32 `[B, H, W, 3]` in [0, 1] (uint8 is scaled) → float32 pre-quantization latents `[B, H/f, W/f, D]`."""
        graphdef, state = nnx.split(self.model)
        with _precision(self.matmul_precision):
            return _vqgan_latents_jit(graphdef, state, _as_float_images(images))

    def decode(self, tokens) -> jax.Array:
        """int32 `[B, h, w]` codes in [0, V) → float32 images `[B, h·f, w·f, 3]` (not clipped)."""
        check_token_values(tokens, self.codebook_size, None, "tokens")
        graphdef, state = nnx.split(self.model)
        with _precision(self.matmul_precision):
            return _vqgan_decode_jit(graphdef, state, jnp.asarray(tokens))


@functools.partial(jax.jit, static_argnums=(0,))
def _vqgan_encode_jit(graphdef, state, images):
    return nnx.merge(graphdef, state, copy=True).encode(images)


@functools.partial(jax.jit, static_argnums=(0,))
def _vqgan_latents_jit(graphdef, state, images):
    return nnx.merge(graphdef, state, copy=True).encode_latents(images)


@functools.partial(jax.jit, static_argnums=(0,))
def _vqgan_decode_jit(graphdef, state, tokens):
    return nnx.merge(graphdef, state, copy=True).decode(tokens)


# ---- the pipeline ------------------------------------------------------------------------------
class MaskGITPipeline:
    """Class-conditional image generation and editing with the official MaskGIT models.

    Attributes:
      transformer: the `MaskedTransformer` (maskgit blocks, class token first).
      transformer_config: its `TransformerConfig`.
      tokenizer: a `MaskGITTokenizer` (jitted encode / decode) around `vqgan`.
      vqgan, vqgan_config: the `VQGAN` and its `VQGANConfig`.
      image_size: the side of the square images in pixels (256 for ImageNet-256); `(H, W)` if not square.
      image_shape: `(H, W)`.
      grid: the token grid `(h, w)`.
      codebook_size, num_classes: V and C of the vocabulary `[codes | classes | mask]`.
      vocab_size, mask_id: V + C + 1 and its last id.
      matmul_precision: see the module docstring.
    """

    def __init__(self, transformer: MaskedTransformer, vqgan: VQGAN, *, matmul_precision: str | None = "highest"):
        cfg = transformer.config
        if cfg.block_style != "maskgit" or cfg.conditioning != "class_token" or cfg.num_levels != 1:
            raise ValueError("MaskGITPipeline needs a MaskedTransformer with block_style='maskgit', "
                             f"conditioning='class_token' and one code level; got block_style={cfg.block_style!r}, "
                             f"conditioning={cfg.conditioning!r}, num_levels={cfg.num_levels}")
        if len(cfg.grid) != 2:
            raise ValueError(f"the transformer's grid {cfg.grid} is not a 2D image grid")
        if vqgan.codebook_size != cfg.codebook_size:
            raise ValueError(f"the VQGAN has {vqgan.codebook_size} codes; the transformer expects {cfg.codebook_size}")
        self.transformer = transformer
        self.transformer_config = cfg
        self.vqgan = vqgan
        self.vqgan_config = vqgan.config
        self.matmul_precision = matmul_precision
        self.tokenizer = MaskGITTokenizer(vqgan, matmul_precision=matmul_precision)
        self._layers = LayerWeightsCache()
        self.spec = cfg.spec
        self.grid = cfg.grid
        f = vqgan.downsample_factor
        self.image_shape = (cfg.grid[0] * f, cfg.grid[1] * f)
        self.image_size = self.image_shape[0] if self.image_shape[0] == self.image_shape[1] else self.image_shape
        self.codebook_size = cfg.codebook_size
        self.num_classes = cfg.num_classes
        self.vocab_size = self.spec.vocab_size
        self.mask_id = self.spec.mask_id

    def __repr__(self):
        c = self.transformer_config
        return (f"MaskGITPipeline(image_size={self.image_size}, grid={self.grid}, layers={c.num_layers}, "
                f"hidden={c.hidden_dim}, codes={self.codebook_size}, classes={self.num_classes})")

    # ---- logits ----------------------------------------------------------------------------
    def official_logits(self, input_ids) -> jax.Array:
        """The transformer's logits in the official layout, deterministic (no dropout).

        Args:
          input_ids: int `[B, 1 + h·w]`: the class token (`codebook_size + label`) at position 0,
            then the codes in raster order, `mask_id` (= vocab − 1) where masked. As in the official
            embedding lookup, negative ids count from the end (-1 is the mask id).
        Returns:
          float32 `[B, 1 + h·w, vocab]` logits over the full vocabulary (codes, classes, mask).
        """
        ids = np.asarray(input_ids)
        seq_len = self.transformer_config.seq_len
        if ids.ndim != 2 or ids.shape[1] != seq_len or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be an integer array [batch, {seq_len}] (class token + "
                             f"{seq_len - 1} codes), got shape {ids.shape} and dtype {ids.dtype}")
        ids = np.where(ids < 0, ids + self.vocab_size, ids)
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise ValueError(f"input_ids holds ids {np.unique(np.asarray(input_ids)[bad])[:5].tolist()} outside "
                             f"[-{self.vocab_size}, {self.vocab_size})")
        graphdef, state = nnx.split(self.transformer)
        with _precision(self.matmul_precision):
            return _official_logits_jit(graphdef, state, jnp.asarray(ids, jnp.int32))

    # ---- generation ------------------------------------------------------------------------
    def generate(self, labels, rng, *, num_steps: int = 16, choice_temperature: float = 4.5, guidance: float = 0.0,
                 temperature: float = 1.0, schedule: str = "cosine", return_tokens: bool = False,
                 **decode_kwargs):
        """Class-conditional generation: the official sampler, then the VQGAN decoder, in one jitted
        function per (batch size, options).

        Args:
          labels: int `[B]` ImageNet classes in [0, num_classes).
          rng: one PRNG key, or B keys (example b's image depends only on its key and label).
          num_steps, choice_temperature, temperature, schedule: the official sampler's settings
            (defaults: 16 steps, 4.5, 1.0, cosine).
          guidance: must be 0 — the official model has no null class to guide against.
          return_tokens: also return the int32 tokens `[B, h, w]`.
          **decode_kwargs: other `mgt.decoding.decode` options (top_k, top_p, temperature_final,
            confidence, order, return_history, ...).
        Returns:
          float32 images `[B, H, W, 3]` in [0, 1]; with `return_tokens`, `(images, tokens)`; with
          `return_history=True`, the history `[T, B, h, w]` is appended.
        """
        labels = self._check_labels(labels, "labels")
        tokens = self.spec.masked(labels.shape[0])
        opts = self._options(tokens, guidance, num_steps=num_steps, choice_temperature=choice_temperature,
                             temperature=temperature, schedule=schedule, **decode_kwargs)
        images, out_tokens, history = self._sample(tokens, rng, labels, opts)
        out = (images, out_tokens) if return_tokens else (images,)
        if opts.return_history:
            out = out + (history,)
        return out[0] if len(out) == 1 else out

    def edit(self, image, box, label, rng, *, num_steps: int = 12, start_step: int = 2,
             choice_temperature: float = 4.5, temperature: float = 1.0, guidance: float = 0.0, grow: int = 1,
             blur_radius: float | None = None, **decode_kwargs) -> EditResult:
        """The official class-conditional edit: regenerate a box of the image as class `label`.

        The same recipe as `mgt.modalities.image.editing.class_edit` (and the same result for the
        same key): encode, mask the token cells covering the pixel box grown by `grow` cells, decode
        `num_steps` = 12 steps from `start_step` = 2, decode to pixels, clip, and blend into the input
        with the blurred token mask (default radius `image_size / 16 − 1`). Here the decoding loop
        and the VQGAN decoder run as one jitted function with the parameters as arguments.

        Args:
          image: float32 `[H, W, 3]` or `[B, H, W, 3]` in [0, 1] (uint8 is scaled), at the
            pipeline's image size.
          box: `(top, left, height, width)` in pixels.
          label: the target class, an int or int `[B]`.
          rng: one PRNG key or B keys.
          guidance: must be 0 (no null class).
          **decode_kwargs: other `mgt.decoding.decode` options.
        Returns:
          an `EditResult` (image, generated, tokens, token_mask, history); without a batch axis when
          `image` had none.
        """
        image = jnp.asarray(image)
        unbatched = image.ndim == 3
        if unbatched:
            image = image[None]
        if image.ndim != 4 or image.shape[-1] != 3 or tuple(image.shape[1:3]) != self.image_shape:
            raise ValueError(f"image must be [H, W, 3] or [B, H, W, 3] with H, W = {self.image_shape}, "
                             f"got shape {tuple(jnp.shape(image))}")
        image = _as_float_images(image)
        b = image.shape[0]
        label_arr = np.asarray(label)
        labels = self._check_labels(np.full((b,), label_arr) if label_arr.ndim == 0 else label_arr, "label")
        if labels.shape[0] != b:
            raise ValueError(f"label has {labels.shape[0]} entries; expected one int or {b} (the batch size)")

        tokens = self.tokenizer.encode(image)
        cell_mask = box_to_token_mask(box, self.image_shape, self.grid, grow=grow)  # [h, w]
        masked = jnp.where(jnp.asarray(cell_mask)[None], self.mask_id, tokens)
        opts = self._options(masked, guidance, num_steps=num_steps, start_step=start_step,
                             choice_temperature=choice_temperature, temperature=temperature, **decode_kwargs)
        generated, out_tokens, history = self._sample(masked, rng, labels, opts)
        token_mask = jnp.broadcast_to(jnp.asarray(cell_mask), (b,) + self.grid)
        blended = composite(image, generated, token_mask, blur_radius=blur_radius)
        result = EditResult(blended, generated, out_tokens, token_mask, history)
        if unbatched:
            result = EditResult(blended[0], generated[0], out_tokens[0], token_mask[0],
                                None if history is None else history[:, 0])
        return result

    # ---- export ----------------------------------------------------------------------------
    def official_trees(self) -> tuple[dict, dict]:
        """`(tokenizer_tree, transformer_tree)`: the current weights as the official variables dicts
        `{"params": ...}` (numpy arrays), e.g. to export a fine-tuned model."""
        to_numpy = lambda tree: jax.tree.map(np.asarray, tree)
        return (to_numpy(vqgan_to_official_tree(self.vqgan)), to_numpy(transformer_to_official_tree(self.transformer)))

    def save(self, tokenizer_path, transformer_path) -> None:
        """Write both models as official checkpoint files (`flax.serialization.to_bytes({"params": ...})`),
        readable by `load` and by the official code."""
        tokenizer_tree, transformer_tree = self.official_trees()
        write_checkpoint(tokenizer_path, tokenizer_tree)
        write_checkpoint(transformer_path, transformer_tree)

    # ---- internals -------------------------------------------------------------------------
    def _check_labels(self, labels, name: str) -> jax.Array:
        arr = np.asarray(labels)
        if arr.ndim != 1 or arr.shape[0] < 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be a non-empty integer array [batch], "
                             f"got shape {arr.shape} and dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= self.num_classes:
            raise ValueError(f"{name} holds classes "
                             f"{sorted(set(arr[(arr < 0) | (arr >= self.num_classes)].tolist()))[:5]} "
                             f"outside [0, {self.num_classes})")
        return jnp.asarray(arr, jnp.int32)

    def _options(self, tokens, guidance, **kwargs) -> DecodeOptions:
        if guidance != 0.0:
            raise ValueError(f"guidance={guidance}: the official MaskGIT transformer has no null class, so "
                             "classifier-free guidance is not available; pass guidance=0.0")
        reserved = sorted(set(kwargs) & set(_RESERVED_DECODE_OPTIONS))
        if reserved:
            raise ValueError(f"option(s) {reserved} are set by the pipeline; use `guidance` for guidance")
        names = {f.name for f in dataclasses.fields(DecodeOptions)} - set(_RESERVED_DECODE_OPTIONS)
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(f"unknown decoding option(s) {unknown}; expected some of {sorted(names)}")
        if "num_steps" in kwargs:
            kwargs["num_steps"] = int(kwargs["num_steps"])
        for name in ("choice_temperature", "temperature"):
            if name in kwargs:
                kwargs[name] = float(kwargs[name])
        opts = DecodeOptions(mask_id=self.mask_id, **kwargs)
        _validate(opts, tokens)
        return opts

    def _sample(self, tokens, rng, labels, opts):
        keys = example_keys(rng, tokens.shape[0])
        t_graphdef, t_state = nnx.split(self.transformer)
        v_graphdef, v_state = nnx.split(self.vqgan)
        layers = self._layers.get(self.transformer)
        with _precision(self.matmul_precision):
            return _sample_and_decode_jit(t_graphdef, t_state, layers, v_graphdef, v_state,
                                          jnp.asarray(tokens, jnp.int32), keys, labels, opts)


@functools.partial(jax.jit, static_argnums=(0,))
def _official_logits_jit(graphdef, state, input_ids):
    model = nnx.merge(graphdef, state, copy=True)
    logits = model.sequence_logits(input_ids[:, 1:, None], prefix_ids=input_ids[:, 0], deterministic=True)
    return logits[:, :, 0, :]  # [B, 1 + N, vocab]


@functools.partial(jax.jit, static_argnums=(0, 3, 8))
def _sample_and_decode_jit(t_graphdef, t_state, layers, v_graphdef, v_state, tokens, keys, labels, opts):
    """Decoding loop + VQGAN decoder → (images [B, H, W, 3] in [0, 1], tokens [B, h, w], history | None)."""
    # model_logits_fn re-merges the transformer inside every call: the decoding loop calls it from
    # inside its own lax.scan, and NNX modules must not cross trace levels.
    logits_fn = model_logits_fn(nnx.merge(t_graphdef, t_state, copy=True), labels=labels).replace(layers=layers)
    out = decode_loop(logits_fn, tokens, keys, opts)
    out_tokens, history = out if opts.return_history else (out, None)
    images = nnx.merge(v_graphdef, v_state, copy=True).decode(out_tokens)
    return jnp.clip(images, 0.0, 1.0), out_tokens, history
