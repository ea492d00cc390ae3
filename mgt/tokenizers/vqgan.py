"""The 2D VQGAN image tokenizer of MaskGIT (registered as "vqgan"), and its official-weights mapping.

Images are float32 NHWC in [0, 1]; tokens are int32 `[B, H/f, W/f]` with f = 2**(levels - 1).
The default sizes are the official ImageNet tokenizer (54,515,587 parameters, f = 16, 1024 codes);
small images use 3 or 4 levels (f = 4 or 8) and a narrower base, e.g.

    VQGAN(base_channels=32, channel_multipliers=(1, 2, 2), num_groups=8, codebook_size=256,
          embedding_dim=32, rngs=nnx.Rngs(0))

`to_official_tree` / `from_official_tree` translate between this module's `nnx.Param` state and the
official checkpoint layout `{'params': {'encoder': {...}, 'decoder': {...}, 'quantizer': {...}}}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mgt.profiling import scoped
from mgt.registry import flatten_dict, nest_dict
from mgt.tokenizers.base import register_tokenizer
from mgt.tokenizers.quantizers import VectorQuantizer
from mgt.tokenizers.vqgan_layers import NORMS, Decoder, Encoder
from mgt.tokens import TokenSpec, check_token_values

__all__ = ["VQGANConfig", "VQGAN", "to_official_tree", "from_official_tree"]


@dataclasses.dataclass(frozen=True)
class VQGANConfig:
    """Sizes and loss weights of a VQGAN. Defaults: the official MaskGIT ImageNet tokenizer.

    Attributes:
      image_channels: C of the images (3 for RGB).
      base_channels: width of the first level; level i has `base_channels * channel_multipliers[i]`.
      channel_multipliers: one entry per level; the downsampling factor is 2**(len - 1).
      num_res_blocks: residual blocks per level (and in the bottleneck).
      embedding_dim: D, the latent / code vector size.
      codebook_size: V, the number of codes.
      num_groups: GroupNorm groups; must divide every width.
      norm_eps: GroupNorm epsilon.
      norm: "group" (GroupNorm, statistics over the whole image: the official layout) or "position"
        (the same groups and parameters, statistics over each position's channels: a token then depends
        on its receptive field alone; see `vqgan_layers.PositionGroupNorm`).
      commitment_cost, codebook_cost, entropy_cost, entropy_temperature: quantizer loss weights
        (official recipe: 0.25, 1.0, 0.1, 0.01).
      reconstruction_loss: "l2" (mean squared error) or "l1" (mean absolute error).
      reconstruction_weight: weight of the reconstruction term in `training_losses`.
      dtype: compute dtype of the encoder and decoder ("float32" or "bfloat16"); parameters and the
        quantizer stay float32.
      quantizer_options: extra keyword arguments of `VectorQuantizer` (e.g. `kmeans_init=True`,
        `dead_code_threshold=0.1`); options that add parameters (`lookup_dim`) or make the codebook
        non-trainable (`use_ema`) leave the official layout.
    """

    image_channels: int = 3
    base_channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    embedding_dim: int = 256
    codebook_size: int = 1024
    num_groups: int = 32
    norm_eps: float = 1e-6
    norm: str = "group"
    commitment_cost: float = 0.25
    codebook_cost: float = 1.0
    entropy_cost: float = 0.1
    entropy_temperature: float = 0.01
    reconstruction_loss: str = "l2"
    reconstruction_weight: float = 1.0
    dtype: str = "float32"
    quantizer_options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "channel_multipliers", tuple(int(m) for m in self.channel_multipliers))
        # kept as sorted (name, value) pairs so the config, and the module's graphdef, stay hashable
        object.__setattr__(self, "quantizer_options", tuple(sorted(dict(self.quantizer_options).items())))
        if len(self.channel_multipliers) < 1:
            raise ValueError("VQGANConfig.channel_multipliers must have at least one entry")
        for name in ("image_channels", "base_channels", "num_res_blocks", "embedding_dim", "codebook_size",
                     "num_groups"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VQGANConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.norm not in NORMS:
            raise ValueError(f"VQGANConfig.norm must be one of {list(NORMS)}, got {self.norm!r}")
        if self.reconstruction_loss not in ("l1", "l2"):
            raise ValueError(f"VQGANConfig.reconstruction_loss must be 'l1' or 'l2', got {self.reconstruction_loss!r}")
        if jnp.dtype(self.dtype) not in (jnp.float32, jnp.bfloat16, jnp.float16):
            raise ValueError(f"VQGANConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)


@register_tokenizer("vqgan")
class VQGAN(nnx.Module):
    """MaskGIT's VQGAN: `encoder` → `quantizer` (nearest code) → `decoder`.

    Build with a `VQGANConfig`, keyword overrides of its fields, or both:
    `VQGAN(config, rngs=nnx.Rngs(0))`, `VQGAN(base_channels=32, num_groups=8, rngs=...)`.
    """

    def __init__(self, config: VQGANConfig | Mapping[str, Any] | None = None, *,
                 rngs: nnx.Rngs | None = None, **overrides):
        config = make_config(VQGANConfig, config, overrides, "VQGAN")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.codebook_size = config.codebook_size
        self.num_levels = 1  # code levels per cell (not resolution levels)
        self.downsample_factor = config.downsample_factor
        sizes = dict(base_channels=config.base_channels, channel_multipliers=config.channel_multipliers,
                     num_res_blocks=config.num_res_blocks, embedding_dim=config.embedding_dim,
                     num_groups=config.num_groups, eps=config.norm_eps, dtype=jnp.dtype(config.dtype),
                     norm=config.norm)
        self.encoder = Encoder(in_channels=config.image_channels, rngs=rngs, **sizes)
        self.decoder = Decoder(out_channels=config.image_channels, rngs=rngs, **sizes)
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.embedding_dim, rngs=rngs,
            commitment_cost=config.commitment_cost, codebook_cost=config.codebook_cost,
            entropy_cost=config.entropy_cost, entropy_temperature=config.entropy_temperature,
            **dict(config.quantizer_options),
        )

    # ---- protocol ------------------------------------------------------------------------------
    def token_spec(self, input_shape: tuple[int, ...] = (256, 256, 3)) -> TokenSpec:
        """`(H, W, C)` → `TokenSpec(grid=(H/f, W/f), codebook_size=V)`."""
        self._check_shape((1,) + tuple(input_shape), "input_shape", batched=False)
        f = self.downsample_factor
        return TokenSpec(grid=(input_shape[0] // f, input_shape[1] // f), codebook_size=self.codebook_size)

    def encode(self, images):
        """float32 `[B, H, W, C]` in [0, 1] → int32 tokens `[B, H/f, W/f]`."""
        return self.quantizer.encode(self.encode_latents(images)).astype(jnp.int32)

    def decode(self, tokens):
        """int32 `[B, h, w]` codes in [0, V) → float32 images `[B, h·f, w·f, C]`, not clipped."""
        if jnp.ndim(tokens) != 3:
            raise ValueError(f"tokens must be [batch, height, width], got shape {tuple(jnp.shape(tokens))}")
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise ValueError(f"tokens must be an integer array, got dtype {jnp.result_type(tokens)}")
        check_token_values(tokens, self.codebook_size, None, "tokens")  # concrete values only
        return self.decode_codes(self.quantizer.decode(tokens))

    # ---- continuous parts ----------------------------------------------------------------------
    @scoped("vqgan_encoder")
    def encode_latents(self, images):
        """float32 `[B, H, W, C]` → float32 pre-quantization latents `[B, H/f, W/f, D]`."""
        self._check_shape(jnp.shape(images), "images")
        z = self.encoder(jnp.asarray(images).astype(jnp.dtype(self.config.dtype)))
        return z.astype(jnp.float32)

    @scoped("vqgan_decoder")
    def decode_codes(self, codes):
        """Code vectors `[B, h, w, D]` (e.g. `quantizer.decode(tokens)`) → float32 `[B, h·f, w·f, C]`."""
        shape = tuple(jnp.shape(codes))
        if len(shape) != 4 or shape[-1] != self.config.embedding_dim:
            raise ValueError(f"codes must be [batch, h, w, {self.config.embedding_dim}], got shape {shape}")
        x = self.decoder(jnp.asarray(codes).astype(jnp.dtype(self.config.dtype)))
        return x.astype(jnp.float32)

    def __call__(self, images, *, train: bool = False, rng=None):
        """`[B, H, W, C]` → (reconstruction float32 `[B, H, W, C]`, QuantizerOutput).

        `rng` (optional) seeds the quantizer's training-time sampling (k-means init, dead codes)."""
        q = self.quantizer(self.encode_latents(images), train=train, rng=rng)
        return self.decode_codes(q.quantized), q

    def training_losses(self, x, *, rng=None):
        """Training-mode forward pass; `rng` (optional) goes to the quantizer's sampling.

        Returns `(reconstruction [B, H, W, C] float32, losses, metrics)`; `losses` holds the weighted
        `reconstruction` term and the quantizer's (already weighted) terms as `quantizer/<name>`.
        """
        return reconstruction_losses(self, x, rng=rng)

    @staticmethod
    def training_objective(train_config, input_shape, seed: int):
        """The terms beyond `training_losses` (perceptual, StyleGAN discriminator, R1, LeCAM): the
        2D image objective of `mgt.tokenizers.image_losses`."""
        from mgt.tokenizers.image_losses import ImageTokenizerObjective

        return ImageTokenizerObjective(train_config, input_shape, seed)

    def _check_shape(self, shape, name, *, batched: bool = True):
        shape = tuple(shape)
        c, f = self.config.image_channels, self.downsample_factor
        what = name if batched else f"{name} (without batch)"
        expected = f"[batch, H, W, {c}]" if batched else f"(H, W, {c})"
        if len(shape) != 4 or shape[-1] != c:
            got = shape if batched else shape[1:]
            raise ValueError(f"{what} must be {expected}, got shape {got}")
        if shape[1] % f or shape[2] % f:
            raise ValueError(f"{what}: height and width must be multiples of the downsampling factor {f}, "
                             f"got {shape[1]}x{shape[2]}")


