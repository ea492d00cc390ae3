"""Audio evaluation: VGGish (FAD's embedding) against torchvggish, and DAC's codec metrics against DAC's code.

The reference figures were made by the scripts beside them (`tests/data/vggish/make_reference.py`,
`tests/data/audio_metrics/make_reference.py`) with torch, torchvggish, audiotools and DAC's own source;
the inputs and the VGGish weights are redrawn here from numpy seeds by the same scripts' helpers (they
import only numpy at module level).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types

import numpy as np
import pytest

from mgt.evaluation import audio_metrics, vggish
from mgt.evaluation.weights import assign, state_arrays

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _script(folder: str):
    """The helpers of `tests/data/<folder>/make_reference.py` (its module level needs numpy only)."""
    spec = importlib.util.spec_from_file_location(f"{folder}_reference", os.path.join(DATA, folder,
                                                                                      "make_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_shapes() -> dict:
    """torchvggish's `VGG().state_dict()` shapes, written out (features.<i>: Sequential indices of the convs)."""
    shapes = {}
    channels = [(0, 1, 64), (3, 64, 128), (6, 128, 256), (8, 256, 256), (11, 256, 512), (13, 512, 512)]
    for index, cin, cout in channels:
        shapes[f"features.{index}.weight"], shapes[f"features.{index}.bias"] = (cout, cin, 3, 3), (cout,)
    for index, fin, fout in [(0, 12288, 4096), (2, 4096, 4096), (4, 4096, 128)]:
        shapes[f"embeddings.{index}.weight"], shapes[f"embeddings.{index}.bias"] = (fout, fin), (fout,)
    return shapes


# ---- VGGish ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vggish_reference():
    """(script helpers, reference.npz contents, torch-layout weights, VGGish holding those weights)."""
    script = _script("vggish")
    reference = dict(np.load(os.path.join(DATA, "vggish", "reference.npz")))
    torch_state = script.torch_layout_weights(_torch_shapes())
    model = vggish._abstract_vggish()  # shapes only: every weight is assigned below
    assign(model, vggish.vggish_arrays_from_torch(torch_state))
    return script, reference, torch_state, model


def test_front_end_matches_torchvggish(vggish_reference):
    script, reference, _, _ = vggish_reference
    examples = vggish.log_mel_examples(script.signal(), 16000)
    assert examples.shape == reference["examples"].shape == (2, 2, 96, 64) and examples.dtype == np.float32
    # absolute: log-mel values are of order 1 (log(0.01) = -4.6 at silence)
    np.testing.assert_allclose(examples, reference["examples"], rtol=0, atol=1e-4)


def test_embeddings_match_torchvggish(vggish_reference):
    script, reference, _, model = vggish_reference
    expected = reference["embeddings"]
    scale = np.abs(expected).max()
    assert scale > 1 and (expected == 0).mean() < 0.9  # the weights drive the ReLUs, not into silence
    # batches of 3 for 4 examples: the last batch is zero-padded, its padding rows dropped
    embeddings = vggish.embed_audio(model, script.signal(), 16000, batch_size=3)
    assert embeddings.shape == (4, 128) and embeddings.dtype == np.float32
    # relative to the embeddings' scale (max |e| ≈ 9): float32 convolutions summed in another order
    assert np.abs(embeddings - expected).max() <= 1e-4 * scale
    # the network alone, on torchvggish's own examples
    from_reference = vggish.embed_examples(model, reference["examples"].reshape(-1, 96, 64))
    assert np.abs(from_reference - expected).max() <= 1e-4 * scale


def test_postprocess_pca_matches_torchvggish(vggish_reference):
    script, reference, _, _ = vggish_reference
    means, vectors = script.pca_parameters()
    post = vggish.postprocess_pca(reference["embeddings"], means, vectors)
    # quantised to integers: at most a rounding tie apart (float64 here, float32 in torch)
    assert np.abs(post - reference["postprocessed"]).max() <= 1
    assert (post != reference["postprocessed"]).mean() < 0.01
    raw = vggish.postprocess_pca(reference["embeddings"], means, vectors, quantize=False)
    np.testing.assert_allclose(raw, (reference["embeddings"] - means) @ vectors.T, rtol=1e-5, atol=1e-5)


