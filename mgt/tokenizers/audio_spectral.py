"""Spectral pieces of audio losses and metrics: STFT, mel filterbanks, DAC's multi-scale mel and STFT
losses (JAX, differentiable) and the evaluation distances (numpy float64, librosa's STFT).

Audio is mono float32 `[B, S]` in [-1, 1]. Spectrograms are `[B, frames, bins]` (time before frequency).
The STFT is DAC's (audiotools 0.7, `match_stride` off): periodic Hann window, hop = window / 4, centred
with reflect padding — `librosa.stft(center=True, pad_mode="reflect")`. Mel filterbanks are librosa's,
cached numpy constants; nothing here downloads.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["stft", "mel_filterbank", "mel_spectrogram", "usable_scales", "multiscale_mel_loss",
           "multiscale_stft_loss", "mel_distance", "stft_distance", "si_sdr", "MEL_WINDOW_LENGTHS", "MEL_BINS",
           "STFT_WINDOW_LENGTHS"]

MEL_WINDOW_LENGTHS = (32, 64, 128, 256, 512, 1024, 2048)  # DAC conf/base.yml, MelSpectrogramLoss
MEL_BINS = (5, 10, 20, 40, 80, 160, 320)
STFT_WINDOW_LENGTHS = (2048, 512)  # DAC's MultiScaleSTFTLoss default


# ---- spectral building blocks --------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _hann(window_length: int) -> np.ndarray:
    # periodic ("fftbins") Hann, as scipy.signal.get_window("hann", N) that audiotools and librosa use
    n = np.arange(window_length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / window_length)).astype(np.float32)


def _frames(x, window_length: int, hop_length: int):
    """`[B, L]` → `[B, 1 + (L − window) // hop, window]` overlapping frames."""
    b, length = x.shape
    n = 1 + (length - window_length) // hop_length
    if window_length % hop_length == 0:
        # k shifted views of hop-sized chunks: slices and a reshape, so the backward pass is no scatter
        k = window_length // hop_length
        chunks = x[:, :(n + k - 1) * hop_length].reshape(b, n + k - 1, hop_length)
        return jnp.concatenate([chunks[:, i:i + n] for i in range(k)], axis=-1)
    index = hop_length * np.arange(n)[:, None] + np.arange(window_length)[None, :]
    return x[:, index]


def stft(x, window_length: int, hop_length: int):
    """Short-time Fourier transform: float `[B, S]` → complex64 `[B, 1 + S // hop, window_length // 2 + 1]`.

    Periodic Hann window of `window_length` (= n_fft), centred frames (the signal reflect-padded by
    window_length // 2 on both sides): equal to `librosa.stft(x, n_fft=window_length,
    hop_length=hop_length, center=True, pad_mode="reflect")` transposed to (frames, bins), and to
    audiotools' `AudioSignal.stft` that DAC's losses use. Needs `window_length // 2 < S`.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 2:
        raise ValueError(f"stft expects audio [batch, samples], got shape {tuple(x.shape)}")
    pad = window_length // 2
    if pad >= x.shape[1]:
        raise ValueError(f"stft window_length={window_length} needs more than {pad} samples, got {x.shape[1]}")
    x = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    return jnp.fft.rfft(_frames(x, window_length, hop_length) * _hann(window_length), axis=-1)


@functools.lru_cache(maxsize=None)
def _mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, dtype: str) -> np.ndarray:
    import librosa  # a dependency of mgt; imported here so that importing mgt stays light

    bank = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, dtype=np.dtype(dtype)).T
    bank = np.ascontiguousarray(bank)
    bank.setflags(write=False)  # shared by every caller through the cache
    return bank


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, dtype=np.float32) -> np.ndarray:
    """librosa's Slaney mel filterbank (fmin 0, fmax sample_rate / 2, as DAC), transposed:
    read-only numpy `[n_fft // 2 + 1, n_mels]` (float32 unless `dtype`), computed once per setting."""
    return _mel_filterbank(float(sample_rate), int(n_fft), int(n_mels), np.dtype(dtype).name)


