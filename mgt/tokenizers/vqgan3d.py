"""MAGVIT's 3D-VQ video tokenizer (registered as "vqgan3d").

Videos are float32 `[B, T, H, W, C]` in [0, 1]; tokens are int32 `[B, T/f_t, H/f, W/f]`, with
f = patch_size · 2**(levels - 1) and f_t = temporal_patch_size · 2**(`temporal_downsample` flags set) (causal models:
`1 + (T-1)/f_t` token frames — the first frame on its own). The defaults are MAGVIT-B's UCF-101
tokenizer (google-research/magvit `vqgan3d_ucf101_config.py`: filters 64, multipliers (1, 2, 2, 4),
temporal downsampling (True, True, False), 2 residual blocks, 1024 codes of 256 dimensions, the VQ
entropy loss with ratio 0.1 and temperature 0.01): 16 × 128² → 4 × 16 × 16 tokens. `base_channels=128`
is MAGVIT-L. `quantizer="fsq"` or `"lfq"` swaps the quantizer (its options in `quantizer_options`,
e.g. `{"levels": (8, 5, 5, 5)}` or `{"num_bits": 10}`). `patch_size=p > 1` and `temporal_patch_size=r > 1`
(not in MAGVIT; ViViT's tubelets) fold r × p × p pixels into one cell before the first convolution
and unfold them after the last, so every 3D convolution runs at 1/(r·p²) of the pixels: what makes
small video tokenizers train on a CPU. `token_group=g > 1` hands the Transformer each g × g block of a
frame's codes as one cell of g² code levels (tokens `[B, t, h/g, w/g, g²]`): a g²-times shorter
sequence for the same codes.

Training terms beyond the reconstruction (3D or per-frame 2D StyleGAN discriminator, R1, LeCAM,
per-frame perceptual loss) come from `training_objective`, which reuses the image objective.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import einops
import jax.numpy as jnp
from flax import nnx

from mgt.profiling import scoped
from mgt.tokenizers.base import register_tokenizer
from mgt.tokenizers.quantizers import FiniteScalarQuantizer, LookupFreeQuantizer, VectorQuantizer
from mgt.tokenizers.vqgan import make_config, reconstruction_losses
from mgt.tokenizers.vqgan3d_layers import Decoder3D, Encoder3D, check_video_shape
from mgt.tokenizers.vqgan_layers import NORMS
from mgt.tokens import TokenSpec, check_token_values

__all__ = ["VQGAN3DConfig", "VQGAN3D"]

QUANTIZERS = ("vq", "fsq", "lfq")


@dataclasses.dataclass(frozen=True)
class VQGAN3DConfig:
    """Sizes and loss weights of a 3D VQGAN. Defaults: MAGVIT-B on UCF-101.

    Attributes:
      video_channels: C of the frames (3 for RGB, 1 for grey).
      base_channels: width of the first level (MAGVIT's `filters`: 64 for B, 128 for L).
      channel_multipliers: one entry per level; the spatial factor is 2**(len - 1).
      temporal_downsample: one flag per downsampling (len(channel_multipliers) - 1): halve time there too.
      num_res_blocks: residual blocks per level (and in the bottleneck).
      patch_size: p, pixels folded per side into one cell before the encoder (space-to-depth) and
        unfolded after the decoder; 1 (MAGVIT) convolves the pixels themselves.
      temporal_patch_size: r, frames folded into one cell the same way (not with `causal`).
      embedding_dim: D, the latent size (for FSQ / LFQ the quantizer's input size).
      codebook_size: V for `quantizer="vq"`; FSQ and LFQ derive it from their options.
      num_groups, norm_eps: GroupNorm.
      encoder_kernel_size: k of the encoder's k×k×k convolutions (MAGVIT: 3). 1, with `patch_size` > 1,
        encodes every cell from its own pixel tubelet alone (with `norm="position"`): an empty cell then
        always gets the same code, whatever else the clip holds; the decoder keeps its 3×3×3 context.
      norm: "group" (statistics over the clip, or each frame when causal) or "position" (over each
        position's channels: a token depends on its receptive field alone; `vqgan_layers.PositionGroupNorm`).
      causal: time-causal convolutions and per-frame norms (MAGVIT-v2); see `vqgan3d_layers`.
      shortcut: "input" (MAGVIT) or "output" (the official 2D MaskGIT layout; inflated tokenizers).
      quantizer: "vq", "fsq" or "lfq".
      token_group: g, each g × g block of codes one cell of g² levels in `encode` / `decode` (1: plain codes).
      commitment_cost, codebook_cost, entropy_cost, entropy_temperature: VQ loss weights.
      reconstruction_loss, reconstruction_weight: "l2" or "l1", and its weight.
      dtype: compute dtype of encoder and decoder; parameters and the quantizer stay float32.
      quantizer_options: extra keyword arguments of the quantizer.
    """

    video_channels: int = 3
    base_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)
    temporal_downsample: tuple[bool, ...] = (True, True, False)
    num_res_blocks: int = 2
    patch_size: int = 1
    temporal_patch_size: int = 1
    embedding_dim: int = 256
    codebook_size: int = 1024
    num_groups: int = 32
    norm_eps: float = 1e-6
    norm: str = "group"
    encoder_kernel_size: int = 3
    causal: bool = False
    shortcut: str = "input"
    quantizer: str = "vq"
    token_group: int = 1
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
        object.__setattr__(self, "temporal_downsample", tuple(bool(t) for t in self.temporal_downsample))
        options = dict(self.quantizer_options)
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        object.__setattr__(self, "quantizer_options", tuple(sorted(options.items())))
        if not self.channel_multipliers:
            raise ValueError("VQGAN3DConfig.channel_multipliers must have at least one entry")
        if len(self.temporal_downsample) != len(self.channel_multipliers) - 1:
            raise ValueError(f"VQGAN3DConfig.temporal_downsample needs one flag per downsampling "
                             f"({len(self.channel_multipliers) - 1} for channel_multipliers="
                             f"{self.channel_multipliers}), got {self.temporal_downsample}")
        for name in ("video_channels", "base_channels", "num_res_blocks", "embedding_dim", "codebook_size",
                     "num_groups", "patch_size", "temporal_patch_size", "token_group"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"VQGAN3DConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name, value, allowed in (("shortcut", self.shortcut, ("input", "output")), ("norm", self.norm, NORMS),
                                     ("quantizer", self.quantizer, QUANTIZERS),
                                     ("reconstruction_loss", self.reconstruction_loss, ("l1", "l2"))):
            if value not in allowed:
                raise ValueError(f"VQGAN3DConfig.{name} must be one of {list(allowed)}, got {value!r}")
        if self.encoder_kernel_size < 1 or self.encoder_kernel_size % 2 == 0:
            raise ValueError(f"VQGAN3DConfig.encoder_kernel_size must be odd and >= 1, got {self.encoder_kernel_size}")
        if self.causal and self.temporal_patch_size > 1:
            raise ValueError("VQGAN3DConfig: causal=True tokenizes the first frame alone; it takes "
                             f"temporal_patch_size=1, got {self.temporal_patch_size}")
        if jnp.dtype(self.dtype) not in (jnp.float32, jnp.bfloat16, jnp.float16):
            raise ValueError(f"VQGAN3DConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")

    @property
    def downsample_factor(self) -> int:
        return self.patch_size * 2 ** (len(self.channel_multipliers) - 1)

    @property
    def temporal_factor(self) -> int:
        return self.temporal_patch_size * 2 ** sum(self.temporal_downsample)

    def token_frames(self, frames: int) -> int:
        """Token frames of a clip of `frames` frames."""
        f = self.temporal_factor
        return 1 + (frames - 1) // f if self.causal else frames // f


@register_tokenizer("vqgan3d")
class VQGAN3D(nnx.Module):
    """`encoder` (3D CNN) → `quantizer` → `decoder` (3D CNN). Build with a `VQGAN3DConfig`, a mapping,
    keyword overrides, or both: `VQGAN3D(base_channels=16, num_groups=4, rngs=nnx.Rngs(0))`."""

    def __init__(self, config: VQGAN3DConfig | Mapping[str, Any] | None = None, *,
                 rngs: nnx.Rngs | None = None, **overrides):
        config = make_config(VQGAN3DConfig, config, overrides, "VQGAN3D")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.downsample_factor, self.temporal_factor = config.downsample_factor, config.temporal_factor
        sizes = dict(base_channels=config.base_channels, channel_multipliers=config.channel_multipliers,
                     temporal_downsample=config.temporal_downsample, num_res_blocks=config.num_res_blocks,
                     embedding_dim=config.embedding_dim, num_groups=config.num_groups, eps=config.norm_eps,
                     causal=config.causal, shortcut=config.shortcut, dtype=jnp.dtype(config.dtype),
                     norm=config.norm)
        folded = config.video_channels * config.patch_size ** 2 * config.temporal_patch_size
        self.encoder = Encoder3D(in_channels=folded, kernel_size=config.encoder_kernel_size, rngs=rngs, **sizes)
        self.decoder = Decoder3D(out_channels=folded, rngs=rngs, **sizes)
        self.quantizer = _make_quantizer(config, rngs)
        self.codebook_size = int(self.quantizer.codebook_size)
        self.num_levels = config.token_group ** 2

    # ---- protocol ------------------------------------------------------------------------------
    def token_spec(self, input_shape: tuple[int, ...] = (16, 128, 128, 3)) -> TokenSpec:
        """`(T, H, W, C)` → `TokenSpec(grid=(t, H/f/g, W/f/g), codebook_size=V, num_levels=g²)`."""
        self._check_shape((1,) + tuple(input_shape), "input_shape")
        t, h, w = input_shape[:3]
        f, g = self.downsample_factor, self.config.token_group
        return TokenSpec(grid=(self.config.token_frames(t), h // f // g, w // f // g), codebook_size=self.codebook_size,
                         num_levels=self.num_levels)

    def encode(self, videos):
        """float32 `[B, T, H, W, C]` in [0, 1] → int32 tokens `[B, t, H/f, W/f]` (`[B, t, H/f/g, W/f/g, g²]`
        with `token_group` g > 1)."""
        codes = self.quantizer.encode(self.encode_latents(videos)).astype(jnp.int32)
        g = self.config.token_group
        return einops.rearrange(codes, "b t (h i) (w j) -> b t h w (i j)", i=g, j=g) if g > 1 else codes

    def decode(self, tokens):
        """int32 `[B, t, h, w]` (`[B, t, h, w, g²]` with `token_group` g > 1) codes in [0, V) → float32 videos
        `[B, T, h·f·g, w·f·g, C]`, not clipped."""
        g = self.config.token_group
        if jnp.ndim(tokens) != (4 if g == 1 else 5) or (g > 1 and jnp.shape(tokens)[-1] != g * g):
            expected = "[batch, frames, height, width]" + ("" if g == 1 else f" + [{g * g}] (token_group={g})")
            raise ValueError(f"tokens must be {expected}, got shape {tuple(jnp.shape(tokens))}")
        if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
            raise ValueError(f"tokens must be an integer array, got dtype {jnp.result_type(tokens)}")
        check_token_values(tokens, self.codebook_size, None, "tokens")
        if g > 1:
            tokens = einops.rearrange(tokens, "b t h w (i j) -> b t (h i) (w j)", i=g, j=g)
        return self.decode_codes(self.quantizer.decode(tokens))

    # ---- continuous parts ----------------------------------------------------------------------
    @scoped("vqgan3d_encoder")
    def encode_latents(self, videos):
        """float32 `[B, T, H, W, C]` → float32 latents `[B, t, H/f, W/f, D]`."""
        self._check_shape(jnp.shape(videos), "videos")
        x = jnp.asarray(videos).astype(jnp.dtype(self.config.dtype))
        p, r = self.config.patch_size, self.config.temporal_patch_size
        if p > 1 or r > 1:
            x = einops.rearrange(x, "b (t r) (h p) (w q) c -> b t h w (r p q c)", r=r, p=p, q=p)
        return self.encoder(x).astype(jnp.float32)

    @scoped("vqgan3d_decoder")
    def decode_codes(self, codes):
        """Code vectors `[B, t, h, w, D]` → float32 `[B, T, h·f, w·f, C]`."""
        shape = tuple(jnp.shape(codes))
        if len(shape) != 5 or shape[-1] != self.config.embedding_dim:
            raise ValueError(f"codes must be [batch, t, h, w, {self.config.embedding_dim}], got shape {shape}")
        x = self.decoder(jnp.asarray(codes).astype(jnp.dtype(self.config.dtype)))
        p, r = self.config.patch_size, self.config.temporal_patch_size
        if p > 1 or r > 1:
            x = einops.rearrange(x, "b t h w (r p q c) -> b (t r) (h p) (w q) c", r=r, p=p, q=p)
        return x.astype(jnp.float32)

    def __call__(self, videos, *, train: bool = False, rng=None):
        """`[B, T, H, W, C]` → (reconstruction float32 `[B, T, H, W, C]`, QuantizerOutput)."""
        q = self.quantizer(self.encode_latents(videos), train=train, rng=rng)
        return self.decode_codes(q.quantized), q

    def training_losses(self, x, *, rng=None):
        """Training-mode forward pass → `(reconstruction, losses, metrics)` as the 2D VQGAN's."""
        return reconstruction_losses(self, x, rng=rng)

    @staticmethod
    def training_objective(train_config, input_shape, seed: int):
        """The video objective: the image objective's terms on video (`mgt.tokenizers.video_losses`)."""
        from mgt.tokenizers.video_losses import VideoTokenizerObjective

        return VideoTokenizerObjective(train_config, input_shape, seed)

    def _check_shape(self, shape, name):
        check_video_shape(shape, channels=self.config.video_channels,
                          factor=self.downsample_factor * self.config.token_group,
                          time_factor=self.temporal_factor, causal=self.config.causal, name=name)


def _make_quantizer(config: VQGAN3DConfig, rngs: nnx.Rngs):
    options = dict(config.quantizer_options)
    try:
        if config.quantizer == "vq":
            return VectorQuantizer(config.codebook_size, config.embedding_dim, rngs=rngs,
                                   commitment_cost=config.commitment_cost, codebook_cost=config.codebook_cost,
                                   entropy_cost=config.entropy_cost,
                                   entropy_temperature=config.entropy_temperature, **options)
        if config.quantizer == "fsq":
            if "levels" not in options:
                raise ValueError("quantizer='fsq' needs quantizer_options.levels, e.g. (8, 5, 5, 5)")
            return FiniteScalarQuantizer(options.pop("levels"), dim=config.embedding_dim, rngs=rngs, **options)
        if "num_bits" not in options:
            raise ValueError("quantizer='lfq' needs quantizer_options.num_bits, e.g. 10")
        return LookupFreeQuantizer(options.pop("num_bits"), dim=config.embedding_dim, rngs=rngs,
                                   commitment_cost=config.commitment_cost, entropy_cost=config.entropy_cost,
                                   **options)
    except TypeError as e:
        raise ValueError(f"VQGAN3DConfig.quantizer_options {options} do not fit quantizer "
                         f"{config.quantizer!r}: {e}") from None
