"""The FID Inception-v3 (mgt.evaluation.inception) and the torch-free `.pth` reader it converts from.

tests/data/inception/ holds pytorch-fid's outputs for seeded weights and images (made once by
tests/data/inception/make_reference.py, whose numpy functions redraw the same weights and images here)
and tests/data/torch_files/ tiny files written by torch.save / torch.jit.save. torch is not needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import struct
import zipfile

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from mgt.evaluation import torch_file
from mgt.evaluation.inception import (
    abstract_inception,
    convert_inception,
    inception_arrays_from_torch,
    load_inception,
    random_inception,
    resize_bilinear_like_torch,
)
from mgt.evaluation.torch_file import load_torch_state
from mgt.evaluation.weights import assign, state_arrays

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
TORCH_FILES = os.path.join(DATA, "torch_files")
# Absolute tolerance on pool features (|x| up to ~20, std 3.3) and logits (std 4.2): float32 through
# 94 conv layers in two libraries; the measured difference is ~1e-5.
ATOL = 1e-4


def _load_make_reference():
    spec = importlib.util.spec_from_file_location("make_reference", os.path.join(DATA, "inception",
                                                                                 "make_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_reference = _load_make_reference()


# ----------------------------------------------------------------------------------------------------
# The .pth reader

# The tensors make_reference.fixture_tensors saved, written out by hand.
_BASE = np.array([[0.5, 1.5, 2.5], [3.5, 4.5, 5.5]], np.float32)
EXPECTED = {
    "float32": np.arange(12, dtype=np.float32).reshape(3, 4) / 4,
    "float64": np.array([0.1, -2.5], np.float64),
    "int64": np.array([1, -2, 2**40], np.int64),
    "int32": np.array([[7], [-8]], np.int32),
    "uint8": np.array([0, 255], np.uint8),
    "float16": np.array([0.5, -1.25, 65504.0], np.float16),
    "bfloat16": np.array([1.5, -2.0], ml_dtypes.bfloat16),
    "bool": np.array([True, False, True]),
    "scalar": np.array(3.5, np.float32),
    "empty": np.zeros((0, 3), np.float32),
    "base": _BASE,
    "transposed": _BASE.T,
    "slice": np.array([2.5, 3.5, 4.5], np.float32),
    "column": np.array([1.5, 4.5], np.float32),
    "parameter": np.array([[1.0, 2.0]], np.float32),
}


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_state_dict_loads_exactly(layout):
    state = load_torch_state(os.path.join(TORCH_FILES, f"state_{layout}.pth"))
    assert list(state) == list(EXPECTED)  # the OrderedDict's order
    for key, expected in EXPECTED.items():
        assert state[key].dtype == expected.dtype, key
        assert state[key].shape == expected.shape, key
        np.testing.assert_array_equal(state[key], expected, err_msg=key)
    # Views (transposed, offset, strided) come back as contiguous copies that share nothing.
    for key in ("transposed", "slice", "column"):
        assert state[key].flags.c_contiguous and state[key].flags.owndata, key
    state["base"][0, 0] = -1.0
    assert state["transposed"][0, 0] == 0.5


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_nested_checkpoint_is_flattened(layout):
    state = load_torch_state(os.path.join(TORCH_FILES, f"nested_{layout}.pth"))
    # Non-tensor entries (epoch, meta) are dropped; the list's tensor is keyed by its index.
    assert sorted(state) == sorted(["state_dict.0.weight", "state_dict.0.bias", "state_dict.1.weight",
                                    "state_dict.1.bias", "state_dict.1.running_mean", "state_dict.1.running_var",
                                    "state_dict.1.num_batches_tracked", "history.0"])
    np.testing.assert_array_equal(state["state_dict.0.weight"], np.arange(6, dtype=np.float32).reshape(3, 2) / 2)
    np.testing.assert_array_equal(state["state_dict.0.bias"], [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(state["state_dict.1.running_var"], np.ones(3, np.float32))
    assert state["state_dict.1.num_batches_tracked"].dtype == np.int64
    assert state["state_dict.1.num_batches_tracked"].shape == ()
    np.testing.assert_array_equal(state["history.0"], [0.25, 0.5])


def test_torchscript_is_refused():
    path = os.path.join(TORCH_FILES, "torchscript.pt")
    with pytest.raises(ValueError, match="TorchScript") as error:
        load_torch_state(path, argument="--weights")
    assert "--weights" in str(error.value) and path in str(error.value)
    assert "torch.save" in str(error.value)  # says what is accepted


@pytest.mark.parametrize("name", ["forbidden_global.pkl", "forbidden_zip.pth"])
def test_forbidden_global_is_refused(name):
    with pytest.raises(ValueError, match=r"refused global posix\.system"):
        load_torch_state(os.path.join(TORCH_FILES, name))


def test_foreign_and_missing_files_are_refused(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(ValueError, match=f"--from '{text}'"):
        load_torch_state(str(text))
    foreign_zip = tmp_path / "foreign.pth"
    with zipfile.ZipFile(foreign_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="data.pkl"):
        load_torch_state(str(foreign_zip))
    numpy_pickle = tmp_path / "array.pkl"
    numpy_pickle.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match="not a PyTorch file"):
        load_torch_state(str(numpy_pickle))
    with pytest.raises(ValueError, match="does not exist"):
        load_torch_state(str(tmp_path / "absent.pth"))


def test_truncated_legacy_file_is_refused(tmp_path):
    data = open(os.path.join(TORCH_FILES, "state_legacy.pth"), "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:-10])  # inside the last storage's bytes
    with pytest.raises(ValueError, match="truncated"):
        load_torch_state(str(cut))


def _handmade_legacy(path, *, size, stride, offset, numel):
    """A legacy-format file with one float32 tensor 'x' over storage '0' = arange(numel), written opcode by
    opcode (no torch here): lets the test choose a geometry torch itself would never write."""
    def text(s):
        return b"X" + struct.pack("<I", len(s)) + s.encode()

    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    pid = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu") + ints([numel])[1:-1] + b"Nt"
    tensor = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"Q" + ints([offset])[1:-1] + ints(size)
              + ints(stride) + b"\x89ccollections\nOrderedDict\n)Rt" + b"R")
    main = b"\x80\x02}" + text("x") + tensor + b"s."
    header = b"".join(pickle.dumps(v, protocol=2) for v in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
    storage = struct.pack("<q", numel) + np.arange(numel, dtype="<f4").tobytes()
    path.write_bytes(header + main + pickle.dumps(["0"], protocol=2) + storage)
    return str(path)


def test_tensor_geometry_is_checked(tmp_path):
    ok = _handmade_legacy(tmp_path / "ok.pth", size=(2, 2), stride=(1, 3), offset=4, numel=10)
    np.testing.assert_array_equal(load_torch_state(ok)["x"], [[4.0, 7.0], [5.0, 8.0]])
    # The last element would be 4 + 1·1 + 2·3 = 11, past the 10-element storage: refused, not read.
    bad = _handmade_legacy(tmp_path / "bad.pth", size=(2, 3), stride=(1, 3), offset=4, numel=10)
    with pytest.raises(ValueError, match="reads past its storage"):
        load_torch_state(bad)


# ----------------------------------------------------------------------------------------------------
# The network


def _torch_state() -> dict[str, np.ndarray]:
    with open(os.path.join(DATA, "inception", "torch_state_shapes.json")) as f:
        shapes = json.load(f)
    return make_reference.seeded_state(shapes)


def _reference() -> dict[str, np.ndarray]:
    with np.load(os.path.join(DATA, "inception", "reference.npz"), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def torch_state():
    return _torch_state()


@pytest.fixture(scope="module")
def model(torch_state):
    """FIDInceptionV3 with make_reference's seeded weights, mapped from the torch names."""
    model = abstract_inception()
    assign(model, inception_arrays_from_torch(torch_state))
    return model