def mel_spectrogram(x, sample_rate: float, window_length: int, n_mels: int):
    """Mel magnitude spectrogram (not power, as DAC's): float `[B, S]` → float32 `[B, 1 + S // hop, n_mels]`,
    hop = window_length // 4."""
    magnitude = jnp.abs(stft(x, window_length, window_length // 4))
    return magnitude @ mel_filterbank(sample_rate, window_length, n_mels)


def usable_scales(length: int, window_lengths: Sequence[int], n_mels: Sequence[int] | None = None) -> list:
    """The scales a clip of `length` samples takes part in: those with `window_length <= length`.

    A window longer than the clip would see mostly reflected padding, so the multi-scale losses skip
    it (their sums then have fewer terms: compare values only across clips of one length). Returns
    the kept window lengths, or `(window_length, n_mels)` pairs when `n_mels` is given.
    """
    if n_mels is not None and len(n_mels) != len(window_lengths):
        raise ValueError(f"n_mels {tuple(n_mels)} must have one entry per window length {tuple(window_lengths)}")
    pairs = zip(window_lengths, n_mels) if n_mels is not None else ((w, None) for w in window_lengths)
    kept = [(int(w), m) for w, m in pairs if int(w) <= length]
    if not kept:
        raise ValueError(f"window lengths {tuple(window_lengths)} all exceed the clip length {length}")
    return kept if n_mels is not None else [w for w, _ in kept]


def _spectral_l1(xp, a, b, clamp_eps: float, power: float, log_weight: float, mag_weight: float):
    """Per-example DAC distance of magnitudes `a`, `b` `[B, frames, bins]` → `[B]` (xp: numpy or jax.numpy):
    log_weight · mean|power·log10 max(a, eps) − power·log10 max(b, eps)| + mag_weight · mean|a − b|."""
    out = 0.0
    if log_weight:
        log_a = power * xp.log10(xp.maximum(a, clamp_eps))
        log_b = power * xp.log10(xp.maximum(b, clamp_eps))
        out = out + log_weight * xp.mean(xp.abs(log_a - log_b), axis=(1, 2))
    if mag_weight:
        out = out + mag_weight * xp.mean(xp.abs(a - b), axis=(1, 2))
    return out


def multiscale_mel_loss(x, y, sample_rate: float, window_lengths: Sequence[int] = MEL_WINDOW_LENGTHS,
                        n_mels: Sequence[int] = MEL_BINS, clamp_eps: float = 1e-5, log_weight: float = 1.0,
                        mag_weight: float = 0.0, power: float = 1.0):
    """DAC's `MelSpectrogramLoss` (dac/nn/loss.py) with DAC's training settings (conf/base.yml) as defaults.

    For each scale (window w, hop w / 4, `n_mels` bins): log_weight · L1(power · log10 clamp(mel(x), eps),
    same for y) + mag_weight · L1(mel(x), mel(y)), L1 = mean over batch, frames and bins; summed over the
    scales that fit the clip (`usable_scales`). `x`, `y` float `[B, S]` → float32 scalar, differentiable.
    """
    if x.shape != y.shape:
        raise ValueError(f"mel loss inputs must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    both = jnp.concatenate([x, y]).astype(jnp.float32)  # one spectrogram pass for both signals
    total = jnp.zeros((), jnp.float32)
    for w, m in usable_scales(x.shape[-1], window_lengths, n_mels):
        mel = mel_spectrogram(both, sample_rate, w, m)
        total += jnp.mean(_spectral_l1(jnp, mel[:x.shape[0]], mel[x.shape[0]:], clamp_eps, power,
                                       log_weight, mag_weight))
    return total


def multiscale_stft_loss(x, y, window_lengths: Sequence[int] = STFT_WINDOW_LENGTHS, clamp_eps: float = 1e-5,
                         log_weight: float = 1.0, mag_weight: float = 1.0, power: float = 2.0):
    """DAC's `MultiScaleSTFTLoss` (dac/nn/loss.py, its defaults): per window w (hop w / 4) log_weight ·
    L1(power · log10 clamp(|STFT|, eps)) + mag_weight · L1(|STFT(x)|, |STFT(y)|), summed over the
    windows that fit the clip. `x`, `y` float `[B, S]` → float32 scalar."""
    if x.shape != y.shape:
        raise ValueError(f"STFT loss inputs must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    both = jnp.concatenate([x, y]).astype(jnp.float32)
    total = jnp.zeros((), jnp.float32)
    for w in usable_scales(x.shape[-1], window_lengths):
        magnitude = jnp.abs(stft(both, w, w // 4))
        total += jnp.mean(_spectral_l1(jnp, magnitude[:x.shape[0]], magnitude[x.shape[0]:], clamp_eps, power,
                                       log_weight, mag_weight))
    return total


# ---- evaluation metrics (numpy float64, librosa's STFT) --------------------------------------------
def _pair(reference, estimate):
    r, e = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    if r.shape != e.shape or r.ndim not in (1, 2):
        raise ValueError(f"reference and estimate must both be [S] or [B, S], got {r.shape} and {e.shape}")
    return np.atleast_2d(r), np.atleast_2d(e), r.ndim == 1


def _np_magnitude(x, window_length: int):
    import librosa

    spec = librosa.stft(x, n_fft=window_length, hop_length=window_length // 4, center=True, pad_mode="reflect")
    return np.abs(spec).swapaxes(-1, -2)  # [B, frames, bins]


def mel_distance(reference, estimate, sample_rate: float, window_lengths: Sequence[int] = MEL_WINDOW_LENGTHS,
                 n_mels: Sequence[int] = MEL_BINS, clamp_eps: float = 1e-5, log_weight: float = 1.0,
                 mag_weight: float = 0.0, power: float = 1.0):
    """`multiscale_mel_loss` per example in float64 numpy (DAC reports its mel loss as "mel distance").
    `[S]` → float, `[B, S]` → float64 `[B]`. Lower is better; 0 for identical signals."""
    r, e, single = _pair(reference, estimate)
    total = np.zeros(r.shape[0])
    for w, m in usable_scales(r.shape[-1], window_lengths, n_mels):
        bank = mel_filterbank(sample_rate, w, m, np.float64)
        total += _spectral_l1(np, _np_magnitude(e, w) @ bank, _np_magnitude(r, w) @ bank, clamp_eps, power,
                              log_weight, mag_weight)
    return float(total[0]) if single else total


def stft_distance(reference, estimate, window_lengths: Sequence[int] = STFT_WINDOW_LENGTHS,
                  clamp_eps: float = 1e-5, log_weight: float = 1.0, mag_weight: float = 1.0, power: float = 2.0):
    """`multiscale_stft_loss` per example in float64 numpy (DAC's "stft" metric). `[S]` → float, `[B, S]` → `[B]`."""
    r, e, single = _pair(reference, estimate)
    total = np.zeros(r.shape[0])
    for w in usable_scales(r.shape[-1], window_lengths):
        total += _spectral_l1(np, _np_magnitude(e, w), _np_magnitude(r, w), clamp_eps, power, log_weight,
                              mag_weight)
    return float(total[0]) if single else total


def si_sdr(reference, estimate, zero_mean: bool = True, eps: float = 1e-8):
    """Scale-invariant signal-to-distortion ratio in dB (higher is better), DAC's `SISDRLoss` without its
    sign (that loss is −SI-SDR): 10·log10(|αr|² / |e − αr|² + eps), α = (⟨e, r⟩ + eps) / (|r|² + eps), after
    removing the means. A perfect estimate gives a large finite value (the noise energy is floored at
    1e-30). `[S]` → float, `[B, S]` → float64 `[B]`."""
    r, e, single = _pair(reference, estimate)
    if zero_mean:
        r, e = r - r.mean(axis=-1, keepdims=True), e - e.mean(axis=-1, keepdims=True)
    alpha = (np.sum(e * r, axis=-1, keepdims=True) + eps) / (np.sum(r * r, axis=-1, keepdims=True) + eps)
    signal = np.sum((alpha * r) ** 2, axis=-1)
    noise = np.sum((e - alpha * r) ** 2, axis=-1)
    out = 10.0 * np.log10(signal / np.maximum(noise, 1e-30) + eps)
    return float(out[0]) if single else out
