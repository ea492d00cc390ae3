"""Random-access audio sources for grain, and the crops that give clips one length.

A source has `__len__`, `__getitem__(i) -> {"audio": float32 [S] in [-1, 1], "label": int32}` and
`labels` (int32 `[N]`, or None when unlabelled); clip lengths may differ until a crop
(`RandomCrop` for training, `StartCrop` for evaluation) gives every clip `num_samples`. Configs pick a
source by name through `make_source(config.data.source, ...)`; `register_source` adds a user's own.

  spoken_digits  "zero" … "nine" spoken by eSpeak NG voices — built in, offline (`pip install -e ".[speech]"`)
  folder         a folder of audio files (WAV / FLAC / OGG / MP3), one class per subfolder
  arrays         waveforms already in memory
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import soundfile

from mgt.modalities.audio import io
from mgt.registry import Registry

_SOURCES = Registry("audio source")


# `register_source(name)` (a decorator), `registered_sources()`, `make_source(name, **kwargs)`
register_source = _SOURCES.register
registered_sources = _SOURCES.names
make_source = _SOURCES.build


def _record(audio: np.ndarray, label: int) -> dict:
    return {"audio": audio, "label": np.int32(label)}


# ---- spoken digits (eSpeak NG, GPL-3.0: imported only when asked for) ------------------------------
@register_source("spoken_digits")
def _spoken_digits(**kwargs):
    """`SpokenDigitsSource(**kwargs)`; the module is imported here so that merely importing the audio
    modality never loads it (and its eSpeak NG wrapper)."""
    from mgt.modalities.audio.spoken_digits import SpokenDigitsSource

    return SpokenDigitsSource(**kwargs)


# ---- folders of audio files ------------------------------------------------------------------------
def _is_audio(name: str, extensions: tuple[str, ...]) -> bool:
    return not name.startswith(".") and name.lower().endswith(extensions)


def _audio_files_under(folder: str, extensions: tuple[str, ...]) -> list[str]:
    """Audio files below `folder` (recursively, following links, hidden entries skipped) in sorted
    order; a folder reached again through a link (a loop) is not walked twice."""
    found, seen_dirs = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if _is_audio(f, extensions))
    return found


def _duration(path: str) -> float:
    """Seconds of audio in `path` from its header (cheap: nothing is decoded); raises if unreadable."""
    try:
        info = soundfile.info(path)
        return info.frames / info.samplerate
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        import librosa

        with warnings.catch_warnings():  # librosa's audioread deprecation notice
            warnings.simplefilter("ignore")
            return float(librosa.get_duration(path=path))


@register_source("folder")
class AudioFolderSource:
    """Audio files in class subfolders: `path/<class>/**/*.{wav,flac,ogg,mp3}` (any letter case).

    As `ImageFolderSource`: classes are the sorted subfolder names (`class_names`; label c is
    `class_names[c]`), and files lying directly in `path` are then ignored; a folder with files but
    no subfolders is one class, label 0. Every file is checked when the source is built, from its
    header only: unreadable files, empty ones and ones shorter than `min_seconds` are skipped with
    one warning that counts them and names the first few (`skipped` keeps the count). Records read
    the whole file, averaged to mono and resampled to `sample_rate`.

    Args:
      path: the root folder.
      sample_rate: Hz of the records.
      extensions: file name endings looked for (lower case).
      min_seconds: shorter files are skipped.

    Attributes: `files` (paths), `labels` (int32 `[N]`), `durations` (float `[N]`, seconds),
    `class_names`, `skipped`.

    Raises:
      ValueError: `path` is not a folder, or holds no readable audio file of those extensions.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, *,
                 extensions: tuple[str, ...] = io.AUDIO_EXTENSIONS, min_seconds: float = 0.0):
        path = os.fspath(path)
        extensions = tuple(e.lower() for e in extensions)
        if not os.path.isdir(path):
            raise ValueError(f"AudioFolderSource: path {path!r} does not exist or is not a folder")
        if int(sample_rate) <= 0:
            raise ValueError(f"AudioFolderSource: sample_rate must be a positive number of Hz, got {sample_rate}")
        subfolders = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
        if subfolders:
            self.class_names = subfolders
            candidates = [(f, label) for label, name in enumerate(subfolders)
                          for f in _audio_files_under(os.path.join(path, name), extensions)]
        else:
            self.class_names = [os.path.basename(os.path.normpath(path))]
            candidates = [(os.path.join(path, f), 0) for f in sorted(os.listdir(path)) if _is_audio(f, extensions)]
        files, labels, durations, skipped = [], [], [], []
        for f, label in candidates:
            try:
                seconds = _duration(f)
            except Exception as e:  # libsndfile, audioread and their backends each raise their own
                skipped.append(f"{os.path.relpath(f, path)} ({type(e).__name__})")
                continue
            if seconds <= 0 or seconds < min_seconds:
                skipped.append(f"{os.path.relpath(f, path)} ({seconds:.3g} s)")
                continue
            files.append(f)
            labels.append(label)
            durations.append(seconds)
        if skipped:
            warnings.warn(f"AudioFolderSource: skipped {len(skipped)} of {len(candidates)} audio files under {path!r} "
                          f"(unreadable, empty or shorter than min_seconds={min_seconds}), e.g. "
                          + ", ".join(skipped[:3]), stacklevel=2)
        if not files:
            raise ValueError(f"AudioFolderSource: no readable audio files ({', '.join(extensions)}) found in "
                             f"folder {path!r}" + (f" ({len(skipped)} skipped)" if skipped else ""))
        self.path, self.sample_rate = path, int(sample_rate)
        self.files = files
        self.labels = np.asarray(labels, np.int32)
        self.durations = np.asarray(durations, np.float64)
        self.skipped = len(skipped)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"AudioFolderSource({self.path!r}, {len(self)} files at {self.sample_rate} Hz, "
                f"{len(self.class_names)} classes)")

    def __getitem__(self, index: int) -> dict:
        audio, _ = io.read_audio(self.files[index], self.sample_rate, argument="AudioFolderSource: file")
        return _record(audio, self.labels[index])


