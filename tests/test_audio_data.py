"""The audio data layer: array and folder sources, file I/O, crops, the mel picture, and the eSpeak NG
spoken digits (a tiny set made in a temporary cache: labels, lengths, speaker split, cache, bytes)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile

from mgt.modalities.audio import (
    AudioArraySource,
    AudioFolderSource,
    RandomCrop,
    StartCrop,
    make_source,
    mel_image,
    read_audio,
    registered_sources,
    write_wav,
)


def _tone(seconds: float, rate: int, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# ---- arrays, folders, files --------------------------------------------------------------------------
def test_array_source_records_labels_and_errors():
    audio = np.stack([_tone(0.1, 8000), -_tone(0.1, 8000)])
    src = make_source("arrays", audio=audio, labels=[3, 5])
    assert len(src) == 2 and src.labels.tolist() == [3, 5]
    record = src[1]
    assert record["audio"].dtype == np.float32 and record["audio"].shape == (800,) and record["label"] == 5
    unlabelled = AudioArraySource(audio)
    assert unlabelled.labels is None and unlabelled[0]["label"] == 0
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        AudioArraySource(audio * 3)
    with pytest.raises(ValueError, match="float \\[N, S\\]"):
        AudioArraySource(audio[0])
    with pytest.raises(ValueError, match="labels must have shape \\[2\\]"):
        AudioArraySource(audio, labels=[1, 2, 3])
    assert {"arrays", "folder", "spoken_digits"} <= set(registered_sources())


def test_folder_source_flat_folder_mixes_to_mono_and_resamples(tmp_path):
    stereo = np.stack([_tone(0.5, 22050), _tone(0.5, 22050, amplitude=0.1)], axis=1)  # [S, 2]
    soundfile.write(tmp_path / "a.wav", stereo, 22050)
    soundfile.write(tmp_path / "b.flac", _tone(0.25, 16000), 16000)
    audio, note = read_audio(str(tmp_path / "a.wav"), 16000)
    assert audio.shape == (8000,) and audio.dtype == np.float32
    assert note == "resampled from 22050 Hz to 16000 Hz"
    assert 0.28 < np.abs(audio).max() < 0.32  # the mean of the two channels' 0.5 and 0.1
    assert read_audio(str(tmp_path / "b.flac"), 16000)[1] is None

    src = AudioFolderSource(tmp_path, 16000)
    assert len(src) == 2 and src.labels.tolist() == [0, 0] and src.skipped == 0
    assert src[0]["audio"].shape == (8000,) and src[1]["audio"].shape == (4000,)
    np.testing.assert_allclose(src.durations, [0.5, 0.25], atol=1e-3)


def test_folder_source_classes_skips_unreadable_files_with_one_warning(tmp_path):
    for cls, name in [("cat", "x.wav"), ("dog", "y.flac"), ("dog/deep", "z.ogg"), ("emu", "w.wav")]:
        os.makedirs(tmp_path / cls, exist_ok=True)
        soundfile.write(tmp_path / cls / name, _tone(0.2, 16000), 16000)
    (tmp_path / "dog" / "broken.wav").write_bytes(b"not audio at all")
    soundfile.write(tmp_path / "emu" / "empty.wav", np.zeros(0, np.float32), 16000)
    soundfile.write(tmp_path / "root.wav", _tone(0.2, 16000), 16000)  # ignored: classes are subfolders
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = AudioFolderSource(tmp_path, 8000)
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "skipped 2 of 6" in message and "broken.wav" in message and "empty.wav" in message
    assert src.skipped == 2 and src.class_names == ["cat", "dog", "emu"]
    assert src.labels.tolist() == [0, 1, 1, 2]
    assert [os.path.basename(f) for f in src.files] == ["x.wav", "y.flac", "z.ogg", "w.wav"]
    assert src[2]["audio"].shape == (1600,) and src[2]["label"] == 1


def test_folder_source_without_audio_names_the_path(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(ValueError, match=f"{tmp_path}.*no readable audio|no readable audio.*{tmp_path}") as e:
        AudioFolderSource(tmp_path, 16000)
    assert ".wav" in str(e.value)
    with pytest.raises(ValueError, match="does not exist"):
        AudioFolderSource(tmp_path / "missing", 16000)


def test_read_audio_errors_name_the_argument_and_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"--reference .*missing\.wav.* does not exist"):
        read_audio(str(tmp_path / "missing.wav"), 16000, argument="--reference")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match=r"--input .*empty\.wav.* holds no audio samples"):
        read_audio(str(tmp_path / "empty.wav"), 16000)
    (tmp_path / "junk.wav").write_bytes(b"RIFF but not really")
    with pytest.raises(ValueError, match=r"junk\.wav.* is not a readable audio file"):
        read_audio(str(tmp_path / "junk.wav"), 16000)


def test_write_wav_round_trips_and_clips(tmp_path):
    audio = np.random.default_rng(0).uniform(-1, 1, 4000).astype(np.float32)
    path = str(tmp_path / "new" / "folder" / "clip.wav")
    write_wav(path, audio, 16000)
    back, note = read_audio(path, 16000)
    assert note is None and soundfile.info(path).subtype == "PCM_16"
    np.testing.assert_allclose(back, audio, atol=1e-4)
    write_wav(path, np.array([2.0, -3.0, 0.5], np.float32), 16000)
    np.testing.assert_allclose(read_audio(path, 16000)[0], [1.0, -1.0, 0.5], atol=1e-4)


# ---- crops ---------------------------------------------------------------------------------------------
def test_random_and_start_crops_cut_or_pad_and_keep_the_label():
    long = {"audio": np.arange(1, 251, dtype=np.float32), "label": np.int32(7)}
    short = {"audio": np.arange(1, 51, dtype=np.float32), "label": np.int32(2)}
    crop = RandomCrop(100)
    starts = set()
    for seed in range(20):
        out = crop(long, np.random.default_rng(seed))
        assert out["audio"].shape == (100,) and out["label"] == 7
        start = int(out["audio"][0]) - 1
        np.testing.assert_array_equal(out["audio"], long["audio"][start:start + 100])  # a window of the clip
        starts.add(start)
    assert len(starts) > 5
    padded = crop(short, np.random.default_rng(0))["audio"]
    np.testing.assert_array_equal(padded[:50], short["audio"])
    assert padded.shape == (100,) and not padded[50:].any()
    np.testing.assert_array_equal(StartCrop(100)(long)["audio"], long["audio"][:100])
    head = StartCrop(60)(short)
    assert head["label"] == 2 and head["audio"].shape == (60,) and not head["audio"][50:].any()
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
        RandomCrop(0)
    with pytest.raises(ValueError, match="StartCrop"):
        StartCrop(1.5)


def test_random_crop_in_a_grain_pipeline_is_deterministic_per_index():
    grain = pytest.importorskip("grain")
    src = AudioArraySource(np.tile(np.linspace(-1, 1, 300, dtype=np.float32), (4, 1)), labels=[0, 1, 2, 3])
    ds = grain.MapDataset.source(src).seed(3).random_map(RandomCrop(64))
    first, again = ds[2], ds[2]
    assert first["audio"].shape == (64,) and first["label"] == 2
    np.testing.assert_array_equal(first["audio"], again["audio"])


# ---- the mel picture -------------------------------------------------------------------------------------
def test_mel_image_shape_colour_and_low_frequencies_at_the_bottom():
    low, high = _tone(1.0, 16000, hz=150.0), _tone(1.0, 16000, hz=5000.0)
    image = mel_image(np.stack([low, high, np.zeros_like(low)]), 16000, n_mels=32)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] == 32 and image.shape[2] == 3
    width = (image.shape[1] - 2 * 2) // 3  # three panels, two 2-px gaps
    assert width == 63  # n_fft 1024, hop 256: one column per 16 ms, both ends padded
    panels = [image[:, i * (width + 2):i * (width + 2) + width].astype(int).sum(-1) for i in range(3)]
    bright_row = [int(np.argmax(p.mean(axis=1))) for p in panels[:2]]
    assert bright_row[0] > 24 and bright_row[1] < bright_row[0]  # the 150 Hz tone lights the bottom rows
    assert panels[2].max() == sum((0, 0, 4))  # silence is the darkest colour
    labelled = mel_image(np.stack([low, high]), 16000, labels=["one", "two"], n_mels=32)
    assert labelled.shape[0] > 32 and labelled.shape[1] == 2 * width + 2
    assert (labelled[:labelled.shape[0] - 32] < 128).any()  # some text was drawn in the label strip
    with pytest.raises(ValueError, match="one text per clip \\(2\\), got 1"):
        mel_image(np.stack([low, high]), 16000, labels=["one"])


# ---- spoken digits (eSpeak NG) -------------------------------------------------------------------------
TINY = dict(voices=["en-us", "en-us+f3"], rates=(175,), pitches=(50,), sample_rate=8000, seconds=0.8)


@pytest.fixture(scope="module")
def tiny_digits(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    from mgt.modalities.audio.spoken_digits import SpokenDigitsSource

    cache = str(tmp_path_factory.mktemp("spoken_digits_cache"))
    return cache, SpokenDigitsSource("train", cache_dir=cache, **TINY)


def test_spoken_digits_labels_lengths_and_a_speaker_split(tiny_digits):
    from mgt.modalities.audio.spoken_digits import SpokenDigitsSource

    cache, train = tiny_digits
    test = make_source("spoken_digits", split="test", cache_dir=cache, **TINY)
    assert len(train) == len(test) == 10
    for src in (train, test):
        assert sorted(src.labels.tolist()) == list(range(10))
        record = src[4]
        assert record["audio"].shape == (6400,) and record["audio"].dtype == np.float32
        assert record["label"] == src.labels[4]
        assert 0.69 < np.abs(record["audio"]).max() < 0.71  # peak-normalised
        assert np.abs(record["audio"][:200]).max() > 0.01  # the word starts at once (silence trimmed)
        assert not record["audio"][-200:].any()  # and padding follows it
    assert set(train.split_voices).isdisjoint(test.split_voices)
    assert set(train.split_voices) | set(test.split_voices) == set(TINY["voices"])
    assert set(train.speakers.tolist()).isdisjoint(test.speakers.tolist())
    same_digit = [src.audio_int16[src.labels == 3][0] for src in (train, test)]
    assert np.abs(same_digit[0].astype(int) - same_digit[1]).mean() > 100  # different voices sound different
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'valid'"):
        SpokenDigitsSource("valid", cache_dir=cache, **TINY)


def test_spoken_digits_cache_is_loaded_and_a_regeneration_has_the_same_bytes(tiny_digits, tmp_path, monkeypatch):
    from mgt.modalities.audio import spoken_digits

    cache, train = tiny_digits
    mtime = os.stat(train.path).st_mtime_ns

    def no_synthesis(*args, **kwargs):
        raise AssertionError("synthesised again instead of loading the cache")

    with monkeypatch.context() as patch:
        patch.setattr(spoken_digits, "_make_in_subprocess", no_synthesis)
        again = spoken_digits.SpokenDigitsSource("train", cache_dir=cache, **TINY)
    assert again.path == train.path and os.stat(train.path).st_mtime_ns == mtime
    np.testing.assert_array_equal(again.audio_int16, train.audio_int16)

    other = spoken_digits.SpokenDigitsSource("train", cache_dir=str(tmp_path), **TINY)  # a fresh process makes it
    assert other.path != train.path and os.path.basename(other.path) == os.path.basename(train.path)
    with open(train.path, "rb") as a, open(other.path, "rb") as b:
        assert a.read() == b.read()
    assert [f for f in os.listdir(os.path.dirname(other.path)) if f.startswith(".")] == []  # no temporary left


def test_spoken_digits_errors_bad_voice_and_missing_espeak(tmp_path, monkeypatch):
    pytest.importorskip("espeakng_loader")
    from mgt.modalities.audio.spoken_digits import SpokenDigitsSource

    with pytest.raises(ValueError, match="voice 'en-us\\+nosuch' does not load.*no variant 'nosuch'"):
        SpokenDigitsSource(cache_dir=str(tmp_path), **{**TINY, "voices": ["en-us", "en-us+nosuch"]})
    with pytest.raises(ValueError, match="at least 2 voices"):
        SpokenDigitsSource(cache_dir=str(tmp_path), **{**TINY, "voices": ["en-us"]})
    with pytest.raises(ValueError, match="rates must be words a minute in \\[80, 450\\], got \\[20\\]"):
        SpokenDigitsSource(cache_dir=str(tmp_path), **{**TINY, "rates": [20]})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "espeakng_loader" else real_find_spec(name, *a))
    with pytest.raises(ValueError, match=r"config.data.source='spoken_digits' needs eSpeak NG: pip install"):
        SpokenDigitsSource(cache_dir=str(tmp_path / "elsewhere"), **TINY)
    assert not os.path.exists(tmp_path / "elsewhere" / "spoken_digits") or not os.listdir(
        tmp_path / "elsewhere" / "spoken_digits")


def test_importing_the_audio_modality_loads_neither_spoken_digits_nor_espeak():
    code = ("import sys, mgt.modalities.audio as a; a.registered_sources(); "
            "print([m for m in sys.modules if 'spoken_digits' in m or 'espeakng' in m])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