def test_convert_and_load_round_trip(vggish_reference, tmp_path, monkeypatch):
    _, reference, torch_state, model = vggish_reference
    calls = []

    def fake_load(path, *, argument):  # the torch-file reader is tested with its own module
        calls.append((path, argument))
        return torch_state

    monkeypatch.setitem(sys.modules, "mgt.evaluation.torch_file",
                        types.SimpleNamespace(load_torch_state=fake_load))
    out = vggish.convert_vggish("/somewhere/vggish-10086976.pth", str(tmp_path / "vggish.safetensors"))
    assert calls == [("/somewhere/vggish-10086976.pth", "--from")]
    from safetensors import safe_open

    with safe_open(out, framework="numpy") as f:
        assert f.metadata() == {"network": "vggish", "source": "vggish-10086976.pth"}
    loaded = vggish.load_vggish(out)
    expected, got = state_arrays(model), state_arrays(loaded)
    assert sorted(got) == sorted(expected) and all(np.array_equal(got[k], expected[k]) for k in expected)
    # HWIO / [in, out] layouts of the mapping
    np.testing.assert_array_equal(got["conv2.kernel"][1, 2, 5, 7], torch_state["features.3.weight"][7, 5, 1, 2])
    np.testing.assert_array_equal(got["fc1_1.kernel"][11, 3], torch_state["embeddings.0.weight"][3, 11])
    with pytest.raises(ValueError, match="does not exist"):
        vggish.load_vggish(str(tmp_path / "missing.safetensors"))


def test_torch_mapping_rejects_foreign_state(vggish_reference):
    _, _, torch_state, _ = vggish_reference
    with pytest.raises(ValueError, match=r"missing \['embeddings.4.bias'\]"):
        vggish.vggish_arrays_from_torch({k: v for k, v in torch_state.items() if k != "embeddings.4.bias"})
    with pytest.raises(ValueError, match="unexpected.*pproc.pca_means"):
        vggish.vggish_arrays_from_torch({**torch_state, "pproc.pca_means": np.zeros((128, 1))})
    with pytest.raises(ValueError, match="features.0.weight has shape"):
        vggish.vggish_arrays_from_torch({**torch_state, "features.0.weight": np.zeros((64, 1, 5, 5))})


def test_short_clips_and_other_rates():
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    # shorter than one example: zero-padded at the end to MIN_SAMPLES = 15 600 samples, one example
    short = vggish.log_mel_examples(tone[None, :8000])
    assert short.shape == (1, 1, 96, 64)
    padded = np.pad(tone[:8000], (0, vggish.MIN_SAMPLES - 8000))
    np.testing.assert_array_equal(short[0], vggish.log_mel_examples(padded))
    assert vggish.log_mel_examples(tone[None, :vggish.MIN_SAMPLES - 1]).shape == (1, 1, 96, 64)
    # a tone given at 8 kHz is resampled to 16 kHz: the same spectrum as the tone drawn at 16 kHz
    t8 = np.arange(8000) / 8000
    at_8k = vggish.log_mel_examples((0.5 * np.sin(2 * np.pi * 440 * t8))[None], 8000)
    at_16k = vggish.log_mel_examples(tone[None], 16000)
    assert at_8k.shape == at_16k.shape == (1, 1, 96, 64)
    band = np.argmax(at_16k[0, 0].mean(0))  # the tone's band, far above the log(0.01) floor
    assert at_16k[0, 0, :, band].mean() > 2.0
    np.testing.assert_allclose(at_8k[0, 0, 5:-5, band], at_16k[0, 0, 5:-5, band], atol=0.05)
    # many clips are processed a few at a time: the same as one by one
    many = np.random.default_rng(0).uniform(-1, 1, (18, vggish.MIN_SAMPLES))
    np.testing.assert_array_equal(vggish.log_mel_examples(many)[17], vggish.log_mel_examples(many[17]))
    with pytest.raises(ValueError, match="sample_rate"):
        vggish.log_mel_examples(tone, 0)


def test_random_vggish_and_input_checks(vggish_reference):
    model = vggish.random_vggish(seed=1)
    kernel = state_arrays(model)["conv4_2.kernel"]
    assert abs(kernel.std() - np.sqrt(2 / (9 * 512))) < 0.01 * np.sqrt(2 / (9 * 512))
    embeddings = vggish.embed_audio(model, np.zeros((1, 4000), np.float32), 16000)
    assert embeddings.shape == (1, 128) and np.isfinite(embeddings).all() and (embeddings >= 0).all()
    with pytest.raises(ValueError, match=r"\[B, 96, 64\]"):
        model(np.zeros((2, 64, 96), np.float32))
    with pytest.raises(ValueError, match="clips, samples"):
        vggish.embed_audio(model, np.zeros(16000, np.float32), 16000)


