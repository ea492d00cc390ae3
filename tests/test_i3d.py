"""The Kinetics-400 I3D (FVD's embedding) against piergiaj's PyTorch port, and its weight conversion.

The reference logits in tests/data/i3d/ were computed by torch from weights that `make_reference.py`
draws with numpy alone, so the test redraws the same weights without torch. One compiled forward (the
17-frame 160 × 256 reference clip: resize both ways, two time steps after the final pool) is shared by
every test through a module-scoped fixture; the other models have the same graph, so they reuse it.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from flax import nnx

from mgt.evaluation import i3d
from mgt.evaluation.weights import save_weights, state_arrays

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "i3d")
# Absolute tolerance on logits whose magnitudes reach ~9.5 (std ~2.9); float32 rounding gives ~1.5e-5.
ATOL = 1e-4


def _make_reference():
    spec = importlib.util.spec_from_file_location("i3d_make_reference", os.path.join(DATA, "make_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # numpy only: torch is imported inside its main()
    return module


MAKE_REFERENCE = _make_reference()


@pytest.fixture(scope="module")
def torch_state():
    """piergiaj's state-dict keys and shapes, filled with the reference's numpy weights."""
    with open(os.path.join(DATA, "state_shapes.json")) as f:
        return MAKE_REFERENCE.reference_state(json.load(f))


@pytest.fixture(scope="module")
def forward():
    """`I3D.embed` compiled once (nnx.jit keys on the model's graph, which every I3D here shares) → numpy
    (time-averaged logits [B, 400], per-step logits [B, T', 400], features [B, 1024])."""
    embed = nnx.jit(lambda model, videos: model.embed(videos))

    def run(model, videos):
        out = embed(model, videos)
        return tuple(np.asarray(out[k]) for k in ("logits", "logits_per_step", "features"))

    return run


@pytest.fixture(scope="module")
def converted(torch_state, tmp_path_factory, forward):
    """`convert_i3d` → `load_i3d` of the reference weights (torch's reader stubbed: the real file is 50 MB),
    and the model's outputs on the reference clip."""
    src = str(tmp_path_factory.mktemp("i3d") / "rgb_imagenet.pt")
    out = src.replace(".pt", ".safetensors")
    with pytest.MonkeyPatch.context() as patch:
        from mgt.evaluation import torch_file

        def load_torch_state(path, *, argument):
            assert (path, argument) == (src, "--from")
            return dict(torch_state)

        patch.setattr(torch_file, "load_torch_state", load_torch_state)
        assert i3d.convert_i3d(src, out) == out
    model = i3d.load_i3d(out)
    return out, model, forward(model, MAKE_REFERENCE.reference_video())


def test_matches_pytorch_reference(converted):
    with np.load(os.path.join(DATA, "reference.npz")) as f:
        logits_btn = f["logits_bnt"].transpose(0, 2, 1)  # the port's [B, 400, T'] → ours
        features_btc = f["features_bct"].transpose(0, 2, 1)
    _, _, (logits_bn, per_step_btn, features_bc) = converted
    assert per_step_btn.shape == (1, 2, 400) and logits_bn.shape == (1, 400) and features_bc.shape == (1, 1024)
    assert per_step_btn.dtype == logits_bn.dtype == features_bc.dtype == np.float32
    # The two steps differ, so averaging (rather than taking one) is what the next line checks.
    assert np.abs(logits_btn[:, 0] - logits_btn[:, 1]).mean() > 0.1
    np.testing.assert_allclose(per_step_btn, logits_btn, rtol=0, atol=ATOL)
    np.testing.assert_allclose(logits_bn, logits_btn.mean(axis=1), rtol=0, atol=ATOL)
    np.testing.assert_allclose(features_bc, features_btc.mean(axis=1), rtol=0, atol=ATOL)


def test_conversion_maps_every_tensor(torch_state, converted):
    path, model, _ = converted
    arrays = state_arrays(model)
    assert len(arrays) == len([k for k in torch_state if not k.endswith("num_batches_tracked")]) == 287
    # OIDHW → DHWIO, and batch-norm statistics under our names.
    np.testing.assert_array_equal(arrays["conv3d_1a_7x7.conv3d.kernel"],
                                  torch_state["Conv3d_1a_7x7.conv3d.weight"].transpose(2, 3, 4, 1, 0))
    np.testing.assert_array_equal(arrays["mixed_4c.b1b.bn.var"], torch_state["Mixed_4c.b1b.bn.running_var"])
    np.testing.assert_array_equal(arrays["logits.conv3d.bias"], torch_state["logits.conv3d.bias"])
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        assert f.metadata() == {"network": "i3d_kinetics400", "source": "rgb_imagenet.pt"}


@pytest.mark.parametrize("change, key", [
    ("drop", "Mixed_4c.b1b.bn.running_mean"),
    ("reshape", "logits.conv3d.weight"),  # the 157-class Charades head
    ("add", "fc.weight"),
])
def test_mapping_rejects_a_foreign_state_dict(torch_state, change, key):
    state = dict(torch_state)
    if change == "drop":
        del state[key]
    elif change == "reshape":
        state[key] = np.zeros((157, 1024, 1, 1, 1), np.float32)
    else:
        state[key] = np.zeros((3,), np.float32)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        i3d.i3d_arrays_from_torch(state)


def test_save_load_round_trip(tmp_path, forward):
    videos = MAKE_REFERENCE.reference_video()[:, :9, :32, :48]  # the fewest frames the final pool allows
    model = i3d.random_i3d(seed=1)
    path = save_weights(model, str(tmp_path / "i3d.safetensors"), metadata={"network": "i3d_kinetics400"})
    loaded = i3d.load_i3d(path)
    before, after = (forward(m, videos) for m in (model, loaded))
    assert np.isfinite(before[0]).all() and before[0].std() > 0.1
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_load_and_call_reject_bad_input(tmp_path):
    model = i3d.random_i3d()
    path = save_weights(model, str(tmp_path / "other.safetensors"), metadata={"network": "inception_v3"})
    with pytest.raises(ValueError, match="inception_v3"):
        i3d.load_i3d(path, argument="--i3d")
    with pytest.raises(ValueError, match="T >= 9"):
        model(np.zeros((1, 8, 224, 224, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(1, 16, 224, 224\)"):
        model(np.zeros((1, 16, 224, 224), np.float32))