@pytest.fixture(scope="module")
def forward():
    """One jitted forward for every model of the module (same graph: each input shape compiles once)."""
    return nnx.jit(lambda model, images: model(images))


@pytest.fixture(scope="module")
def outputs(model, forward):
    """Our (pool, logits) for make_reference's images: [3, 2048] and [3, 1008] float32."""
    results = [forward(model, images) for images in make_reference.seeded_images()]
    return tuple(np.concatenate([np.asarray(r[i]) for r in results]) for i in range(2))


def test_resize_matches_torch_interpolate():
    reference, small = _reference(), make_reference.seeded_resize_input()
    for height, width in make_reference.RESIZE_SIZES:  # up in one axis and down in the other, and identity
        ours = np.asarray(jax.jit(resize_bilinear_like_torch, static_argnums=1)(small, (height, width)))
        np.testing.assert_allclose(ours, reference[f"resize_{height}x{width}"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows", [slice(0, 2), slice(2, 3)], ids=["upsample_64", "downsample_320"])
def test_parity_with_pytorch_fid(outputs, rows):
    """Measured on a CPU: max |difference| 1.1e-5 (pool) and 1.6e-5 (logits) for both sizes."""
    reference = _reference()
    pool, logits = (o[rows] for o in outputs)
    assert pool.shape == (rows.stop - rows.start, 2048) and pool.dtype == np.float32
    assert logits.shape == (rows.stop - rows.start, 1008) and logits.dtype == np.float32
    np.testing.assert_allclose(pool, reference["pool"][rows], rtol=0, atol=ATOL)
    np.testing.assert_allclose(logits, reference["logits"][rows], rtol=0, atol=ATOL)


def test_convert_inception_round_trip(tmp_path, monkeypatch, torch_state, model, forward, outputs):
    src = str(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    # The test cannot write a 24 M-parameter torch file; the reader is tested above, so hand the converter
    # the seeded dict as a checkpoint wrapper would nest it (its prefix is stripped).
    seen = []

    def fake_load(path, *, argument="--from"):
        seen.append((path, argument))
        return {f"state_dict.{k}": v for k, v in torch_state.items()}

    monkeypatch.setattr(torch_file, "load_torch_state", fake_load)
    out = convert_inception(src, str(tmp_path / "inception.safetensors"))
    assert seen == [(src, "--from")]
    from safetensors import safe_open

    with safe_open(out, framework="numpy") as f:
        assert f.metadata() == {"network": "inception_v3_fid", "source": "pt_inception-2015-12-05-6726825d.pth"}
    loaded = load_inception(out)
    ours, expected = state_arrays(loaded), state_arrays(model)
    assert sorted(ours) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(ours[name], expected[name], err_msg=name)
    pool, logits = forward(loaded, make_reference.seeded_images()[0])
    np.testing.assert_array_equal(np.asarray(pool), outputs[0][:2])
    np.testing.assert_array_equal(np.asarray(logits), outputs[1][:2])


def test_mapping_refuses_other_state_dicts(torch_state):
    missing = dict(torch_state)
    del missing["Mixed_6c.branch7x7_2.bn.running_var"]
    with pytest.raises(ValueError, match=r"missing \['Mixed_6c\.branch7x7_2\.bn\.running_var'\]"):
        inception_arrays_from_torch(missing)
    # torchvision's ImageNet Inception has an auxiliary classifier (and a 1000-way fc).
    extra = {**torch_state, "AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)}
    with pytest.raises(ValueError, match=r"unexpected \['AuxLogits\.fc\.weight'\]"):
        inception_arrays_from_torch(extra)
    wrong = {**torch_state, "fc.weight": np.zeros((1000, 2048), np.float32)}
    with pytest.raises(ValueError, match="fc.weight"):
        inception_arrays_from_torch(wrong)


def test_mapping_layouts(torch_state):
    arrays = inception_arrays_from_torch(torch_state)
    conv = torch_state["Mixed_6b.branch7x7_2.conv.weight"]  # OIHW [128, 128, 1, 7]
    np.testing.assert_array_equal(arrays["mixed_6b.branch7x7_2.conv.kernel"], conv.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(arrays["fc.kernel"], torch_state["fc.weight"].T)
    np.testing.assert_array_equal(arrays["conv2d_1a_3x3.bn.mean"], torch_state["Conv2d_1a_3x3.bn.running_mean"])
    np.testing.assert_array_equal(arrays["mixed_7c.branch_pool.bn.scale"],
                                  torch_state["Mixed_7c.branch_pool.bn.weight"])


def test_load_inception_refuses_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_inception(str(tmp_path / "absent.safetensors"))


def test_random_inception(forward):
    first, again, other = random_inception(0), random_inception(0), random_inception(1)
    a, b, c = state_arrays(first), state_arrays(again), state_arrays(other)
    np.testing.assert_array_equal(a["mixed_5b.branch1x1.conv.kernel"], b["mixed_5b.branch1x1.conv.kernel"])
    assert not np.array_equal(a["mixed_5b.branch1x1.conv.kernel"], c["mixed_5b.branch1x1.conv.kernel"])
    pool, logits = forward(first, make_reference.seeded_images()[0])
    # Activations of order 1 (Flax's default initialisers give ~1e-4 features).
    assert np.isfinite(np.asarray(logits)).all() and 0.1 < float(np.asarray(pool).std()) < 100


def test_input_shape_is_checked(model):
    with pytest.raises(ValueError, match=r"expected \[B, H, W, 3\]"):
        model(np.zeros((1, 3, 32, 32), np.float32))
