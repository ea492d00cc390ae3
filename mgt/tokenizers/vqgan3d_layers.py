"""Building blocks of the MAGVIT-style 3D VQGAN (Flax NNX, videos `[B, T, H, W, C]`).

The layout mirrors the 2D VQGAN of `mgt.tokenizers.vqgan_layers` module for module — the same
`conv_in`, `blocks`, `upsample_convs`, `norm_out`, `conv_out` — so a trained image tokenizer inflates
into a video one name for name (`mgt.tokenizers.inflation`):

    encoder: Conv3x3x3(no bias) → per level i: R res blocks at base·mult[i] (+ average pool 2×2 in
             space, and ×2 in time where temporal_downsample[i], except after the last level)
             → R blocks → GroupNorm → swish → Conv1x1x1(+bias)
    decoder: Conv3x3x3(+bias) → R blocks → for i = L-1 … 0: R blocks at base·mult[i] (+ nearest
             upsample ×2 in space, and in time where temporal_downsample[i-1], → Conv3x3x3(+bias)
             when i > 0) → GroupNorm → swish → Conv3x3x3(→ C, +bias)

Two switches:

- `causal=True` (MAGVIT-v2): convolutions pad time at the front only (k-1 frames), GroupNorm
  normalises each frame on its own, temporal pooling pads the front with a copy of the first frame
  and temporal upsampling drops the first repeated frame. Frame t then depends on frames ≤ t only:
  the first frame is tokenized on its own (T = 1 + k·f_t frames → 1 + k token frames), so one
  tokenizer serves images (T = 1) and videos, and appending frames never changes earlier tokens.
- `shortcut`: "input" (MAGVIT: `out + conv1x1(x)` when the width changes) or "output" (the
  official 2D MaskGIT quirk, `out + conv1x1(out)`; inflated image tokenizers keep it).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
from flax import nnx

from mgt.tokenizers import conv_matmul
from mgt.tokenizers.vqgan_layers import make_norm, swish


def _conv3d(cin, cout, k, *, use_bias, causal, dtype, rngs):
    """A k×k×k convolution (k odd): 'SAME' in space; in time 'SAME', or front-only when `causal`."""
    half = k // 2
    time_pad = (k - 1, 0) if causal else (half, half)
    # on a CPU as matmuls over gathered taps (`conv_matmul`): XLA's CPU convolutions are slow at these sizes
    return nnx.Conv(cin, cout, kernel_size=(k, k, k), padding=(time_pad, (half, half), (half, half)),
                    use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
                    conv_general_dilated=conv_matmul.conv_general_dilated)


class FrameGroupNorm(nnx.GroupNorm):
    """GroupNorm over a whole clip (time, height, width and the channels of a group), or over each
    frame on its own when `per_frame` (causal models: a frame's statistics never see later frames).
    The parameters are `nnx.GroupNorm`'s (`scale`, `bias` `[C]`), so 2D weights copy over unchanged."""

    def __init__(self, channels: int, *, num_groups: int, eps: float, per_frame: bool, dtype, rngs: nnx.Rngs):
        if channels % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide every channel count; got {channels} channels")
        super().__init__(channels, num_groups=num_groups, epsilon=eps, dtype=dtype, param_dtype=jnp.float32,
                         rngs=rngs)
        self.per_frame = per_frame

    def __call__(self, x, **kwargs):
        """`[B, T, H, W, C]` → the same shape."""
        if not self.per_frame:
            return super().__call__(x, **kwargs)
        b, t = x.shape[:2]
        return super().__call__(x.reshape((b * t,) + x.shape[2:]), **kwargs).reshape(x.shape)


def make_norm3d(channels: int, *, num_groups: int, eps: float, per_frame: bool, norm: str, dtype, rngs: nnx.Rngs):
    """"group": a `FrameGroupNorm` (per frame when `per_frame`); "position": `vqgan_layers.PositionGroupNorm`
    (statistics at each position: local in time and space, so causal too)."""
    if norm == "position":
        return make_norm(channels, num_groups=num_groups, eps=eps, dtype=dtype, rngs=rngs, norm=norm)
    return FrameGroupNorm(channels, num_groups=num_groups, eps=eps, per_frame=per_frame, dtype=dtype, rngs=rngs)


class ResBlock3D(nnx.Module):
    """GroupNorm → swish → Conv3x3x3 → GroupNorm → swish → Conv3x3x3 (convs without bias), plus the
    shortcut: identity, or a 1×1×1 conv (no bias) of the input ("input") or of the output ("output")
    when the width changes. Attribute names as the 2D `ResBlock`'s."""

    def __init__(self, in_channels: int, out_channels: int, *, num_groups: int, eps: float, causal: bool,
                 shortcut: str, dtype: Any, norm: str = "group", kernel_size: int = 3, rngs: nnx.Rngs):
        norm = dict(num_groups=num_groups, eps=eps, per_frame=causal, norm=norm, dtype=dtype, rngs=rngs)
        conv = dict(use_bias=False, causal=causal, dtype=dtype, rngs=rngs)
        self.in_channels, self.out_channels, self.shortcut_of = in_channels, out_channels, shortcut
        self.norm_0 = make_norm3d(in_channels, **norm)
        self.conv_0 = _conv3d(in_channels, out_channels, kernel_size, **conv)
        self.norm_1 = make_norm3d(out_channels, **norm)
        self.conv_1 = _conv3d(out_channels, out_channels, kernel_size, **conv)
        self.shortcut = (_conv3d(in_channels if shortcut == "input" else out_channels, out_channels, 1, **conv)
                         if in_channels != out_channels else None)

    def __call__(self, x):
        """`[B, T, H, W, in_channels]` → `[B, T, H, W, out_channels]`."""
        out = self.conv_0(swish(self.norm_0(x)))
        out = self.conv_1(swish(self.norm_1(out)))
        if self.shortcut is None:
            return out + x
        return out + self.shortcut(x if self.shortcut_of == "input" else out)


def downsample(x, *, temporal: bool, causal: bool):
    """Average pooling 2×2 in space (and ×2 in time when `temporal`).

    `[B, T, H, W, C]` → `[B, T', H/2, W/2, C]`: T' = T/2 (T even), or 1 + (T-1)/2 when `causal` (T odd:
    the first frame is pooled with a copy of itself, so it stays on its own)."""
    b, t, h, w, c = x.shape
    x = x.reshape(b, t, h // 2, 2, w // 2, 2, c).mean(axis=(3, 5))
    if not temporal:
        return x
    if causal:
        x = jnp.concatenate([x[:, :1], x], axis=1)
    t = x.shape[1]
    return x.reshape(b, t // 2, 2, h // 2, w // 2, c).mean(axis=2)


def upsample(x, *, temporal: bool, causal: bool):
    """Nearest-neighbour ×2 in space (and in time when `temporal`; a causal model drops the first
    repeated frame so the first token frame stays one frame: T → 2T - 1). `[B, T, H, W, C]`."""
    x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
    if temporal:
        x = jnp.repeat(x, 2, axis=1)
        if causal:
            x = x[:, 1:]
    return x


class Encoder3D(nnx.Module):
    """Videos `[B, T, H, W, C]` → latents `[B, T/f_t, H/f, W/f, embedding_dim]` (f = 2**(L-1), f_t = 2 to
    the number of temporal downsamplings; causal: `1 + (T-1)/f_t` frames). `kernel_size`: of its
    convolutions (3, MAGVIT; 1 on folded patches encodes every cell from its own pixels alone)."""

    def __init__(self, *, in_channels: int, base_channels: int, channel_multipliers: Sequence[int],
                 temporal_downsample: Sequence[bool], num_res_blocks: int, embedding_dim: int, num_groups: int,
                 eps: float, causal: bool, shortcut: str, dtype: Any, norm: str = "group", kernel_size: int = 3,
                 rngs: nnx.Rngs):
        block = dict(num_groups=num_groups, eps=eps, causal=causal, shortcut=shortcut, dtype=dtype, norm=norm,
                     kernel_size=kernel_size, rngs=rngs)
        mults = tuple(channel_multipliers)
        self.num_levels, self.num_res_blocks = len(mults), num_res_blocks
        self.temporal_downsample, self.causal = tuple(bool(t) for t in temporal_downsample), causal
        self.conv_in = _conv3d(in_channels, base_channels, kernel_size, use_bias=False, causal=causal, dtype=dtype,
                               rngs=rngs)
        blocks, width = [], base_channels
        for m in mults + (mults[-1],):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock3D(width, base_channels * m, **block))
                width = base_channels * m
        self.blocks = nnx.List(blocks)
        self.norm_out = make_norm3d(width, num_groups=num_groups, eps=eps, per_frame=causal, norm=norm, dtype=dtype,
                                    rngs=rngs)
        self.conv_out = _conv3d(width, embedding_dim, 1, use_bias=True, causal=causal, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = self.conv_in(x)
        n = 0
        for level in range(self.num_levels + 1):
            for _ in range(self.num_res_blocks):
                x = self.blocks[n](x)
                n += 1
            if level < self.num_levels - 1:
                x = downsample(x, temporal=self.temporal_downsample[level], causal=self.causal)
        return self.conv_out(swish(self.norm_out(x)))


class Decoder3D(nnx.Module):
    """Latents `[B, t, h, w, embedding_dim]` → videos `[B, T, H, W, out_channels]` (no activation)."""

    def __init__(self, *, out_channels: int, base_channels: int, channel_multipliers: Sequence[int],
                 temporal_downsample: Sequence[bool], num_res_blocks: int, embedding_dim: int, num_groups: int,
                 eps: float, causal: bool, shortcut: str, dtype: Any, norm: str = "group", rngs: nnx.Rngs):
        block = dict(num_groups=num_groups, eps=eps, causal=causal, shortcut=shortcut, dtype=dtype, norm=norm,
                     rngs=rngs)
        conv = dict(causal=causal, dtype=dtype, rngs=rngs)
        mults = tuple(channel_multipliers)
        self.num_levels, self.num_res_blocks = len(mults), num_res_blocks
        self.temporal_downsample, self.causal = tuple(bool(t) for t in temporal_downsample), causal
        width = base_channels * mults[-1]
        self.conv_in = _conv3d(embedding_dim, width, 3, use_bias=True, **conv)
        blocks, upsample_convs = [ResBlock3D(width, width, **block) for _ in range(num_res_blocks)], []
        for i in reversed(range(self.num_levels)):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock3D(width, base_channels * mults[i], **block))
                width = base_channels * mults[i]
            if i > 0:
                upsample_convs.append(_conv3d(width, width, 3, use_bias=True, **conv))
        self.blocks = nnx.List(blocks)
        self.upsample_convs = nnx.List(upsample_convs)
        self.norm_out = make_norm3d(width, num_groups=num_groups, eps=eps, per_frame=causal, norm=norm, dtype=dtype,
                                    rngs=rngs)
        self.conv_out = _conv3d(width, out_channels, 3, use_bias=True, **conv)

    def __call__(self, z):
        x = self.conv_in(z)
        n = 0
        for _ in range(self.num_res_blocks):
            x = self.blocks[n](x)
            n += 1
        for j, i in enumerate(reversed(range(self.num_levels))):
            for _ in range(self.num_res_blocks):
                x = self.blocks[n](x)
                n += 1
            if i > 0:
                x = upsample(x, temporal=self.temporal_downsample[i - 1], causal=self.causal)
                x = self.upsample_convs[j](x)
        return self.conv_out(swish(self.norm_out(x)))


def check_video_shape(shape, *, channels: int, factor: int, time_factor: int, causal: bool, name: str) -> None:
    """Raise ValueError unless `shape` is `[B, T, H, W, channels]` with H, W multiples of `factor` and T a
    multiple of `time_factor` (causal: T - 1 a multiple)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 5 or shape[-1] != channels:
        raise ValueError(f"{name} must be [batch, frames, H, W, {channels}], got shape {shape}")
    if shape[2] % factor or shape[3] % factor:
        raise ValueError(f"{name}: height and width must be multiples of the spatial downsampling factor {factor}, "
                         f"got {shape[2]}x{shape[3]}")
    t = shape[1] - 1 if causal else shape[1]
    if t % time_factor or shape[1] < 1:
        what = "frames - 1" if causal else "frames"
        raise ValueError(f"{name}: {what} must be a multiple of the temporal downsampling factor {time_factor} "
                         f"(causal={causal}), got {shape[1]} frames")


__all__ = ["Decoder3D", "Encoder3D", "FrameGroupNorm", "ResBlock3D", "check_video_shape", "downsample", "upsample"]
