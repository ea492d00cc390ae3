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
