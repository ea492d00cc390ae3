"""The codec metrics DAC reports (descript-audio-codec, `scripts/evaluate.py`): mel distance, STFT distance
and SI-SDR, in numpy float64, as evaluation figures of reconstructed (or generated) audio against its reference.

Each is the corresponding loss of `dac/nn/loss.py` on audiotools' `AudioSignal` spectrograms, with DAC's
settings (the mel loss as `conf/base.yml` configures it, the others with their defaults):

- `mel_distance`: `MelSpectrogramLoss` — windows 32 ... 2048 (hop = window / 4) with 5 ... 320 mel bands,
  per scale the L1 (mean over clips, bands and frames) of log10 max(mel, 1e-5), summed over the 7 scales
  (mag_weight 0, pow 1).
- `stft_distance`: `MultiScaleSTFTLoss` — windows 2048 and 512, per scale L1 of log10 max(|STFT|, 1e-5)²
  plus L1 of |STFT|, summed.
- `si_sdr`: minus `SISDRLoss` (scaling, zero mean, no clipping): SI-SDR in dB, higher is better.

The spectrograms are audiotools' (0.7, `match_stride` False, so no padding of its own): `torch.stft` with a
periodic Hann window of the window's length as n_fft, `center=True`, reflect padding; mel filters are
librosa's `librosa.filters.mel(sr, n_fft, n_mels)` (Slaney, fmin 0, fmax sr / 2), applied to magnitudes.
The arithmetic lives in `mgt.tokenizers.audio_spectral` (shared with the codec's training losses); this
module fixes DAC's settings, checks the inputs and averages over clips. DAC's losses compute in float32
with torch; these agree with them to about 1e-6 relative (see tests/data/audio_metrics/).
"""

from __future__ import annotations

import numpy as np

from mgt.tokenizers import audio_spectral

__all__ = ["mel_distance", "stft_distance", "si_sdr", "MIN_SAMPLES"]

# DAC's largest window. audiotools would still run a 2048-sample window on a clip of 1025 ... 2047 samples
# (mostly reflected padding), but `audio_spectral` drops the scales a clip is shorter than, so shorter clips
# would give a sum of fewer terms, not DAC's figure: refuse them instead.
MIN_SAMPLES = max(max(audio_spectral.MEL_WINDOW_LENGTHS), max(audio_spectral.STFT_WINDOW_LENGTHS))


def _clips(reference, estimate, *, spectral: bool) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(reference, np.float64)
    e = np.asarray(estimate, np.float64)
    if r.ndim != 2 or r.shape != e.shape or r.shape[0] == 0:
        raise ValueError(f"reference and estimate must both be [clips, samples] of one shape, got "
                         f"{np.shape(reference)} and {np.shape(estimate)}")
    if spectral and r.shape[1] < MIN_SAMPLES:
        raise ValueError(f"clips of {r.shape[1]} samples are shorter than DAC's largest window ({MIN_SAMPLES}); "
                         f"the multi-scale distances need at least {MIN_SAMPLES} samples")
    if not (np.isfinite(r).all() and np.isfinite(e).all()):
        raise ValueError("reference and estimate must be finite")
    return r, e


def _rate(sample_rate) -> float:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or not 0 < sample_rate < np.inf:
        raise ValueError(f"sample_rate={sample_rate!r}: expected the audio's rate in Hz (> 0)")
    return float(sample_rate)


def mel_distance(reference, estimate, sample_rate: float) -> float:
    """DAC's multi-scale mel distance (its `MelSpectrogramLoss` as trained and reported; lower is better,
    0 for identical audio).

    `reference`, `estimate`: float `[N, S]` mono clips in [-1, 1], S >= 2048; `sample_rate` in Hz (it
    places the mel bands). Returns the mean over the N clips (DAC's batch mean: clips share a length)."""
    r, e = _clips(reference, estimate, spectral=True)
    return float(np.mean(audio_spectral.mel_distance(r, e, _rate(sample_rate))))


def stft_distance(reference, estimate, sample_rate: float) -> float:
    """DAC's multi-scale STFT distance (`MultiScaleSTFTLoss`, its defaults; lower is better, 0 for identical
    audio). `reference`, `estimate` float `[N, S]`, S >= 2048. `sample_rate` is checked but does not enter
    the figure (linear-frequency STFTs); it is there so that the three metrics share one call.
    Returns the mean over the N clips."""
    r, e = _clips(reference, estimate, spectral=True)
    _rate(sample_rate)
    return float(np.mean(audio_spectral.stft_distance(r, e)))


def si_sdr(reference, estimate) -> float:
    """Scale-invariant SDR in dB, mean over clips (minus DAC's `SISDRLoss`: scaling, zero mean, no clip;
    higher is better). `reference`, `estimate` float `[N, S]`.

    Per clip, after removing each signal's mean: α = (⟨e, r⟩ + 1e-8) / (|r|² + 1e-8), SI-SDR =
    10 log10(|α r|² / |e − α r|² + 1e-8) (the reference is the one projected onto). An estimate
    that is an exact scaled copy gives a large finite figure (the residual energy is floored at 1e-30)
    where DAC's would be infinite."""
    r, e = _clips(reference, estimate, spectral=False)
    return float(np.mean(audio_spectral.si_sdr(r, e)))
