"""Building blocks of the 2D VQGAN in the official MaskGIT architecture (Flax NNX, NHWC).

The encoder and decoder follow google-research/maskgit's VQGAN exactly, attention-free:

    encoder: Conv3x3(no bias) → per level i: R res blocks at base·mult[i] (+ 2x2 average pool,
             TF 'SAME', except after the last level) → R blocks → GroupNorm → swish → Conv1x1(+bias)
    decoder: Conv3x3(+bias) → R blocks → for i = L-1 … 0: R blocks at base·mult[i] (+ nearest x2
             upsample → Conv3x3(+bias) when i > 0) → GroupNorm → swish → Conv3x3(→ C, +bias)

Attribute names are readable (`conv_in`, `blocks`, `norm_out`, ...); `mgt.tokenizers.vqgan`
maps them to the official names (`Conv_0`, `ResBlock_N`, `GroupNorm_0`, ...).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def swish(x):
    return x * jax.nn.sigmoid(x)


def avg_pool_2x2_same(x):
    """2x2 average pooling, stride 2, 'SAME' padding, TensorFlow convention.

    Padding goes at the end (bottom / right) for odd sizes, and an edge cell is averaged over the
    image cells it covers only — padded cells are not counted (Flax's `avg_pool` counts them).

    Args:
      x: `[B, H, W, C]` any float dtype.
    Returns:
      `[B, ceil(H/2), ceil(W/2), C]`, same dtype.
    """
    b, h, w, c = x.shape
    ph, pw = h % 2, w % 2
    padded = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    summed = padded.reshape(b, (h + ph) // 2, 2, (w + pw) // 2, 2, c).sum(axis=(2, 4))
    # in-image cells per window: 2 everywhere, 1 in the last row / column of an odd size
    rows = np.full(((h + ph) // 2,), 2.0, np.float32)
    cols = np.full(((w + pw) // 2,), 2.0, np.float32)
    rows[-1] -= ph
    cols[-1] -= pw
    counts = (rows[:, None] * cols[None, :])[None, :, :, None]
    return summed / jnp.asarray(counts, x.dtype)


def upsample_nearest_2x(x):
    """`[B, H, W, C]` → `[B, 2H, 2W, C]` by repeating each pixel (nearest neighbour)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def upsample_nearest_2x_conv(conv: nnx.Conv, x):
    """`conv(upsample_nearest_2x(x))` for a 3x3 'SAME' `conv`, without building the upsampled image.

    An output pixel of row phase a and column phase b (its position mod 2) reads a 2x2 neighbourhood
    of `x`: along each axis, phase 0 reads source rows (i-1, i) with kernel rows (k0, k1 + k2) and
    phase 1 reads (i, i+1) with (k0 + k1, k2) — the taps that fall on the same source pixel summed
    once. Four 2x2 convolutions on `x` then do 16 multiply-adds per input channel for every four
    outputs instead of 36: 2.25x fewer FLOPs (about 1.8x faster on a CPU), the same sums in another
    order (float32 results agree to ~1e-6 relative). Gradients flow as through the plain form.

    Args:
      conv: an `nnx.Conv` with a 3x3 kernel and 'SAME' padding (`[3, 3, Cin, Cout]`).
      x: `[B, H, W, Cin]`.
    Returns:
      `[B, 2H, 2W, Cout]` in the conv's dtype.
    """
    if conv.kernel_size != (3, 3) or conv.padding != "SAME" or conv.strides not in (1, (1, 1)):
        raise ValueError(f"upsample_nearest_2x_conv needs a 3x3 'SAME' stride-1 conv; got kernel_size="
                         f"{conv.kernel_size}, padding={conv.padding!r}, strides={conv.strides}")
    dtype = conv.dtype or x.dtype
    kernel = conv.kernel[...].astype(dtype)
    x = x.astype(dtype)

    def fold(k, axis, phase):
        taps = [jax.lax.index_in_dim(k, i, axis, keepdims=False) for i in range(3)]
        pair = (taps[0], taps[1] + taps[2]) if phase == 0 else (taps[0] + taps[1], taps[2])
        return jnp.stack(pair, axis)

    pads = ((1, 0), (0, 1))  # phase 0 reads (i-1, i); phase 1 reads (i, i+1)
    rows = []
    for a in range(2):
        k_rows = fold(kernel, 0, a)
        cols = [jax.lax.conv_general_dilated(x, fold(k_rows, 1, b), (1, 1), (pads[a], pads[b]),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                             precision=conv.precision)
                for b in range(2)]
        rows.append(jnp.stack(cols, 3))  # [B, H, W, 2 (b), Cout]
    y = jnp.stack(rows, 2)  # [B, H, 2 (a), W, 2 (b), Cout]
    b, h, _, w, _, cout = y.shape
    y = y.reshape(b, 2 * h, 2 * w, cout)
    if conv.bias is not None:
        y = y + conv.bias[...].astype(dtype)
    return y


def _conv(cin, cout, k, *, use_bias, dtype, rngs):
    return nnx.Conv(
        cin, cout, kernel_size=(k, k), padding="SAME", use_bias=use_bias,
        dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
    )


NORMS = ("group", "position")


class PositionGroupNorm(nnx.GroupNorm):
    """GroupNorm whose statistics are taken over a group's channels at each position only, not over the
    whole image: `[..., C]` → the same shape. Its parameters are `nnx.GroupNorm`'s (`scale`, `bias`
    `[C]`), so checkpoints, official names and inflation are the same for both norms.

    Why: GroupNorm's image-wide statistics make every latent depend on the whole image, so the encoder
    gives an empty patch an image-dependent code (the captioned-shapes VQGAN gave all-black patches far
    from any shape ~8 codes per position, the moving-digits one 153 codes for empty cells). Per-position
    statistics let the tokens of a region depend on its receptive field alone, which is what a masked
    Transformer has to predict."""

    def __call__(self, x):
        c = x.shape[-1]
        grouped = x.astype(jnp.float32).reshape(x.shape[:-1] + (self.num_groups, c // self.num_groups))
        mean = grouped.mean(-1, keepdims=True)
        var = jnp.square(grouped - mean).mean(-1, keepdims=True)
        y = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        y = y * self.scale[...] + self.bias[...]
        return y.astype(self.dtype or x.dtype)


def make_norm(channels, *, num_groups, eps, dtype, rngs, norm: str = "group"):
    """A GroupNorm ("group": statistics over the whole image, the official layout) or a
    `PositionGroupNorm` ("position"), with `num_groups` groups of `channels`."""
    if channels % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide every channel count; got {channels} channels")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    cls = PositionGroupNorm if norm == "position" else nnx.GroupNorm
    return cls(channels, num_groups=num_groups, epsilon=eps, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class ResBlock(nnx.Module):
    """GroupNorm → swish → Conv3x3 → GroupNorm → swish → Conv3x3 (convs without bias).

    With `in_channels == out_channels` it returns `out + x`. Otherwise — the official quirk, baked
    into the released weights — the shortcut is a 1x1 conv (no bias) of the block's *output*, and
    the block returns `out + shortcut(out)`; its input is not added back.

    Official names: norm_0 → GroupNorm_0, conv_0 → Conv_0, norm_1 → GroupNorm_1, conv_1 → Conv_1,
    shortcut → Conv_2.
    """

    def __init__(self, in_channels: int, out_channels: int, *, num_groups: int = 32,
                 eps: float = 1e-6, dtype: Any = jnp.float32, norm: str = "group", rngs: nnx.Rngs):
        kw = dict(num_groups=num_groups, eps=eps, dtype=dtype, norm=norm, rngs=rngs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm_0 = make_norm(in_channels, **kw)
        self.conv_0 = _conv(in_channels, out_channels, 3, use_bias=False, dtype=dtype, rngs=rngs)
        self.norm_1 = make_norm(out_channels, **kw)
        self.conv_1 = _conv(out_channels, out_channels, 3, use_bias=False, dtype=dtype, rngs=rngs)
        self.shortcut = (
            _conv(out_channels, out_channels, 1, use_bias=False, dtype=dtype, rngs=rngs)
            if in_channels != out_channels else None
        )

    def __call__(self, x):
        """`[B, H, W, in_channels]` → `[B, H, W, out_channels]`."""
        out = self.conv_0(swish(self.norm_0(x)))
        out = self.conv_1(swish(self.norm_1(out)))
        if self.shortcut is not None:
            return out + self.shortcut(out)
        return out + x


class Encoder(nnx.Module):
    """Images `[B, H, W, C]` → latents `[B, H/f, W/f, embedding_dim]`, f = 2**(len(mults) - 1).

    Official names: conv_in → Conv_0, blocks[n] → ResBlock_n, norm_out → GroupNorm_0,
    conv_out → Conv_1.
    """

    def __init__(self, *, in_channels: int, base_channels: int, channel_multipliers: Sequence[int],
                 num_res_blocks: int, embedding_dim: int, num_groups: int = 32, eps: float = 1e-6,
                 dtype: Any = jnp.float32, norm: str = "group", rngs: nnx.Rngs):
        kw = dict(num_groups=num_groups, eps=eps, dtype=dtype, norm=norm, rngs=rngs)
        mults = tuple(channel_multipliers)
        self.num_levels = len(mults)
        self.num_res_blocks = num_res_blocks
        self.conv_in = _conv(in_channels, base_channels, 3, use_bias=False, dtype=dtype, rngs=rngs)
        blocks, width = [], base_channels
        for m in mults + (mults[-1],):  # the extra entry: the blocks after the last level
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(width, base_channels * m, **kw))
                width = base_channels * m
        self.blocks = nnx.List(blocks)
        self.norm_out = make_norm(width, **kw)
        self.conv_out = _conv(width, embedding_dim, 1, use_bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = self.conv_in(x)
        n = 0
        for level in range(self.num_levels + 1):
            for _ in range(self.num_res_blocks):
                x = self.blocks[n](x)
                n += 1
            if level < self.num_levels - 1:
                x = avg_pool_2x2_same(x)
        return self.conv_out(swish(self.norm_out(x)))


class Decoder(nnx.Module):
    """Latents `[B, h, w, embedding_dim]` → images `[B, h·f, w·f, out_channels]` (no activation).

    Official names: conv_in → Conv_0, blocks[n] → ResBlock_n, upsample_convs[j] → Conv_{j+1}
    (j = 0 is the deepest level), norm_out → GroupNorm_0, conv_out → Conv_{L} (L = len(mults)).
    """

    def __init__(self, *, out_channels: int, base_channels: int, channel_multipliers: Sequence[int],
                 num_res_blocks: int, embedding_dim: int, num_groups: int = 32, eps: float = 1e-6,
                 dtype: Any = jnp.float32, norm: str = "group", rngs: nnx.Rngs):
        kw = dict(num_groups=num_groups, eps=eps, dtype=dtype, norm=norm, rngs=rngs)
        mults = tuple(channel_multipliers)
        self.num_levels = len(mults)
        self.num_res_blocks = num_res_blocks
        width = base_channels * mults[-1]
        self.conv_in = _conv(embedding_dim, width, 3, use_bias=True, dtype=dtype, rngs=rngs)
        blocks, upsample_convs = [], []
        for _ in range(num_res_blocks):
            blocks.append(ResBlock(width, width, **kw))
        for i in reversed(range(self.num_levels)):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(width, base_channels * mults[i], **kw))
                width = base_channels * mults[i]
            if i > 0:
                upsample_convs.append(_conv(width, width, 3, use_bias=True, dtype=dtype, rngs=rngs))
        self.blocks = nnx.List(blocks)
        self.upsample_convs = nnx.List(upsample_convs)
        self.norm_out = make_norm(width, **kw)
        self.conv_out = _conv(width, out_channels, 3, use_bias=True, dtype=dtype, rngs=rngs)

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
                x = upsample_nearest_2x_conv(self.upsample_convs[j], x)
        return self.conv_out(swish(self.norm_out(x)))
