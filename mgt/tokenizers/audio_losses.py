"""Training terms of audio codecs (DAC recipe): multi-scale mel / STFT losses, MPD and MS-STFT discriminators.

`AudioCodecObjective` is the `TokenizerObjective` (see `mgt.tokenizers.base`) of a SoundStream / DAC
style codec; the codec's own `training_losses` bring the waveform L1 and the residual-VQ terms. With
DAC's weights (`conf/base.yml` of descriptinc/descript-audio-codec, `lambdas`):

    generator:      15 · multiscale_mel_loss(x̂, x)                      ("mel")
                    + stft_weight · multiscale_stft_loss(x̂, x)           ("stft", 0 in DAC: logged only)
                    + 1 · warm-up(step) · Σ_d mean((1 − D_d(x̂))²)         ("adversarial", least squares)
                    + 2 · warm-up(step) · Σ_d Σ_l mean|F_dl(x̂) − F_dl(x)| ("feature_matching")
    discriminator:  Σ_d mean(D_d(x̂)²) + mean((1 − D_d(x))²)

D is DAC's `Discriminator`: a multi-period discriminator (HiFi-GAN MPD, periods 2, 3, 5, 7, 11) and a
multi-resolution complex-STFT discriminator (DAC's MRD, windows 2048, 1024, 512, five frequency bands
each, with EnCodec's MS-STFT time dilations 1, 2, 4 — DAC's has none; `time_dilations=(1, 1, 1)` is
DAC's exactly), on inputs with the DC removed and peak-normalised to 0.8. warm-up(step) is 0 before
`adversarial_warmup_steps`, then 1 (DAC has no warm-up: 0 steps).

Audio is mono float32 `[B, S]` in [-1, 1]. Spectrograms are `[B, frames, bins]` (time before frequency,
as the discriminators' NHWC convolutions see them). The STFT is DAC's (audiotools 0.7, `match_stride`
off): periodic Hann window, hop = window / 4, centred with reflect padding — `librosa.stft(center=True,
pad_mode="reflect")`. Nothing here downloads; mel filterbanks are librosa's, cached numpy constants.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mgt.tokenizers.audio_discriminators import (  # noqa: F401 - re-exported
    DAC_BANDS,
    DISCRIMINATORS,
    AudioDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
    PeriodDiscriminator,
    STFTDiscriminator,
    WNConv2d,
    _band_bins,
    feature_matching_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    mpd_channels,
)
from mgt.tokenizers.audio_spectral import (  # noqa: F401 - re-exported
    MEL_BINS,
    MEL_WINDOW_LENGTHS,
    STFT_WINDOW_LENGTHS,
    mel_distance,
    mel_filterbank,
    mel_spectrogram,
    multiscale_mel_loss,
    multiscale_stft_loss,
    si_sdr,
    stft,
    stft_distance,
    usable_scales,
)
from mgt.tokenizers.image_losses import adversarial_weight_schedule

__all__ = [
    "stft", "mel_filterbank", "mel_spectrogram", "usable_scales", "multiscale_mel_loss",
    "multiscale_stft_loss", "mel_distance", "stft_distance", "si_sdr", "WNConv2d",
    "PeriodDiscriminator", "MultiPeriodDiscriminator", "STFTDiscriminator", "MultiScaleSTFTDiscriminator",
    "AudioDiscriminator", "mpd_channels", "lsgan_generator_loss", "lsgan_discriminator_loss",
    "feature_matching_loss", "AudioCodecObjective", "DEFAULT_TRAIN_FIELDS", "DAC_BANDS", "DISCRIMINATORS",
]


# ---- the codec's training objective ---------------------------------------------------------------
DEFAULT_TRAIN_FIELDS: dict[str, Any] = {
    "sample_rate": 0,                      # required: the audio's rate in Hz (link it to the data's)
    "mel_weight": 15.0,
    "mel_window_lengths": MEL_WINDOW_LENGTHS,
    "mel_bins": MEL_BINS,
    "stft_weight": 0.0,
    "stft_window_lengths": STFT_WINDOW_LENGTHS,
    "adversarial_weight": 1.0,
    "feature_matching_weight": 2.0,
    "adversarial_warmup_steps": 0,
    "discriminator": DISCRIMINATORS,
    "discriminator_channels": 32,
    "discriminator_max_channels": 1024,
    "discriminator_periods": (2, 3, 5, 7, 11),
    "discriminator_window_lengths": (2048, 1024, 512),
    "discriminator_bands": DAC_BANDS,
    "r1_weight": 0.0,                      # the image objective's terms: this one rejects them when > 0
    "lecam_weight": 0.0,
    "perceptual_weight": 0.0,
}
_UNSUPPORTED = ("r1_weight", "lecam_weight", "perceptual_weight")


class _Fields:
    """Reads and checks `config.tokenizer_train` fields; every error names the field and the value."""

    def __init__(self, train_config):
        self.tc = train_config if train_config is not None else {}

    def get(self, name):
        value = self.tc.get(name, DEFAULT_TRAIN_FIELDS[name])
        return DEFAULT_TRAIN_FIELDS[name] if value is None and name != "sample_rate" else value

    def error(self, name, value, expected):
        return ValueError(f"config.tokenizer_train.{name}={value!r}: expected {expected}")

    def weight(self, name):
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise self.error(name, value, "a finite number >= 0")
        return float(value)

    def integer(self, name, minimum):
        value = self.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.error(name, value, f"an integer >= {minimum}")
        return int(value)

    def ints(self, name, minimum, count=None):
        value = self.get(name)
        ok = (isinstance(value, (tuple, list)) and len(value) > 0 and (count is None or len(value) == count)
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value))
        if not ok:
            size = f"{count}" if count is not None else "one or more"
            raise self.error(name, value, f"a tuple of {size} integers >= {minimum}")
        return tuple(int(v) for v in value)

    def kinds(self):
        value = self.get("discriminator")
        kinds = tuple(k.strip() for k in value.split(",")) if isinstance(value, str) else tuple(value)
        if not kinds or any(k not in DISCRIMINATORS for k in kinds) or len(set(kinds)) != len(kinds):
            raise self.error("discriminator", value, f"a non-empty tuple (or comma-separated string) of distinct "
                                                     f"{list(DISCRIMINATORS)}")
        return kinds

    def bands(self):
        value = self.get("discriminator_bands")
        try:
            bands = tuple((float(lo), float(hi)) for lo, hi in value)
        except (TypeError, ValueError):
            bands = ()
        if not bands or any(not 0.0 <= lo < hi <= 1.0 for lo, hi in bands):
            raise self.error("discriminator_bands", value, "pairs (low, high) with 0 <= low < high <= 1")
        return bands


class AudioCodecObjective:
    """The audio codec's `TokenizerObjective` (DAC's recipe; see the module docstring).

    Args:
      train_config: `config.tokenizer_train` (an ml_collections ConfigDict; fields and defaults in
        `DEFAULT_TRAIN_FIELDS`; `sample_rate` is required).
      input_shape: one clip `(S,)`.
      seed: the discriminator's initialisation seed.
    Generator terms (weighted scalars): "mel", "stft" (when its weight > 0), "adversarial" and
    "feature_matching" (with a discriminator; both 0 before step `adversarial_warmup_steps`).
    `adversarial_weight` 0 means no discriminator at all (`has_discriminator` False).
    """

    def __init__(self, train_config, input_shape: tuple[int, ...], seed: int):
        f = _Fields(train_config)
        self.input_shape, self.seed = tuple(int(s) for s in input_shape), int(seed)
        if len(self.input_shape) != 1 or self.input_shape[0] < 1:
            raise ValueError(f"an audio codec's input shape is (samples,), got {tuple(input_shape)}")
        length = self.input_shape[0]
        for name in _UNSUPPORTED:
            if float(f.tc.get(name, 0.0) or 0.0) > 0:
                raise f.error(name, f.tc.get(name), "0: the audio objective has no such term (DAC's recipe)")
        rate = f.get("sample_rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf:
            raise f.error("sample_rate", rate, "the audio's sample rate in Hz (> 0); it is required")
        self.sample_rate = float(rate)
        self.mel_weight = f.weight("mel_weight")
        self.stft_weight = f.weight("stft_weight")
        self.adversarial_weight = f.weight("adversarial_weight")
        self.feature_matching_weight = f.weight("feature_matching_weight")
        self.warmup_steps = f.integer("adversarial_warmup_steps", 0)
        self.mel_window_lengths = f.ints("mel_window_lengths", 4)
        self.mel_bins = f.ints("mel_bins", 1, count=len(self.mel_window_lengths))
        self.stft_window_lengths = f.ints("stft_window_lengths", 4)
        for name, windows, weight in (("mel_window_lengths", self.mel_window_lengths, self.mel_weight),
                                      ("stft_window_lengths", self.stft_window_lengths, self.stft_weight)):
            if weight > 0 and min(windows) > length:
                raise f.error(name, f.get(name), f"at least one window <= the clip length {length}")
        self.has_discriminator = self.adversarial_weight > 0
        self.kinds = f.kinds()
        self.channels = f.integer("discriminator_channels", 1)
        self.max_channels = f.integer("discriminator_max_channels", 1)
        self.periods = f.ints("discriminator_periods", 1)
        self.disc_window_lengths = f.ints("discriminator_window_lengths", 4)
        self.bands = f.bands()
        if self.has_discriminator and "msstft" in self.kinds:
            if max(self.disc_window_lengths) > length:
                raise f.error("discriminator_window_lengths", f.get("discriminator_window_lengths"),
                              f"windows <= the clip length {length}")
            for w in self.disc_window_lengths:
                _band_bins(w, self.bands, "config.tokenizer_train.discriminator_bands")
        if self.has_discriminator and "mpd" in self.kinds and max(self.periods) >= length:
            raise f.error("discriminator_periods", f.get("discriminator_periods"),
                          f"periods < the clip length {length}")

    def prepare(self) -> None:
        """Build the mel filterbanks now (librosa), so a missing dependency fails before training starts."""
        for w, m in usable_scales(self.input_shape[0], self.mel_window_lengths, self.mel_bins):
            mel_filterbank(self.sample_rate, w, m)

    def make_discriminator(self, rngs=None) -> AudioDiscriminator:
        return AudioDiscriminator(self.kinds, periods=self.periods, window_lengths=self.disc_window_lengths,
                                  channels=self.channels, max_channels=self.max_channels, bands=self.bands,
                                  rngs=rngs if rngs is not None else nnx.Rngs(self.seed))

    def init_state(self) -> dict:
        return {}  # least-squares GAN without LeCAM: no extra state

    def generator_losses(self, inputs, reconstructions, discriminator, step) -> dict:
        """`inputs`, `reconstructions` float32 `[B, S]` → {name: weighted float32 scalar}."""
        losses = {}
        if self.mel_weight > 0:
            losses["mel"] = self.mel_weight * multiscale_mel_loss(
                reconstructions, inputs, self.sample_rate, self.mel_window_lengths, self.mel_bins)
        if self.stft_weight > 0:
            losses["stft"] = self.stft_weight * multiscale_stft_loss(reconstructions, inputs, self.stft_window_lengths)
        if discriminator is not None:
            b = inputs.shape[0]
            # one discriminator pass over fakes and reals (per-example normalisation: no batch coupling)
            outputs = discriminator(jnp.concatenate([reconstructions, inputs]).astype(jnp.float32))
            fake = [(logits[:b], [x[:b] for x in feats]) for logits, feats in outputs]
            real = [(logits[b:], [x[b:] for x in feats]) for logits, feats in outputs]
            on = adversarial_weight_schedule(step, self.warmup_steps)
            losses["adversarial"] = self.adversarial_weight * on * lsgan_generator_loss(fake)
            losses["feature_matching"] = self.feature_matching_weight * on * feature_matching_loss(real, fake)
        return losses

    def discriminator_losses(self, discriminator, inputs, fakes, state: dict):
        """→ (least-squares discriminator loss, {}, {"real_logit", "fake_logit"}: logits averaged over the
        sub-discriminators)."""
        b = inputs.shape[0]
        outputs = discriminator(jnp.concatenate([inputs, fakes]).astype(jnp.float32))
        real = [(logits[:b], feats) for logits, feats in outputs]
        fake = [(logits[b:], feats) for logits, feats in outputs]
        total = lsgan_discriminator_loss(real, fake)
        # stop_gradient: the metrics are outputs of the loss function whose gradient is taken
        metrics = {"real_logit": jax.lax.stop_gradient(jnp.mean(jnp.stack([jnp.mean(r) for r, _ in real]))),
                   "fake_logit": jax.lax.stop_gradient(jnp.mean(jnp.stack([jnp.mean(x) for x, _ in fake])))}
        return total, {}, metrics