def reconstruction_losses(model, x, *, rng=None):
    """The training-mode forward pass of a VQ autoencoder (2D or 3D) → `(reconstruction, losses, metrics)`.

    `model(x, train=True, rng=rng)` must return `(reconstruction, QuantizerOutput)` and `model.config`
    carry `reconstruction_loss` ("l1" / "l2") and `reconstruction_weight`. `losses` holds the weighted
    `reconstruction` term and the quantizer's (already weighted) terms as `quantizer/<name>`."""
    recon, q = model(x, train=True, rng=rng)
    err = recon - jnp.asarray(x, jnp.float32)
    per = jnp.abs(err) if model.config.reconstruction_loss == "l1" else jnp.square(err)
    losses = {"reconstruction": model.config.reconstruction_weight * jnp.mean(per)}
    losses.update({f"quantizer/{k}": v for k, v in q.losses.items()})
    metrics = {f"quantizer/{k}": v for k, v in q.metrics.items()}
    metrics["mse"] = jnp.mean(jnp.square(err))
    return recon, losses, metrics


def make_config(config_class, config, overrides: dict, what: str):
    """A frozen config dataclass from an instance, a mapping or None, plus keyword `overrides`
    (ValueError naming unknown options of `what`)."""
    if config is None:
        config = config_class()
    elif isinstance(config, Mapping):
        overrides = {**dict(config), **overrides}
        config = config_class()
    elif not isinstance(config, config_class):
        raise ValueError(f"config must be a {config_class.__name__}, a mapping or None, got {type(config).__name__}")
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {unknown}; expected some of {sorted(fields)}")
    return dataclasses.replace(config, **overrides)


