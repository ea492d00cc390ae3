"""Audio files in and out, and a picture of them.

Waveforms are float32 `[S]` (mono) or `[N, S]` in [-1, 1] at a stated sample rate. Files are read
with soundfile (WAV, FLAC, OGG, MP3, ...; librosa as a fallback), written as 16-bit PCM WAV; a
batch of clips is drawn as log-mel spectrograms for a PNG of generated samples.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

# A 'magma'-like colormap (dark purple → orange → pale yellow), from five anchors of matplotlib's
# magma: perceptually ordered, so louder is brighter in grey print too. matplotlib is not a dependency.
_MAGMA_POSITIONS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_MAGMA_ANCHORS = np.array([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], np.float32)
_GAP = 2  # pixels between panels
_BACKGROUND = 255  # white gaps and label strip: magma's black floor stands out against it


def read_audio(path: str, sample_rate: int, *, argument: str = "--input") -> tuple[np.ndarray, str | None]:
    """An audio file → (float32 `[S]` mono in [-1, 1] at `sample_rate`, a note or None).

    Channels are averaged to mono; another rate is resampled with soxr (high quality) and the note
    says so ("resampled from 22050 Hz to 16000 Hz"). Raises ValueError naming `argument` and `path`
    when the file is missing, unreadable or holds no samples.
    """
    what = f"{argument} {os.fspath(path)!r}"
    if int(sample_rate) <= 0:
        raise ValueError(f"read_audio: sample_rate must be a positive number of Hz, got {sample_rate}")
    if not os.path.isfile(path):
        raise ValueError(f"{what} does not exist")
    try:
        data, file_rate = soundfile.read(path, dtype="float32", always_2d=True)  # [S, C]
        audio = data.mean(axis=1)
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        audio, file_rate = _read_with_librosa(path, what)
    except OSError as e:  # permissions, a file vanished or cut short while reading
        raise ValueError(f"{what} cannot be read ({e})") from None
    if audio.size == 0:
        raise ValueError(f"{what} holds no audio samples")
    note = None
    if int(file_rate) != int(sample_rate):
        import librosa

        audio = librosa.resample(audio, orig_sr=int(file_rate), target_sr=int(sample_rate), res_type="soxr_hq")
        note = f"resampled from {int(file_rate)} Hz to {int(sample_rate)} Hz"
    # Float files may hold values past full scale, and resampling can overshoot by a little (Gibbs).
    return np.clip(audio, -1.0, 1.0).astype(np.float32), note


def _read_with_librosa(path: str, what: str) -> tuple[np.ndarray, int]:
    """Formats libsndfile lacks (through librosa's audioread fallback): float32 `[S]` mono and its rate."""
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():  # librosa warns that audioread is deprecated: the error below says enough
            warnings.simplefilter("ignore")
            audio, rate = librosa.load(path, sr=None, mono=True)
    except Exception as e:  # audioread and its backends raise their own classes
        raise ValueError(f"{what} is not a readable audio file ({type(e).__name__}: {e})") from None
    return np.asarray(audio, np.float32).reshape(-1), int(rate)


def write_wav(path: str, audio, sample_rate: int) -> None:
    """float `[S]` in [-1, 1] (values outside are clipped) → a 16-bit PCM WAV file; makes the folder."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"write_wav: audio must be a non-empty mono waveform [S], got shape {audio.shape}")
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    soundfile.write(path, np.clip(audio, -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")


def mel_image(audios, sample_rate: int, *, labels=None, n_mels: int = 64) -> np.ndarray:
    """Log-mel spectrograms of clips side by side → uint8 `[H, W, 3]` RGB.

    Args:
      audios: float `[N, S]` (or one clip `[S]`) in [-1, 1].
      sample_rate: their rate in Hz.
      labels: N texts (anything `str` accepts) drawn above the panels, or None.
      n_mels: mel bands, the height of a panel.

    Each panel is `n_mels` high (low frequencies at the bottom) and one column per hop of
    n_fft / 4 (n_fft ≈ 64 ms, so 63 columns a second at 16 kHz); panels are 2 px apart. Power is
    shown in dB below the loudest bin of the whole batch over a fixed 80 dB range, so panels compare.
    """
    import librosa

    audios = np.asarray(audios, np.float32)
    if audios.ndim == 1:
        audios = audios[None]
    if audios.ndim != 2 or audios.shape[0] == 0 or audios.shape[1] == 0:
        raise ValueError(f"mel_image: audios must have shape [N, S] with N, S > 0, got {audios.shape}")
    if int(sample_rate) <= 0:
        raise ValueError(f"mel_image: sample_rate must be a positive number of Hz, got {sample_rate}")
    n = audios.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"mel_image: labels must hold one text per clip ({n}), got {len(labels)}")
    n_fft = 1 << int(np.ceil(np.log2(0.064 * sample_rate)))
    mel = librosa.feature.melspectrogram(y=audios, sr=sample_rate, n_fft=n_fft, hop_length=n_fft // 4,
                                         n_mels=n_mels)  # [N, n_mels, T]
    db = librosa.power_to_db(mel, ref=max(float(mel.max()), 1e-10), top_db=80.0)  # in [-80, 0]
    panels = _magma((db + 80.0) / 80.0)[:, ::-1]  # [N, n_mels, T, 3], low bands at the bottom
    t = panels.shape[2]
    header = _label_height() if labels is not None else 0
    image = np.full((header + n_mels, n * t + (n - 1) * _GAP, 3), _BACKGROUND, np.uint8)
    for i, panel in enumerate(panels):
        image[header:, i * (t + _GAP):i * (t + _GAP) + t] = panel
    if labels is not None:
        image = _draw_labels(image, [str(x) for x in labels], t, header)
    return image


def _magma(values: np.ndarray) -> np.ndarray:
    """float in [0, 1], any shape `[...]` → uint8 `[..., 3]` through the 'magma'-like anchors."""
    v = np.clip(values, 0.0, 1.0)
    rgb = [np.interp(v, _MAGMA_POSITIONS, _MAGMA_ANCHORS[:, c]) for c in range(3)]
    return np.round(np.stack(rgb, axis=-1)).astype(np.uint8)


def _label_height() -> int:
    """Pixels of the label strip: the default font's line height plus a margin."""
    from PIL import Image, ImageDraw, ImageFont

    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "0gy", font=ImageFont.load_default())
    return box[3] + 4


def _draw_labels(image: np.ndarray, labels: list[str], panel_width: int, header: int) -> np.ndarray:
    """Each label in black in the strip above its panel, cut at the panel's width (so texts never overlap)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    for i, text in enumerate(labels):
        strip = Image.new("RGB", (panel_width, header), (_BACKGROUND,) * 3)
        ImageDraw.Draw(strip).text((1, 1), text, fill=(0, 0, 0), font=font)
        x = i * (panel_width + _GAP)
        image[:header, x:x + panel_width] = np.asarray(strip)
    return image
