"""Compute DAC's own codec metrics on seeded signals: the figures tests/test_audio_eval.py holds
`mgt.evaluation.audio_metrics` to.

Run once, by hand, in a throwaway environment with torch (never in CI; the test reads only `reference.json`).
The committed file was made with torch 2.14.1, numpy 2.4.6, scipy 1.17.1 and librosa 0.11.0, audiotools at
commit 348ebf2034ce24e2a91a553e3171cb00c0c71678 (0.7.4) and descript-audio-codec at commit
c7cfc5d2647e26471dc394f95846a0830e7bec34:

    /tmp/refenv/bin/pip install torch numpy scipy librosa soundfile
    git clone https://github.com/descriptinc/audiotools /tmp/audiotools_src
    git clone https://github.com/descriptinc/descript-audio-codec /tmp/dac_src
    /tmp/refenv/bin/python tests/data/audio_metrics/make_reference.py /tmp/audiotools_src /tmp/dac_src

The losses are DAC's `dac/nn/loss.py` classes run on audiotools' `AudioSignal` from those source trees,
unchanged. audiotools' package imports far more than its STFT needs (torchaudio, julius, ffmpy, flatten_dict): those
modules are replaced by empty stand-ins before the import — none of them is called on the path measured here
(`AudioSignal(array, sr)`, `.stft`, `.mel_spectrogram`, `.magnitude`), so a wrong stand-in would raise, not
change a figure. The package `__init__`s of audiotools and dac are skipped for the same reason.

Metrics, as DAC's `scripts/evaluate.py` computes them (`loss(signal, recons)`) with the mel loss configured
as `conf/base.yml`: mel = MelSpectrogramLoss(n_mels [5 ... 320], windows [32 ... 2048], clamp 1e-5,
mag_weight 0, pow 1), stft = MultiScaleSTFTLoss() (its defaults), si_sdr = −SISDRLoss() (its defaults).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
SAMPLES = 6000  # above DAC's largest window (2048), small enough for a fast test
MEL_N_MELS = [5, 10, 20, 40, 80, 160, 320]
MEL_WINDOWS = [32, 64, 128, 256, 512, 1024, 2048]
# (name, sample rate, noise level of the estimate): the rate only moves the mel bands
CASES = [("sr44100", 44100, 0.05), ("sr16000_noisier", 16000, 0.2)]


def signals(noise: float, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two clips: reference float32 `[2, 6000]` (a chirp from 0.005 to 0.1 cycles per sample plus a tone
    and a little noise; a decaying noise burst) and an estimate float32 `[2, 6000]`: the reference scaled by
    0.9, mixed 4:1 with a 3-tap moving average of itself (a mild low-pass) and white noise of standard
    deviation `noise` added — a plausible "reconstruction" with spectral and waveform errors."""
    rng = np.random.default_rng(seed)
    n = np.arange(SAMPLES)
    chirp = np.sin(2 * np.pi * (0.005 * n + 0.095 * n**2 / (2 * SAMPLES)))
    first = 0.5 * chirp + 0.2 * np.sin(2 * np.pi * 0.013 * n) + 0.02 * rng.standard_normal(SAMPLES)
    second = 0.3 * np.exp(-4 * n / SAMPLES) * rng.standard_normal(SAMPLES)
    reference = np.stack([first, second])
    smoothed = (np.roll(reference, 1, axis=1) + reference + np.roll(reference, -1, axis=1)) / 3
    estimate = 0.9 * (0.8 * reference + 0.2 * smoothed) + noise * rng.standard_normal(reference.shape)
    return reference.astype(np.float32), estimate.astype(np.float32)


def _stub(name: str, **attributes) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module


def _load_sources(audiotools_src: str, dac_src: str):
    for name in ("torchaudio", "julius", "ffmpy"):
        _stub(name)
    from importlib import resources

    sys.modules["importlib_resources"] = resources  # the backport of this standard module
    _stub("flatten_dict", flatten=None, unflatten=None)
    package = types.ModuleType("audiotools")  # the real package's __init__ imports data, ml, metrics, ...
    package.__path__ = [os.path.join(audiotools_src, "audiotools")]
    sys.modules["audiotools"] = package
    from audiotools.core import audio_signal

    package.AudioSignal, package.STFTParams = audio_signal.AudioSignal, audio_signal.STFTParams
    spec = importlib.util.spec_from_file_location("dac_loss", os.path.join(dac_src, "dac", "nn", "loss.py"))
    loss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loss)
    return audio_signal.AudioSignal, loss


def main(audiotools_src: str, dac_src: str) -> None:
    import torch

    AudioSignal, loss = _load_sources(audiotools_src, dac_src)
    mel_loss = loss.MelSpectrogramLoss(n_mels=MEL_N_MELS, window_lengths=MEL_WINDOWS, mel_fmin=[0.0] * 7,
                                       mel_fmax=[None] * 7, pow=1.0, clamp_eps=1e-5, mag_weight=0.0)
    stft_loss = loss.MultiScaleSTFTLoss()
    sisdr_loss = loss.SISDRLoss()
    out = {"samples": SAMPLES, "seed": SEED, "cases": {}}
    for name, rate, noise in CASES:
        reference, estimate = signals(noise)
        # [batch, channels, samples], as AudioSignal holds audio; fresh signals per loss (stft caches)
        make = lambda a: AudioSignal(torch.from_numpy(a[:, None, :]), rate)
        with torch.no_grad():
            figures = {"sample_rate": rate, "noise": noise,
                       "mel_distance": float(mel_loss(make(reference), make(estimate))),
                       "stft_distance": float(stft_loss(make(reference), make(estimate))),
                       "si_sdr": float(-sisdr_loss(make(reference), make(estimate)))}
        out["cases"][name] = figures
        print(name, figures)
    path = os.path.join(HERE, "reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} AUDIOTOOLS_SOURCE_DIR DAC_SOURCE_DIR")
    main(sys.argv[1], sys.argv[2])
