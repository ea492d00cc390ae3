"""`mgt eval` and its maths: the Fréchet distance against scipy's sqrtm, precision / recall against a
brute-force count, the Inception score's bounds, and the command on the session's tiny digits workdir
(the other modalities' workdirs are scored in their own test modules, which train them)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mgt.evaluation.frechet import FeatureStatistics, frechet_between, frechet_distance, inception_score
from mgt.evaluation.precision_recall import precision_recall


def _sqrtm_frechet(a, b):
    """pytorch-fid's formula: scipy.linalg.sqrtm of the non-symmetric product."""
    import scipy.linalg

    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("dim,count", [(8, 500), (64, 2000), (32, 200)])
def test_frechet_matches_scipy_sqrtm(dim, count):
    rng = np.random.default_rng(dim)
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)  # correlated features
    a = rng.normal(size=(count, dim)) @ mix
    b = rng.normal(size=(count, dim)) @ (mix * 1.2) + 0.3
    ours = frechet_between(FeatureStatistics.of(a), FeatureStatistics.of(b))
    assert abs(ours - _sqrtm_frechet(a, b)) < 1e-6 * max(1.0, abs(ours))
    assert frechet_between(FeatureStatistics.of(a), FeatureStatistics.of(a)) == pytest.approx(0.0, abs=1e-8)


