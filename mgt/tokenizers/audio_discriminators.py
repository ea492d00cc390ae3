"""Audio discriminators (DAC's): a multi-period discriminator (HiFi-GAN MPD) and a multi-resolution
complex-STFT discriminator in frequency bands (DAC's MRD, with EnCodec's MS-STFT time dilations as an
option), and the least-squares GAN and feature-matching losses.

Every sub-discriminator returns `(logits, [feature maps])`; `AudioDiscriminator` concatenates their
lists. Inputs are mono float32 `[B, S]`; convolutions are NHWC over (time, frequency or period).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mgt.tokenizers.audio_spectral import stft

__all__ = ["WNConv2d", "PeriodDiscriminator", "MultiPeriodDiscriminator", "STFTDiscriminator",
           "MultiScaleSTFTDiscriminator", "AudioDiscriminator", "mpd_channels", "lsgan_generator_loss",
           "lsgan_discriminator_loss", "feature_matching_loss", "DAC_BANDS", "DISCRIMINATORS"]

DAC_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))  # MRD bands, fractions of the bins
DISCRIMINATORS = ("mpd", "msstft")
_MPD_MULTIPLIERS = (1, 4, 16, 32, 32)  # DAC's MPD widths 32, 128, 512, 1024, 1024 over a base of 32


# ---- discriminators --------------------------------------------------------------------------------
def _leaky_relu(x):
    return jax.nn.leaky_relu(x, negative_slope=0.1)  # HiFi-GAN / DAC slope


class WNConv2d(nnx.Module):
    """NHWC 2D convolution with optional weight normalisation (w = scale · v / |v| per output channel), as
    DAC's `WNConv2d`. Kernel initialised like torch's conv default (uniform ±1/√fan_in), bias zero.
    float32 `[B, H, W, in]` → `[B, H', W', out]` (explicit `padding` ((top, bottom), (left, right)))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], *,
                 strides: tuple[int, int] = (1, 1), dilation: tuple[int, int] = (1, 1),
                 padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0)),
                 weight_norm: bool = True, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(in_channels * kernel_size[0] * kernel_size[1])
        kernel = jax.random.uniform(rngs.params(), (*kernel_size, in_channels, out_channels), jnp.float32,
                                    -bound, bound)
        self.kernel = nnx.Param(kernel)
        # weight-norm gain starts at |v|, so the initial weights are v itself
        self.scale = nnx.Param(jnp.sqrt(jnp.sum(kernel ** 2, axis=(0, 1, 2)))) if weight_norm else None
        self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32))
        self.strides, self.dilation = tuple(strides), tuple(dilation)
        self.padding = tuple(tuple(p) for p in padding)

    def __call__(self, x):
        kernel = self.kernel[...]
        if self.scale is not None:
            kernel = kernel * (self.scale[...] * jax.lax.rsqrt(jnp.sum(kernel ** 2, axis=(0, 1, 2)) + 1e-12))
        y = jax.lax.conv_general_dilated(x, kernel, self.strides, self.padding, rhs_dilation=self.dilation,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.bias[...]


def mpd_channels(base: int = 32, max_channels: int = 1024) -> tuple[int, ...]:
    """Widths of an MPD stack: base · (1, 4, 16, 32, 32) capped at `max_channels` (DAC: base 32 → 32 … 1024)."""
    return tuple(min(base * m, max_channels) for m in _MPD_MULTIPLIERS)


class PeriodDiscriminator(nnx.Module):
    """HiFi-GAN's period discriminator: audio `[B, S]` reflect-padded on the right to a multiple of
    `period`, seen as an image `[B, S / period, period, 1]`; conv (5, 1) stride (3, 1) for every width in
    `channels` but the last (stride 1), leaky ReLU 0.1 after each, then conv (3, 1) → 1 channel.
    Returns `(logits [B, H, period, 1], [feature maps after each conv])`, float32. (DAC pads a whole
    period more when S is already a multiple; here nothing is padded then.)"""

    def __init__(self, period: int, channels: Sequence[int] = mpd_channels(), *, weight_norm: bool = True,
                 rngs: nnx.Rngs):
        self.period = int(period)
        convs, width = [], 1
        for i, out in enumerate(channels):
            stride = 1 if i == len(channels) - 1 else 3
            convs.append(WNConv2d(width, out, (5, 1), strides=(stride, 1), padding=((2, 2), (0, 0)),
                                  weight_norm=weight_norm, rngs=rngs))
            width = out
        self.convs = nnx.List(convs)
        self.conv_post = WNConv2d(width, 1, (3, 1), padding=((1, 1), (0, 0)), weight_norm=weight_norm, rngs=rngs)

    def __call__(self, audio):
        pad = -audio.shape[1] % self.period
        if pad:
            audio = jnp.pad(audio, ((0, 0), (0, pad)), mode="reflect")
        x = audio.reshape(audio.shape[0], -1, self.period, 1)
        features = []
        for conv in self.convs:
            x = _leaky_relu(conv(x))
            features.append(x)
        return self.conv_post(x), features


class MultiPeriodDiscriminator(nnx.Module):
    """One `PeriodDiscriminator` per period: audio `[B, S]` → a list of `(logits, features)`, one per period."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: Sequence[int] = mpd_channels(), *,
                 weight_norm: bool = True, rngs: nnx.Rngs):
        self.discriminators = nnx.List([PeriodDiscriminator(p, channels, weight_norm=weight_norm, rngs=rngs)
                                        for p in periods])

    def __call__(self, audio):
        return [d(audio) for d in self.discriminators]


def _band_bins(window_length: int, bands, what: str) -> tuple[tuple[int, int], ...]:
    n_bins = window_length // 2 + 1
    bins = tuple((int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands)  # DAC's rounding (down)
    if any(hi <= lo for lo, hi in bins):
        raise ValueError(f"{what}={tuple(tuple(b) for b in bands)}: window {window_length} ({n_bins} bins) "
                         f"leaves an empty band {bins}; expected wider bands or a longer window")
    return bins


class STFTDiscriminator(nnx.Module):
    """DAC's MRD / EnCodec's MS-STFT sub-discriminator on the complex STFT (window `window_length`, hop /4).

    The spectrogram `[B, frames, bins]` becomes 2 channels (real, imag), is cut into frequency `bands`
    (fractions of the bins; DAC's five by default) and each band runs its own stack: conv (3, 9) →
    conv (3, 9) stride (1, 2) dilated in time by each of `time_dilations` → conv (3, 3), `channels` wide,
    leaky ReLU 0.1; the bands are joined along frequency for a last conv (3, 3) → 1 channel.
    Returns `(logits [B, frames, bins', 1], [feature maps])`, float32.
    """

    def __init__(self, window_length: int, channels: int = 32, *, bands=DAC_BANDS,
                 time_dilations: Sequence[int] = (1, 2, 4), weight_norm: bool = True, rngs: nnx.Rngs):
        self.window_length = int(window_length)
        self.band_bins = _band_bins(self.window_length, bands, "bands")
        conv = functools.partial(WNConv2d, weight_norm=weight_norm, rngs=rngs)
        stacks = []
        for _ in self.band_bins:
            layers = [conv(2, channels, (3, 9), padding=((1, 1), (4, 4)))]
            layers += [conv(channels, channels, (3, 9), strides=(1, 2), dilation=(d, 1), padding=((d, d), (4, 4)))
                       for d in time_dilations]
            layers.append(conv(channels, channels, (3, 3), padding=((1, 1), (1, 1))))
            stacks.append(nnx.List(layers))
        self.band_stacks = nnx.List(stacks)
        self.conv_post = conv(channels, 1, (3, 3), padding=((1, 1), (1, 1)))

    def __call__(self, audio):
        spec = stft(audio, self.window_length, self.window_length // 4)
        x = jnp.stack([spec.real, spec.imag], axis=-1)  # [B, frames, bins, 2]
        features, outputs = [], []
        for (lo, hi), stack in zip(self.band_bins, self.band_stacks):
            band = x[:, :, lo:hi]
            for layer in stack:
                band = _leaky_relu(layer(band))
                features.append(band)
            outputs.append(band)
        return self.conv_post(jnp.concatenate(outputs, axis=2)), features


class MultiScaleSTFTDiscriminator(nnx.Module):
    """One `STFTDiscriminator` per window length: audio `[B, S]` → a list of `(logits, features)`."""

    def __init__(self, window_lengths: Sequence[int] = (2048, 1024, 512), channels: int = 32, *, bands=DAC_BANDS,
                 time_dilations: Sequence[int] = (1, 2, 4), weight_norm: bool = True, rngs: nnx.Rngs):
        self.discriminators = nnx.List([
            STFTDiscriminator(w, channels, bands=bands, time_dilations=time_dilations, weight_norm=weight_norm,
                              rngs=rngs) for w in window_lengths])

    def __call__(self, audio):
        return [d(audio) for d in self.discriminators]


class AudioDiscriminator(nnx.Module):
    """DAC's `Discriminator`: the chosen `kinds` ("mpd", "msstft") on inputs with the DC offset removed and
    the peak normalised to 0.8 (`normalize`). Audio float `[B, S]` → list of `(logits, [features])`, the
    MPD's first. Widths: MPD `mpd_channels(channels, max_channels)`, MS-STFT `channels` (DAC: 32, 1024)."""

    def __init__(self, kinds: Sequence[str] = DISCRIMINATORS, *, periods: Sequence[int] = (2, 3, 5, 7, 11),
                 window_lengths: Sequence[int] = (2048, 1024, 512), channels: int = 32, max_channels: int = 1024,
                 bands=DAC_BANDS, time_dilations: Sequence[int] = (1, 2, 4), normalize: bool = True,
                 weight_norm: bool = True, rngs: nnx.Rngs):
        unknown = [k for k in kinds if k not in DISCRIMINATORS]
        if unknown or not kinds:
            raise ValueError(f"kinds={tuple(kinds)}: expected a non-empty subset of {list(DISCRIMINATORS)}")
        self.normalize = bool(normalize)
        self.mpd = (MultiPeriodDiscriminator(periods, mpd_channels(channels, max_channels), weight_norm=weight_norm,
                                             rngs=rngs) if "mpd" in kinds else None)
        self.msstft = (MultiScaleSTFTDiscriminator(window_lengths, channels, bands=bands, time_dilations=time_dilations,
                                                   weight_norm=weight_norm, rngs=rngs) if "msstft" in kinds else None)

    def __call__(self, audio):
        if audio.ndim != 2:
            raise ValueError(f"AudioDiscriminator expects audio [batch, samples], got shape {tuple(audio.shape)}")
        x = audio.astype(jnp.float32)
        if self.normalize:
            x = x - x.mean(axis=-1, keepdims=True)
            x = 0.8 * x / (jnp.max(jnp.abs(x), axis=-1, keepdims=True) + 1e-9)
        outputs = []
        for part in (self.mpd, self.msstft):
            if part is not None:
                outputs += part(x)
        return outputs


# ---- GAN losses (least squares, HiFi-GAN / DAC) --------------------------------------------------
def lsgan_generator_loss(fake_outputs) -> jax.Array:
    """Σ over sub-discriminators of mean((1 − D(x̂))²); `fake_outputs` a list of `(logits, features)`."""
    return sum(jnp.mean(jnp.square(1.0 - logits)) for logits, _ in fake_outputs)


def lsgan_discriminator_loss(real_outputs, fake_outputs) -> jax.Array:
    """Σ over sub-discriminators of mean((1 − D(x))²) + mean(D(x̂)²)."""
    return sum(jnp.mean(jnp.square(1.0 - real)) + jnp.mean(jnp.square(fake))
               for (real, _), (fake, _) in zip(real_outputs, fake_outputs))


def feature_matching_loss(real_outputs, fake_outputs) -> jax.Array:
    """DAC's feature matching: Σ over sub-discriminators and their feature maps of mean|F(x̂) − sg(F(x))|."""
    return sum(jnp.mean(jnp.abs(f - jax.lax.stop_gradient(r)))
               for (_, real_features), (_, fake_features) in zip(real_outputs, fake_outputs)
               for r, f in zip(real_features, fake_features))