# ---- DAC's codec metrics --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def metrics_reference():
    with open(os.path.join(DATA, "audio_metrics", "reference.json")) as f:
        return _script("audio_metrics"), json.load(f)


def test_metrics_match_dac(metrics_reference):
    script, reference = metrics_reference
    assert sorted(reference["cases"]) == sorted(name for name, _, _ in script.CASES)
    for name, rate, noise in script.CASES:
        expected = reference["cases"][name]
        clean, noisy = script.signals(noise)
        # DAC computes in float32 torch, these in float64: 1e-5 relative leaves room for its rounding
        assert audio_metrics.mel_distance(clean, noisy, rate) == pytest.approx(expected["mel_distance"], rel=1e-5)
        assert audio_metrics.stft_distance(clean, noisy, rate) == pytest.approx(expected["stft_distance"], rel=1e-5)
        assert audio_metrics.si_sdr(clean, noisy) == pytest.approx(expected["si_sdr"], rel=1e-5, abs=1e-5)


def test_metric_behaviour():
    rng = np.random.default_rng(3)
    n = np.arange(24000)
    clean = np.stack([0.4 * np.sin(2 * np.pi * 0.01 * n), 0.3 * rng.standard_normal(24000)])
    assert audio_metrics.mel_distance(clean[:, :8000], clean[:, :8000], 24000) == 0.0
    assert audio_metrics.stft_distance(clean, clean, 24000) == 0.0
    assert audio_metrics.si_sdr(clean, 0.5 * clean) > 100
    # white noise at a set SNR: SI-SDR ≈ that SNR (the projection absorbs a sliver of the noise)
    for snr in (0.0, 10.0, 25.0):
        noise = rng.standard_normal(clean.shape)
        noise *= np.sqrt((clean**2).sum(1, keepdims=True) / (noise**2).sum(1, keepdims=True) / 10 ** (snr / 10))
        assert audio_metrics.si_sdr(clean, clean + noise) == pytest.approx(snr, abs=0.1)
    # the distances grow with the noise
    mel, stft = [], []
    clean = clean[:, :8000]
    for level in (0.003, 0.03, 0.3):
        noisy = clean + level * rng.standard_normal(clean.shape)
        mel.append(audio_metrics.mel_distance(clean, noisy, 24000))
        stft.append(audio_metrics.stft_distance(clean, noisy, 24000))
    assert 0 < mel[0] < mel[1] < mel[2] and 0 < stft[0] < stft[1] < stft[2]


def test_si_sdr_direct_formula():
    # the textbook definition (least-squares projection onto the zero-mean reference), with DAC's eps
    # terms negligible at these energies
    rng = np.random.default_rng(5)
    reference = rng.standard_normal((3, 5000)) + 0.2
    estimate = 0.7 * reference + 0.3 * rng.standard_normal((3, 5000)) - 0.1
    r = reference - reference.mean(1, keepdims=True)
    e = estimate - estimate.mean(1, keepdims=True)
    target = (e * r).sum(1, keepdims=True) / (r * r).sum(1, keepdims=True) * r
    direct = np.mean(10 * np.log10((target**2).sum(1) / ((e - target) ** 2).sum(1)))
    assert audio_metrics.si_sdr(reference, estimate) == pytest.approx(direct, abs=1e-6)


def test_metric_input_checks():
    clip = np.zeros((1, 4096))
    with pytest.raises(ValueError, match="one shape"):
        audio_metrics.mel_distance(clip, np.zeros((1, 4000)), 16000)
    with pytest.raises(ValueError, match="one shape"):
        audio_metrics.si_sdr(np.zeros(4096), np.zeros(4096))
    with pytest.raises(ValueError, match="shorter than DAC's largest window"):
        audio_metrics.stft_distance(np.zeros((1, 2000)), np.zeros((1, 2000)), 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        audio_metrics.mel_distance(clip, clip, 0)
    with pytest.raises(ValueError, match="finite"):
        audio_metrics.si_sdr(clip, np.full((1, 4096), np.nan))
