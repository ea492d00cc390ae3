"""Audio quality measures: codec distances (DAC's definitions), a spoken-digit classifier, pitch.

- `codec_metrics(x, y, sample_rate)`: multi-scale mel distance, STFT distance, SI-SDR (dB) and L1.
- `DigitClassifier`: an SVC on MFCC statistics (means and standard deviations of 20 MFCCs and their
  deltas over time), trained on real utterances — enough to tell "three" from "seven", so that
  class-conditional samples can be scored as the share labelled with their class.
- `median_pitch(audio, sample_rate)`: the median f0 (Hz) of voiced frames (`librosa.yin`), to check
  that a continuation keeps the prompt's voice.
"""

from __future__ import annotations

import functools
import json

import numpy as np


def codec_metrics(inputs, reconstructions, sample_rate: int) -> dict[str, float]:
    """Mean over clips of float32 `[N, S]` pairs: `mel_distance`, `stft_distance`, `si_sdr` (dB), `l1`."""
    from mgt.tokenizers.audio_losses import mel_distance, si_sdr, stft_distance

    x = np.asarray(inputs, np.float32)
    y = np.clip(np.asarray(reconstructions, np.float32), -1, 1)
    return {"mel_distance": float(np.mean(mel_distance(x, y, sample_rate))),
            "stft_distance": float(np.mean(stft_distance(x, y))),
            "si_sdr": float(np.mean(si_sdr(x, y))), "l1": float(np.mean(np.abs(x - y)))}


def mfcc_features(audio, sample_rate: int) -> np.ndarray:
    """float32 `[N, S]` → float32 `[N, 80]`: mean and std over time of 20 MFCCs and of their deltas."""
    import librosa

    audio = np.asarray(audio, np.float32)
    mfcc = librosa.feature.mfcc(y=audio, sr=sample_rate, n_mfcc=20, n_fft=512, hop_length=128)  # [N, 20, T]
    delta = librosa.feature.delta(mfcc, axis=-1)
    feats = [mfcc.mean(-1), mfcc.std(-1), delta.mean(-1), delta.std(-1)]
    return np.concatenate(feats, axis=-1).astype(np.float32)


class DigitClassifier:
    """Spoken-digit classifier: standardised MFCC statistics → RBF SVC (scikit-learn)."""

    def __init__(self, audio, labels, sample_rate: int):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        self.sample_rate = int(sample_rate)
        self.model = make_pipeline(StandardScaler(), SVC(C=10.0, gamma="scale"))
        self.model.fit(mfcc_features(audio, self.sample_rate), np.asarray(labels))

    def predict(self, audio) -> np.ndarray:
        """float32 `[N, S]` → int `[N]` predicted digits."""
        return self.model.predict(mfcc_features(audio, self.sample_rate))

    def accuracy(self, audio, labels) -> float:
        return float(np.mean(self.predict(audio) == np.asarray(labels)))


def digit_classifier(config) -> DigitClassifier:
    """The classifier trained on the train split of `config`'s spoken-digits source (cached per process)."""
    data = config.data
    key = json.dumps({"rate": int(data.sample_rate), "seconds": float(data.seconds),
                      "kwargs": dict(data.get("source_kwargs", {}) or {})}, sort_keys=True, default=str)
    return _classifier(key)


@functools.lru_cache(maxsize=4)
def _classifier(key: str) -> DigitClassifier:
    from mgt.modalities.audio.sources import StartCrop, make_source

    settings = json.loads(key)
    num = int(round(settings["rate"] * settings["seconds"]))
    source = make_source("spoken_digits", split="train", sample_rate=settings["rate"], seconds=settings["seconds"],
                         **settings["kwargs"])
    crop = StartCrop(num)
    audio = np.stack([crop(source[i])["audio"] for i in range(len(source))])
    return DigitClassifier(audio, np.asarray(source.labels), settings["rate"])


def digit_accuracy(audio, labels, sample_rate: int, config) -> float:
    """Share of clips float32 `[N, S]` that the real-speech classifier labels with `labels` `[N]`."""
    return digit_classifier(config).accuracy(audio, labels)


def median_pitch(audio, sample_rate: int, *, fmin: float = 60.0, fmax: float = 500.0) -> float:
    """The median f0 (Hz) of the voiced frames of float32 `[S]` (`librosa.yin`; frames quieter than 1/10
    of the loudest count as unvoiced); NaN when nothing is voiced."""
    import librosa

    audio = np.asarray(audio, np.float32)
    frame, hop = 1024, 256
    if len(audio) < frame:
        return float("nan")
    f0 = librosa.yin(audio, fmin=fmin, fmax=fmax, sr=sample_rate, frame_length=frame, hop_length=hop, center=False)
    rms = librosa.feature.rms(y=audio, frame_length=frame, hop_length=hop, center=False)[0][:len(f0)]
    voiced = rms > 0.1 * max(float(rms.max()), 1e-8)
    return float(np.median(f0[voiced])) if voiced.any() else float("nan")