# ---- official checkpoint layout ------------------------------------------------------------------
_BLOCK_NAMES = {"norm_0": "GroupNorm_0", "conv_0": "Conv_0", "norm_1": "GroupNorm_1", "conv_1": "Conv_1",
                "shortcut": "Conv_2"}


def _to_official_path(path: tuple, num_upsample: int) -> tuple[str, ...]:
    """One nnx param path, e.g. ('encoder', 'blocks', 4, 'shortcut', 'kernel'), → the official path
    ('encoder', 'ResBlock_4', 'Conv_2', 'kernel'). Raises KeyError for paths outside the layout."""
    path = tuple(str(p) for p in path)
    head, rest = path[0], path[1:]
    if head == "quantizer" and rest == ("codebook",):
        return path
    if head in ("encoder", "decoder") and rest:
        if rest[0] == "blocks" and len(rest) == 4 and rest[2] in _BLOCK_NAMES:
            return (head, f"ResBlock_{int(rest[1])}", _BLOCK_NAMES[rest[2]], rest[3])
        if len(rest) == 2:
            names = {"conv_in": "Conv_0", "norm_out": "GroupNorm_0",
                     "conv_out": "Conv_1" if head == "encoder" else f"Conv_{num_upsample + 1}"}
            if rest[0] in names:
                return (head, names[rest[0]], rest[1])
        if head == "decoder" and rest[0] == "upsample_convs" and len(rest) == 3:
            return (head, f"Conv_{int(rest[1]) + 1}", rest[2])
    raise KeyError("/".join(path))