def test_frechet_is_finite_for_singular_covariances_and_float64():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 64))  # 10 vectors in 64 dimensions: covariance of rank 9
    b = rng.normal(size=(12, 64)) + 1.0
    a[:, 5:] = 0.0  # and whole dimensions constant
    d = frechet_between(FeatureStatistics.of(a), FeatureStatistics.of(b))
    assert np.isfinite(d) and d > 64  # the mean shift alone gives 64
    stats = FeatureStatistics.of(a.astype(np.float32))
    assert stats.mean.dtype == np.float64 and stats.cov.dtype == np.float64
    # two Gaussians with known distance: N(0, I) and N(m, 4I) → |m|² + D (1 + 4 − 2·2)
    m = np.full(3, 0.5)
    assert frechet_distance(np.zeros(3), np.eye(3), m, 4 * np.eye(3)) == pytest.approx(0.75 + 3.0)
    with pytest.raises(ValueError, match="expected means"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_precision_recall_against_brute_force():
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(1)
    real = rng.normal(size=(150, 5))
    fake = np.concatenate([rng.normal(size=(60, 5)), rng.normal(size=(40, 5)) + 4.0])  # 40 off the manifold
    k = 3

    def brute(manifold, queries):
        own = cdist(manifold, manifold)
        radius = np.sort(own, axis=1)[:, k]  # column 0 is the point itself
        return np.mean([(cdist(q[None], manifold)[0] <= radius).any() for q in queries])

    p, r = precision_recall(real, fake, k=k)
    assert p == pytest.approx(brute(real, fake), abs=1e-12)
    assert r == pytest.approx(brute(fake, real), abs=1e-12)
    assert p < 0.7  # the shifted 40 % fall outside the real manifold
    assert precision_recall(real, real, k=k) == (1.0, 1.0)


def test_inception_score_bounds():
    uniform = np.zeros((100, 10))
    assert inception_score(uniform, splits=2)[0] == pytest.approx(1.0)
    confident = np.eye(10)[np.arange(100) % 10] * 50.0  # sure of each, all classes equally often
    assert inception_score(confident, splits=2)[0] == pytest.approx(10.0, rel=1e-6)


def test_eval_digits_workdir(tiny_workdir, tmp_path, capsys):
    """The image metrics on the tiny digits workdir, with the shipped digits network and with random
    weights; the reference features are cached; mistakes end in one-line errors."""
    from mgt.cli import main

    out = tmp_path / "m.json"
    args = ["eval", "--workdir", tiny_workdir, "--num", "20", "--batch-size", "10", "--quiet"]
    assert main(args + ["--metrics", "fid,is,precision_recall,rfid", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("fid", "rfid", "is", "precision", "recall", "class_accuracy"):
        assert isinstance(result[key], float) and np.isfinite(result[key]), key
    assert result["fid"] > 0 and 1.0 <= result["is"] <= 10.0 and 0 <= result["precision"] <= 1
    setup = result["setup"]
    assert setup["samples"]["count"] == 20 and setup["reference"]["count"] == 180
    assert setup["checkpoint_steps"] == {"tokenizer": 6, "transformer": 6}
    assert setup["features"]["image"]["network"] == "small_digits"
    assert float(setup["features"]["image"]["weights_metadata"]["heldout_accuracy"]) > 0.95
    assert setup["samples"]["condition"].startswith("class-balanced")
    cached = [f for f in os.listdir(os.path.join(tiny_workdir, "eval")) if f.startswith("reference-image")]
    assert cached

    # random weights: other features, another cache entry, the same samples (same seed)
    out2 = tmp_path / "r.json"
    assert main(args + ["--metrics", "fid", "--random-features", "--json", str(out2)]) == 0
    random_result = json.loads(out2.read_text())
    assert random_result["setup"]["features"]["image"]["weights"].startswith("random")
    assert random_result["fid"] != result["fid"]

    capsys.readouterr()
    for bad, message in ((["--metrics", "fvd"], "an image workdir offers"),
                         (["--features", "standard"], "--feature-weights is required"),
                         (["--prompts-file", str(out)], "not text-conditioned")):
        assert main(args + bad + ["--json", str(tmp_path / "x.json")]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_eval_against_an_npz_reference_and_statistics(tiny_workdir, tmp_path, capsys):
    """`--reference` as samples in an .npz (mgt sample's layout) and as precomputed mu / sigma."""
    from mgt.cli import main
    from mgt.modalities import make_task
    from mgt.training.trainer import load_config

    task = make_task(load_config(tiny_workdir))
    images = task.examples("train", 30)
    npz = tmp_path / "real.npz"
    np.savez(npz, images=(images * 255).round().astype(np.uint8), labels=np.zeros(30, np.int32))
    common = ["eval", "--workdir", tiny_workdir, "--num", "10", "--batch-size", "10", "--quiet", "--metrics", "fid"]
    assert main(common + ["--reference", str(npz), "--json", str(tmp_path / "a.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["setup"]["reference"]["count"] == 30 and a["setup"]["reference"]["source"].endswith("real.npz")

    from PIL import Image

    folder = tmp_path / "folder"
    for c in range(3):  # a class-per-folder layout: every class is kept when --num-reference is smaller
        (folder / str(c)).mkdir(parents=True)
        for i in range(4):
            Image.fromarray((images[4 * c + i] * 255).astype(np.uint8)).save(folder / str(c) / f"{i}.png")
    assert main(common + ["--reference", str(folder), "--num-reference", "6", "--json",
                          str(tmp_path / "f.json")]) == 0
    f = json.loads((tmp_path / "f.json").read_text())
    assert f["setup"]["reference"]["count"] == 6 and np.isfinite(f["fid"])

    stats = tmp_path / "stats.npz"
    cached = [f for f in os.listdir(os.path.join(tiny_workdir, "eval")) if f.startswith("reference-image")]
    with np.load(os.path.join(tiny_workdir, "eval", cached[0])) as f:
        s = FeatureStatistics.of(f["features"])
    np.savez(stats, mu=s.mean, sigma=s.cov)
    assert main(common + ["--reference", str(stats), "--json", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["setup"]["reference"]["statistics_only"] and np.isfinite(b["fid"])
    capsys.readouterr()
    assert main(common[:-1] + ["precision_recall", "--reference", str(stats), "--json", str(tmp_path / "c.json")]) == 1
    assert "statistics" in capsys.readouterr().err


def test_eval_builtin_benchmark_smoke(tmp_path):
    """`benchmarks/eval_builtin.py --smoke`: the digits network's floor, and blur moves FID up (40 examples
    are too few for noise σ 0.1, which the network shrugs off, to show above the sampling noise)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "eval_builtin.py")
    spec = importlib.util.spec_from_file_location("mgt_benchmark_eval_builtin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "e.json"
    (record,) = module.main(["--smoke", "--json", str(out)])
    assert json.loads(out.read_text()) == [record]
    assert record["data_set"] == "digits" and record["examples"] == 40 and record["accuracy"] > 0.95
    assert record["blur"] > record["floor"] > 0 and np.isfinite(record["noise"])


def test_standard_networks_behind_feature_net(tiny_workdir):
    """`--features standard` wiring: Inception-v3 (random weights) embeds a task's images in batches of
    one compiled shape, grey or RGB; VGGish embeds audio frame by frame."""
    from mgt.evaluation.features import feature_net
    from mgt.modalities import make_task
    from mgt.training.trainer import load_config

    task = make_task(load_config(tiny_workdir))
    net = feature_net(task, "image", choice="standard", random=True, batch_size=2)
    images = task.examples("test", 3)
    features, logits = net.embed(images)
    assert features.shape == (3, 2048) and logits.shape == (3, 1008) and np.isfinite(features).all()
    grey, _ = net.embed(images[..., :1])  # digits are grey in RGB: the grey copy gives the same features
    np.testing.assert_allclose(grey, features, atol=1e-4)
    assert net.describe()["network"] == "inception" and net.weights.startswith("random")

    audio_task = make_task(load_config(tiny_workdir))
    audio_task.config = audio_task.config.copy_and_resolve_references()
    with audio_task.config.unlocked():
        audio_task.config.data.sample_rate = 16000
    vggish = feature_net(audio_task, "audio", choice="standard", random=True)
    clips = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 32000)).astype(np.float32)  # 2 s each
    frames, none = vggish.embed(clips)
    assert frames.shape == (4, 128) and none is None


def test_convert_command_refuses_a_foreign_state_dict(tmp_path, capsys):
    """`mgt convert inception|i3d|vggish` reads a .pth without torch and names what does not fit."""
    from mgt.cli import main

    fixture = os.path.join(os.path.dirname(__file__), "data", "torch_files", "nested_zip.pth")
    for network in ("inception", "i3d", "vggish"):
        assert main(["convert", network, "--from", fixture, "--out", str(tmp_path / "w.safetensors")]) == 1
        assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "w.safetensors").exists()
    assert main(["convert", "inception", "--from", str(tmp_path / "none.pth"), "--out", "x.safetensors"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", "resnet"]) == 1
    assert "inception|i3d|vggish" in capsys.readouterr().err
