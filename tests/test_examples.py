"""The examples run end to end (tiny settings)."""

import importlib.util
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_tokenizer_example_end_to_end(tmp_path):
    from PIL import Image

    from mgt.tokenizers import Tokenizer

    example = _load("custom_tokenizer")
    images = np.random.default_rng(0).random((70, 16, 16, 3)).astype(np.float32)
    tok = example.PatchTokenizer(images, codebook_size=8, iterations=2)
    assert isinstance(tok, Tokenizer)
    codes = np.asarray(tok.encode(images[:3]))
    assert codes.shape == (3, 4, 4) and codes.dtype == np.int32 and codes.max() < 8
    assert np.asarray(tok.decode(codes)).shape == (3, 16, 16, 3)
    out = str(tmp_path / "grid.png")
    example.main(["--steps", "2", "--out", out])
    assert Image.open(out).size[0] > 100


def test_custom_modality_example_with_a_cross_attention_context(tmp_path, capsys):
    """A user's modality (1D waves, registered from its own file) through the trainer, the token cache,
    the cross-attention condition, `mgt.load_pipeline` and `mgt sample` with the modality's own options."""
    import glob
    import json

    from mgt import cli

    example = _load("custom_modality")
    workdir = str(tmp_path / "waves")
    waves, accuracy = example.main(["--workdir", workdir, "--tiny", "--context"])
    assert np.asarray(waves).shape == (8, 64, 1) and 0.0 <= accuracy <= 1.0
    (cache,) = glob.glob(f"{workdir}/transformer/tokens_*.npz")
    data = np.load(cache)
    assert data["tokens"].shape == (1024, 16) and data["context"].shape == (1024, 2, 5)
    rows = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
    assert "samples/frequency_accuracy" in rows[-1]  # the task's metric, logged with the final samples
    out = str(tmp_path / "w.npz")
    # the samples' shapes and options are those of training's final samples: the compiled generation is reused
    assert cli.main(["sample", "--workdir", workdir, "--classes", "1,2", "--amplitude", "0.5", "--num", "8",
                     "--out", out]) == 0
    saved = np.load(out)
    assert saved["waves"].shape == (8, 64) and saved["labels"].tolist() == [1, 2] * 4
    assert cli.main(["sample", "--workdir", workdir, "--labels", "1", "--out", out]) == 1
    assert "unrecognized arguments: --labels" in capsys.readouterr().err


def test_fid_of_two_sets_example(tmp_path):
    """FID / precision / recall of two image sets with the shipped digits network: a set against itself
    scores 0 and full coverage; against a blurred copy it scores more."""
    from scipy.ndimage import gaussian_filter
    from sklearn.datasets import load_digits

    example = _load("fid_of_two_sets")
    digits = load_digits().images[:120] / 16.0
    images = np.repeat(np.kron(digits, np.ones((2, 2)))[..., None], 3, axis=-1).astype(np.float32)  # 16 px
    np.savez(tmp_path / "real.npz", images=(images * 255).astype(np.uint8))
    np.savez(tmp_path / "blur.npz", images=gaussian_filter(images, (0, 1.5, 1.5, 0)))
    same = example.main(["--real", str(tmp_path / "real.npz"), "--fake", str(tmp_path / "real.npz"),
                         "--builtin", "digits"])
    assert abs(same["fid"]) < 1e-3 and same["precision"] == same["recall"] == 1.0
    blurred = example.main(["--real", str(tmp_path / "real.npz"), "--fake", str(tmp_path / "blur.npz"),
                            "--builtin", "digits"])
    assert blurred["fid"] > 1.0 and blurred["fake"] == 120