def _param_flat(model_or_state) -> dict[tuple, Any]:
    """A VQGAN (or its `nnx.State`) → {nnx path: array-like} of its `nnx.Param` leaves."""
    if isinstance(model_or_state, nnx.Module):
        model_or_state = nnx.state(model_or_state, nnx.Param)
    flat = {}
    for path, leaf in nnx.to_flat_state(model_or_state):
        if isinstance(leaf, nnx.Variable):
            if not isinstance(leaf, nnx.Param):
                continue
            leaf = leaf.get_value()
        flat[tuple(path)] = leaf
    return flat


def _official_map(flat: Mapping[tuple, Any]) -> dict[tuple, tuple]:
    ups = [p for p in flat if len(p) > 1 and p[0] == "decoder" and p[1] == "upsample_convs"]
    num_upsample = len({int(p[2]) for p in ups})
    mapping, unknown = {}, []
    for path in flat:
        try:
            mapping[path] = _to_official_path(path, num_upsample)
        except (KeyError, ValueError):
            unknown.append("/".join(map(str, path)))
    if unknown:
        raise ValueError(f"parameters with no official name: {sorted(unknown)}")
    return mapping


_nest, _flatten = nest_dict, flatten_dict


def to_official_tree(model_or_state) -> dict:
    """A VQGAN or its `nnx.State` → the official variables dict `{'params': {'encoder': {'Conv_0':
    {'kernel': ...}, 'ResBlock_0': {...}, ...}, 'decoder': {...}, 'quantizer': {'codebook': ...}}}`.

    Leaves are passed through unchanged (arrays, or `ShapeDtypeStruct`s for an abstract model); the
    layouts agree (conv kernels HWIO, GroupNorm scale/bias), so no transposes are needed. Raises
    ValueError for a parameter with no official name.
    """
    flat = _param_flat(model_or_state)
    mapping = _official_map(flat)
    return {"params": _nest({mapping[p]: v for p, v in flat.items()})}


def _describe(leaf) -> str:
    return f"{tuple(np.shape(leaf))}"


def from_official_tree(tree: Mapping, target) -> nnx.State:
    """The official variables dict (with or without the top `'params'` key) → an `nnx.State` of
    `target`'s parameters, ready for `nnx.update(target, state)`.

    `target` is a VQGAN (possibly abstract, from `nnx.eval_shape`) or its `nnx.Param` state; it fixes
    the expected names and shapes. Raises ValueError listing every missing, unexpected or mis-shaped
    key. Values are converted to each target parameter's dtype.
    """
    if "params" in tree and isinstance(tree["params"], Mapping):
        tree = tree["params"]
    given = _flatten(tree)
    if isinstance(target, nnx.Module):
        target = nnx.state(target, nnx.Param)
    flat = _param_flat(target)
    mapping = _official_map(flat)
    expected = {off: path for path, off in mapping.items()}
    missing = sorted("/".join(k) for k in expected if k not in given)
    unexpected = sorted("/".join(k) for k in given if k not in expected)
    misshaped = sorted(
        f"{'/'.join(off)}: got {_describe(given[off])}, expected {_describe(flat[path])}"
        for off, path in expected.items()
        if off in given and tuple(np.shape(given[off])) != tuple(np.shape(flat[path]))
    )
    if missing or unexpected or misshaped:
        parts = [f"{name} ({len(keys)}): {keys}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
        raise ValueError("official tree does not match the VQGAN: " + "; ".join(parts))
    new_flat = []
    for path, leaf in nnx.to_flat_state(target):
        if isinstance(leaf, nnx.Variable) and not isinstance(leaf, nnx.Param):
            continue
        current = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
        value = jnp.asarray(given[mapping[tuple(path)]], dtype=current.dtype)
        new_flat.append((path, leaf.replace(value) if isinstance(leaf, nnx.Variable) else value))
    return nnx.from_flat_state(new_flat)

