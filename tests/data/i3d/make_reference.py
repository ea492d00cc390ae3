"""Make the PyTorch reference outputs of piergiaj's Kinetics-400 I3D that `tests/test_i3d.py` checks against.

Run once, by hand, in a throwaway environment with torch (never in CI; the test reads only what this writes
and regenerates the weights with numpy alone). The committed files were made with torch 2.14.1 and numpy
2.4.6 from pytorch_i3d.py of github.com/piergiaj/pytorch-i3d (not committed here: pass its path):

    python -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch numpy
    git clone https://github.com/piergiaj/pytorch-i3d /tmp/pytorch-i3d
    /tmp/refenv/bin/python tests/data/i3d/make_reference.py /tmp/pytorch-i3d/pytorch_i3d.py

It builds `InceptionI3d(400, in_channels=3)` — the network of `models/rgb_imagenet.pt` — and replaces every
state-dict entry with `reference_state(shapes)`: deterministic numpy draws at scales where every term matters
and activations stay of order one through all 58 convolutions (He-scaled kernels, batch-norm gains near 1,
biases and running means of order 0.1, running variances in [0.5, 1.5]). Then, in eval mode, it feeds
`reference_video()` — one clip of 17 frames at 160 × 256, so the 224 × 224 bilinear resize both enlarges
and shrinks, and 17 frames leave two time steps after the final 2 × 7 × 7 average pool — resized with
`F.interpolate(..., mode="bilinear", align_corners=False)` and scaled to [-1, 1], and writes

    state_shapes.json   {torch key: shape} of the whole state dict, in the order of `state_dict()`
    reference.npz       logits_bnt float32 [1, 400, 2]: what `InceptionI3d.forward` returns
                        features_bct float32 [1, 1024, 2]: `extract_features` with the 1 × 1 space squeezed
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
VIDEO_SHAPE = (1, 17, 160, 256, 3)  # [B, T, H, W, C]


def reference_state(shapes: dict[str, list[int]], seed: int = SEED) -> dict[str, np.ndarray]:
    """The weights of the reference: `{torch key: array}` for every key of `shapes`, the i-th key in sorted order
    drawn from `np.random.default_rng(seed + i)` (float32; `num_batches_tracked` int64 zero)."""
    state = {}
    for i, key in enumerate(sorted(shapes)):
        rng, shape = np.random.default_rng(seed + i), tuple(shapes[key])
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            value = np.zeros(shape, np.int64)
        elif key.endswith("conv3d.weight"):
            fan_in = int(np.prod(shape[1:]))
            # He scale keeps the ReLU stack of order one; the logits layer (no ReLU after it) gets 1 / fan_in.
            gain = 1.0 if key.startswith("logits.") else 2.0
            value = rng.normal(0.0, np.sqrt(gain / fan_in), shape)
        elif key.endswith("bn.weight"):
            value = 1.0 + 0.1 * rng.normal(size=shape)
        elif key.endswith("bn.running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("bias", "running_mean"):
            value = 0.1 * rng.normal(size=shape)
        else:
            raise ValueError(f"reference_state: no rule for {key!r}")
        state[key] = value if value.dtype == np.int64 else value.astype(np.float32)
    return state


def reference_video(seed: int = SEED) -> np.ndarray:
    """float32 [1, 17, 160, 256, 3] uniform in [0, 1): the reference input, in channels-last layout."""
    return np.random.default_rng(seed + 10_000).random(VIDEO_SHAPE, dtype=np.float32)


def main(pytorch_i3d_path: str) -> None:
    import torch
    import torch.nn.functional as F

    spec = importlib.util.spec_from_file_location("pytorch_i3d", pytorch_i3d_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(SEED)
    model = module.InceptionI3d(400, in_channels=3).eval()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(v) for k, v in reference_state(shapes).items()})

    video = torch.from_numpy(reference_video())
    b, t, h, w, c = video.shape
    frames = video.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
    frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    x = (frames * 2 - 1).reshape(b, t, c, 224, 224).permute(0, 2, 1, 3, 4).contiguous()  # [B, C, T, H, W]
    with torch.no_grad():
        logits = model(x)
        features = model.extract_features(x)
    print("logits", tuple(logits.shape), "std", float(logits.std()), "features", tuple(features.shape),
          "mean", float(features.mean()))
    with open(os.path.join(HERE, "state_shapes.json"), "w") as f:
        json.dump(shapes, f, indent=0)
    np.savez_compressed(os.path.join(HERE, "reference.npz"), logits_bnt=logits.numpy().astype(np.float32),
                        features_bct=features[:, :, :, 0, 0].numpy().astype(np.float32))


if __name__ == "__main__":
    main(*sys.argv[1:])