# ---- in-memory arrays ------------------------------------------------------------------------------
@register_source("arrays")
class AudioArraySource:
    """Waveforms in memory: float `[N, S]` in [-1, 1]; labels int `[N]`, or None (then every record's
    label is 0 and `labels` is None)."""

    def __init__(self, audio, labels=None):
        audio = np.asarray(audio)
        if audio.ndim != 2 or not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"AudioArraySource: audio must be float [N, S], got {audio.dtype} {audio.shape}")
        lo, hi = float(audio.min(initial=0.0)), float(audio.max(initial=0.0))
        if lo < -1.0 or hi > 1.0:
            raise ValueError(f"AudioArraySource: audio must lie in [-1, 1], got values in [{lo}, {hi}]")
        if labels is not None:
            labels = np.asarray(labels).astype(np.int32)
            if labels.shape != (len(audio),):
                raise ValueError(f"AudioArraySource: labels must have shape [{len(audio)}], got {labels.shape}")
        self.audio, self.labels = audio.astype(np.float32), labels

    def __len__(self) -> int:
        return len(self.audio)

    def __repr__(self) -> str:
        return f"AudioArraySource({self.audio.shape}, {'labelled' if self.labels is not None else 'unlabelled'})"

    def __getitem__(self, index: int) -> dict:
        return _record(self.audio[index], 0 if self.labels is None else self.labels[index])


# ---- crops: every clip `num_samples` long ---------------------------------------------------------
def _fit(audio: np.ndarray, start: int, num_samples: int) -> np.ndarray:
    """float32 `[num_samples]`: `audio[start:start + num_samples]`, zero-padded at the end."""
    window = audio[start:start + num_samples]
    if len(window) < num_samples:  # too short: silence after the end, so the sound keeps its start
        window = np.pad(window, (0, num_samples - len(window)))
    return np.asarray(window, np.float32)


def _check_num_samples(name: str, num_samples) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"{name}: num_samples must be a positive integer, got {num_samples!r}")


@dataclasses.dataclass(frozen=True)
class RandomCrop:
    """grain `random_map`: a window of `num_samples` at a uniformly random start (audio shorter than
    that is zero-padded at the end); the label is kept. Top-level and frozen, so it pickles into
    grain's worker processes."""

    num_samples: int

    def __post_init__(self):
        _check_num_samples("RandomCrop", self.num_samples)

    def __call__(self, record: dict, rng: np.random.Generator) -> dict:
        audio = record["audio"]
        start = int(rng.integers(0, max(len(audio) - self.num_samples, 0) + 1))
        return {**record, "audio": _fit(audio, start, self.num_samples)}


@dataclasses.dataclass(frozen=True)
class StartCrop:
    """grain `map`: the first `num_samples` (zero-padded at the end); the label is kept. Deterministic,
    for evaluation and token caches."""

    num_samples: int

    def __post_init__(self):
        _check_num_samples("StartCrop", self.num_samples)

    def __call__(self, record: dict) -> dict:
        return {**record, "audio": _fit(record["audio"], 0, self.num_samples)}
