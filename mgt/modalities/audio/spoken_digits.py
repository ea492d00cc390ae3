"""Spoken digits: "zero" … "nine" spoken by eSpeak NG voices — an offline data set made on first use.

eSpeak NG (GPL-3.0) comes from the optional PyPI package `espeakng-loader` (`pip install -e ".[speech]"`;
libespeak-ng 1.52 and its voice data, no system install). Only the subprocess that synthesises a
set loads it, through ctypes; `mgt` itself never imports it.

Voices are English accents combined with voice variants ("en-us+f3": American English, third female
variant); each speaks every digit at every rate (words a minute) and pitch (0–100, 50 = the voice's
own). The default: 8 accents × 6 variants = 48 voices × 2 rates × 2 pitches × 10 digits = 1,920
clips (38 voices, 1,520 clips train; 10 voices, 400 clips test). A clip is the word with its
silence trimmed, peak-normalised to 0.7 and placed at the start of `seconds` of silence.

Split by speaker: the voices are sorted and every 5th (indices 0, 5, 10, …) is the test split, so
test clips come from voices never heard in training.

Reproducible: eSpeak is not bit-reproducible within one process (its noise generators carry state
from word to word), so a whole set is made at once, in a fixed order, in a fresh process seeded with
libc `srand(0)` and `espeak_ng_SetRandSeed(0)`:

    python -m mgt.modalities.audio.spoken_digits --out FILE.npz --settings '{"voices": [...], ...}'

and cached as `$MGT_CACHE_DIR/spoken_digits/<hash of the settings>.npz` (default `~/.cache/mgt`),
written atomically (a temporary file, then `os.replace`): a crash leaves no half file and two
processes making the same set at once both end with the same complete file. Later sources load it.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import zipfile

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# eSpeak NG's English voices (espeak-ng-data/lang/gmw/en*), by the names espeak_SetVoiceByName accepts;
# "en-shaw" is left out: for Latin text it is the plain "en" voice again.
ACCENTS = ("en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us", "en-us-nyc")
# Variants (espeak-ng-data/voices/!v/*): "" is the accent's own male voice, f1-f5 female (~170-200 Hz),
# m1-m8 male (~90-100 Hz), and more ("croak", "whisper", "klatt", named ones such as "Alex").
DEFAULT_VARIANTS = ("", "f1", "f3", "f5", "m3", "m7")
DEFAULT_VOICES = tuple(sorted(a + (f"+{v}" if v else "") for a in ACCENTS for v in DEFAULT_VARIANTS))
DEFAULT_RATES = (140, 190)  # words a minute (eSpeak's default is 175; it accepts 80-450)
DEFAULT_PITCHES = (40, 60)  # 0-100, 50 = the voice's own pitch
TEST_EVERY = 5  # voice i (in sorted order) is a test voice when i % TEST_EVERY == 0
PEAK = 0.7  # peak amplitude of every clip: headroom for a codec's overshoot
TRIM_TOP_DB = 40.0  # librosa.effects.trim: what lies 40 dB below the word's peak counts as silence
FORMAT = 1  # part of the cache key: bump it when synthesis or the file changes, so old caches go unread

_MISSING = "config.data.source='spoken_digits' needs eSpeak NG: pip install -e \".[speech]\""
_SPLITS = ("train", "test")
_INT16 = 32767.0  # clips are stored as int16 (half the bytes); exact to 1.5e-5


class SpokenDigitsSource:
    """Spoken digits of one split, from the cache (made on first use, in a subprocess, in seconds).

    Args:
      split: "train" or "test" (a disjoint set of voices, see the module docstring).
      sample_rate: Hz of the records (eSpeak speaks at 22,050 Hz; resampled with soxr).
      seconds: length of every clip; the word starts at sample 0, zero padding follows.
      voices: eSpeak voice names "accent[+variant]" (see `ACCENTS`, `DEFAULT_VARIANTS`); at least 2;
        order does not matter (they are sorted). Default `DEFAULT_VOICES`.
      rates: speaking rates in words a minute (80-450).
      pitches: base pitches (0-100, 50 = the voice's own).
      cache_dir: where `spoken_digits/<hash>.npz` lives; default `$MGT_CACHE_DIR` or `~/.cache/mgt`.

    Records: `{"audio": float32 [seconds·sample_rate] in [-0.7, 0.7], "label": int32 digit}`.
    Attributes: `labels` (int32 `[N]`), `speakers` (int32 `[N]`, index into `voice_names`), `rates`,
    `pitches` (int32 `[N]`), `voice_names` (all voices, sorted), `split_voices`, `path` (the cache file).
    """

    def __init__(self, split: str = "train", *, sample_rate: int = 16_000, seconds: float = 1.0,
                 voices=None, rates=DEFAULT_RATES, pitches=DEFAULT_PITCHES, cache_dir: str | None = None):
        if split not in _SPLITS:
            raise ValueError(f"SpokenDigitsSource: split must be 'train' or 'test', got {split!r}")
        settings = make_settings(sample_rate=sample_rate, seconds=seconds, voices=voices, rates=rates,
                                 pitches=pitches)
        self.path = cache_path(settings, cache_dir)
        data = load_or_make(self.path, settings)
        rows = data["split"] == _SPLITS.index(split)
        self.split, self.sample_rate, self.seconds = split, settings["sample_rate"], settings["seconds"]
        self.voice_names = tuple(settings["voices"])
        self.split_voices = tuple(v for i, v in enumerate(self.voice_names) if _is_test(i) == (split == "test"))
        self.audio_int16 = data["audio"][rows]  # int16 [N, S]: a float32 copy would double the memory
        self.labels = data["labels"][rows].astype(np.int32)
        self.speakers = data["voice"][rows].astype(np.int32)
        self.rates = data["rate"][rows].astype(np.int32)
        self.pitches = data["pitch"][rows].astype(np.int32)

    def __len__(self) -> int:
        return len(self.audio_int16)

    def __repr__(self) -> str:
        return (f"SpokenDigitsSource(split={self.split!r}, {len(self)} clips of {self.seconds} s at "
                f"{self.sample_rate} Hz, {len(self.split_voices)} voices)")

    def __getitem__(self, index: int) -> dict:
        audio = self.audio_int16[index].astype(np.float32) / _INT16
        return {"audio": audio, "label": np.int32(self.labels[index])}


def _is_test(voice_index: int) -> bool:
    return voice_index % TEST_EVERY == 0


def make_settings(*, sample_rate: int = 16_000, seconds: float = 1.0, voices=None, rates=DEFAULT_RATES,
                  pitches=DEFAULT_PITCHES) -> dict:
    """The validated, canonical description of a set (voices sorted, numbers typed): the cache key."""
    voices = DEFAULT_VOICES if voices is None else voices
    if isinstance(voices, str) or not all(isinstance(v, str) and v for v in voices):
        raise ValueError(f"SpokenDigitsSource: voices must be a list of eSpeak voice names, got {voices!r}")
    voices = sorted(set(voices))
    if len(voices) < 2:
        raise ValueError(f"SpokenDigitsSource: voices must name at least 2 voices (one for each split), got {voices}")
    rates, pitches = [int(r) for r in rates], [int(p) for p in pitches]
    if not rates or not all(80 <= r <= 450 for r in rates):
        raise ValueError(f"SpokenDigitsSource: rates must be words a minute in [80, 450], got {rates}")
    if not pitches or not all(0 <= p <= 100 for p in pitches):
        raise ValueError(f"SpokenDigitsSource: pitches must lie in [0, 100], got {pitches}")
    if int(sample_rate) <= 0 or not float(seconds) > 0:
        raise ValueError(f"SpokenDigitsSource: sample_rate and seconds must be positive, got {sample_rate} and "
                         f"{seconds}")
    return {"format": FORMAT, "sample_rate": int(sample_rate), "seconds": float(seconds), "voices": voices,
            "rates": sorted(set(rates)), "pitches": sorted(set(pitches)), "words": list(DIGIT_WORDS),
            "peak": PEAK, "trim_top_db": TRIM_TOP_DB, "test_every": TEST_EVERY}


def cache_path(settings: dict, cache_dir: str | None = None) -> str:
    """`<cache_dir>/spoken_digits/<sha256 of the settings, 16 hex digits>.npz`."""
    cache_dir = cache_dir or os.environ.get("MGT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "mgt")
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(os.fspath(cache_dir), "spoken_digits", f"{key}.npz")


def load_or_make(path: str, settings: dict) -> dict:
    """The arrays of the set in `path`, synthesised there first (in a subprocess) if it is absent or
    holds other settings (a hash collision, or a damaged file)."""
    if os.path.isfile(path):
        try:
            data = _read(path)
            if json.loads(data["settings"]) == settings:
                return data
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # made again below, and replaced atomically
    _make_in_subprocess(path, settings)
    return _read(path)


def _read(path: str) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {k: (str(npz[k]) if k == "settings" else npz[k]) for k in npz.files}


def _make_in_subprocess(path: str, settings: dict) -> None:
    """Run this module as a program in a fresh Python (see the module docstring); its messages and
    progress bar are relayed to stderr. A voice that does not load, or a missing eSpeak, is a ValueError."""
    import subprocess

    if importlib.util.find_spec("espeakng_loader") is None:  # finds the package without importing it
        raise ValueError(_MISSING)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    n = len(settings["voices"]) * len(settings["rates"]) * len(settings["pitches"]) * len(DIGIT_WORDS)
    print(f"spoken digits: synthesising {n} clips once with eSpeak NG into {path}", file=sys.stderr, flush=True)
    # -P: do not put this file's folder first on sys.path, where io.py would shadow the standard module;
    # running the file, not `-m`, spares the child importing mgt (and JAX).
    command = [sys.executable, "-P", os.path.abspath(__file__), "--out", path, "--settings", json.dumps(settings)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
        tail = _relay(child.stderr)
        code = child.wait()
    if code == _USER_ERROR:
        raise ValueError(tail.strip().splitlines()[-1])
    if code != 0 or not os.path.isfile(path):
        raise RuntimeError(f"spoken digits: synthesis failed (exit code {code}): {tail.strip()[-1000:]}")


def _relay(stream) -> str:
    """Copy a child's stderr to ours as it comes (tqdm's carriage returns too); return its last 4,000 characters."""
    tail = ""
    for chunk in iter(lambda: stream.read1(4096), b""):
        text = chunk.decode("utf-8", errors="replace")
        sys.stderr.write(text)
        sys.stderr.flush()
        tail = (tail + text)[-4000:]
    return tail


# ---- the program: synthesis with eSpeak NG through ctypes (runs in the subprocess only) -----------
_USER_ERROR = 2  # exit code of the program for a bad setting; its last stderr line says which
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # speak_lib.h: espeak_AUDIO_OUTPUT
_POS_CHARACTER = 1  # espeak_POSITION_TYPE
_CHARS_UTF8 = 1
_EE_OK = 0  # espeak_ERROR
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3  # espeak_PARAMETER


class _ESpeak:
    """libespeak-ng in synchronous mode: `speak(word, voice, rate, pitch)` → int16 `[S]` at `sample_rate`
    (22,050 Hz, as espeak_Initialize answers). One per process: the library keeps global state."""

    def __init__(self):
        import espeakng_loader

        self.lib = lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.data_path = espeakng_loader.get_data_path()
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.libc = ctypes.CDLL(None)
        self.seed(0)
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate}) with data {self.data_path!r}")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav, num_samples, events):
            if wav and num_samples > 0:  # NULL marks the end; 0 samples can come mid-way
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
            return 0  # 0 = go on

        self._callback = callback_type(collect)  # kept on self: eSpeak holds only a raw pointer to it
        lib.espeak_SetSynthCallback.argtypes = [callback_type]
        lib.espeak_SetSynthCallback(self._callback)

    def seed(self, seed: int) -> None:
        """Seed both generators eSpeak draws breath and voicing noise from: libc rand() and its own."""
        self.libc.srand(seed)
        if hasattr(self.lib, "espeak_ng_SetRandSeed"):  # espeak-ng >= 1.51; older libraries only use rand()
            self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            self.lib.espeak_ng_SetRandSeed(seed)

    def voice_error(self, voice: str) -> str | None:
        """Why `voice` does not load, or None. espeak_SetVoiceByName ignores an unknown "+variant",
        so variants are looked up in the data folder."""
        accent, _, variant = voice.partition("+")
        if self.lib.espeak_SetVoiceByName(accent.encode()) != _EE_OK:
            return f"eSpeak NG has no voice {accent!r}; English ones: {list(ACCENTS)}"
        if variant and not os.path.isfile(os.path.join(self.data_path, "voices", "!v", variant)):
            found = sorted(os.listdir(os.path.join(self.data_path, "voices", "!v")))
            return f"eSpeak NG has no variant {variant!r}; expected one of {found}"
        return None

    def speak(self, word: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise RuntimeError(f"espeak_SetVoiceByName({voice!r}) failed")
        self.lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
        self.lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
        self._chunks.clear()
        text = word.encode() + b"\0"
        status = self.lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth({word!r}) failed with status {status} for voice {voice!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


class _UserError(Exception):
    """A setting the program cannot honour: printed as one line, exit code `_USER_ERROR`."""


def synthesise(settings: dict) -> dict:
    """Every clip of the set, in a fixed order (voice, rate, pitch, digit) → arrays for the `.npz`:
    `audio` int16 `[N, S]` (÷ 32767 → float in [-0.7, 0.7]), `labels`, `voice`, `rate`, `pitch` int16
    `[N]`, `split` int8 `[N]` (0 train, 1 test), `settings` (JSON) and `espeak` (the library's version).
    Call it once per fresh process (see the module docstring)."""
    import librosa
    from tqdm import tqdm

    try:
        engine = _ESpeak()
    except ImportError:
        raise _UserError(_MISSING) from None
    for voice in settings["voices"]:
        error = engine.voice_error(voice)
        if error:
            raise _UserError(f"SpokenDigitsSource: voice {voice!r} does not load: {error}")
    plan = [(v, r, p, d) for v in range(len(settings["voices"])) for r in settings["rates"]
            for p in settings["pitches"] for d in range(len(DIGIT_WORDS))]
    # All words first, then the librosa work: eSpeak's noise draws on libc rand(), which other code in the
    # process may draw on too (with librosa's trimming between words, two fresh runs differed; apart, they agree).
    engine.seed(0)
    words = [engine.speak(DIGIT_WORDS[d], settings["voices"][v], r, p)
             for v, r, p, d in tqdm(plan, desc="spoken digits: speaking", unit="word", delay=2.0, file=sys.stderr)]
    rate, length = settings["sample_rate"], int(round(settings["seconds"] * settings["sample_rate"]))
    audio = np.zeros((len(plan), length), np.int16)
    truncated = 0
    for i, word in enumerate(tqdm(words, desc="spoken digits: trimming", unit="word", delay=2.0, file=sys.stderr)):
        word, _ = librosa.effects.trim(word.astype(np.float32) / 32768.0, top_db=settings["trim_top_db"])
        if engine.sample_rate != rate:
            word = librosa.resample(word, orig_sr=engine.sample_rate, target_sr=rate, res_type="soxr_hq")
        word = word * (settings["peak"] / max(float(np.abs(word).max(initial=0.0)), 1e-6))
        truncated += len(word) > length
        audio[i, :min(len(word), length)] = np.round(word[:length] * _INT16).astype(np.int16)
    if truncated:
        print(f"spoken digits: {truncated} of {len(plan)} words were longer than {settings['seconds']} s and were "
              "cut", file=sys.stderr)
    columns = np.asarray(plan, np.int16)  # [N, 4]: voice, rate, pitch, digit
    return {"audio": audio, "labels": columns[:, 3], "voice": columns[:, 0], "rate": columns[:, 1],
            "pitch": columns[:, 2], "split": np.asarray([_is_test(v) for v in columns[:, 0]], np.int8),
            "settings": np.asarray(json.dumps(settings, sort_keys=True)), "espeak": np.asarray(_espeak_version())}


def _espeak_version() -> str:
    from importlib import metadata

    try:
        return f"espeakng-loader {metadata.version('espeakng-loader')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def write_atomically(path: str, arrays: dict) -> None:
    """The arrays as an `.npz` (deflated, entries dated 1980-01-01 so equal sets give equal bytes), written to
    a temporary file in the same folder, then `os.replace`d: readers see no file or a whole one, and of two
    writers the last simply wins."""
    import io

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".spoken_digits-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as f, zipfile.ZipFile(f, "w") as npz:
            for name, value in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                npz.writestr(entry, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; a cache is as readable as any file
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Synthesise a spoken-digits set with eSpeak NG into an .npz "
                                                 "(run in a fresh process: see the module docstring).")
    parser.add_argument("--out", required=True, help="the .npz file to write (atomically)")
    parser.add_argument("--settings", default="{}", help="JSON of SpokenDigitsSource's keyword arguments "
                                                         "(sample_rate, seconds, voices, rates, pitches)")
    args = parser.parse_args(argv)
    try:
        given = json.loads(args.settings)
        # A full settings dict (as the source passes it) carries its derived keys: keep only the arguments.
        settings = make_settings(**{k: given[k] for k in ("sample_rate", "seconds", "voices", "rates", "pitches")
                                    if k in given})
        if given.get("format", FORMAT) != FORMAT:
            raise _UserError(f"--settings: format {given['format']} is not this program's {FORMAT}")
        arrays = synthesise(settings)
    except (_UserError, ValueError) as e:
        print(e, file=sys.stderr)
        return _USER_ERROR
    write_atomically(args.out, arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
