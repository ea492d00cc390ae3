"""Make the PyTorch reference data for tests/test_inception.py: pytorch-fid's FID Inception-v3 outputs on
seeded weights and images, and the tiny `.pth` fixtures of tests/data/torch_files/.

Run once, by hand, in a throwaway environment with torch, torchvision and pytorch-fid (never in CI; the
tests read only what this writes, and import this file only for its numpy functions). The committed
files were made with torch 2.14.1, torchvision 0.29.1 and pytorch-fid 0.3.0 on a CPU:

    /tmp/refenv/bin/python tests/data/inception/make_reference.py

The 23.9 M real weights cannot be committed, so every tensor of the pytorch-fid state dict is drawn by
`seeded_state` from numpy alone — key i in sorted key order from `np.random.default_rng(SEED + i)` —
at scales that keep activations of order 1 through all 94 conv layers (He-scaled conv kernels,
BatchNorm gains in [0.8, 1.2], running variances in [0.5, 1.5], biases and means ~0.1). The test draws
the same dict, maps it with `inception_arrays_from_torch` and compares. The images come from
`seeded_images` (uniform noise: every pixel matters to the resize): two 64×64 images (upsampled to
299) and one 320×320 image (downsampled).

Written here:
- `torch_state_shapes.json`: `{key: [shape, dtype]}` of pytorch-fid's state dict, in its order.
- `reference.npz`: `pool` [3, 2048] and `logits` [3, 1008] float32 of `InceptionV3([3])` (resize_input
  and normalize_input on, eval mode) — the pool features flattened and the logits as
  `fid_inception_v3().forward` computes them from the same pool (dropout is off in eval) — and
  `resize_*`: `F.interpolate(..., mode='bilinear', align_corners=False)` of a small seeded image to a
  few sizes that up- and downsample.
- tests/data/torch_files/: `state_zip.pth` / `state_legacy.pth` (the same tensors in both formats:
  see `fixture_tensors`), `nested_zip.pth` / `nested_legacy.pth` (a module's state dict under
  'state_dict' next to non-tensor entries), `torchscript.pt` (torch.jit.save of a scripted Linear),
  `forbidden_global.pkl` (a bare pickle of `os.system`) and `forbidden_zip.pth` (torch.save of a dict
  holding `os.system`).
"""

from __future__ import annotations

import collections
import json
import os
import pickle

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TORCH_FILES = os.path.join(os.path.dirname(HERE), "torch_files")
SEED = 0
IMAGE_SEED = 1234
# (batch, height, width) of each reference input: one size upsamples to 299, one downsamples.
IMAGE_SHAPES = ((2, 64, 64), (1, 320, 320))
RESIZE_INPUT_SHAPE = (1, 7, 9, 3)  # NHWC
RESIZE_SIZES = ((13, 4), (3, 20), (7, 9))


def seeded_state(shapes: dict[str, tuple[list[int], str]], seed: int = SEED) -> dict[str, np.ndarray]:
    """pytorch-fid's state dict drawn from numpy: `shapes` is `{key: (shape, dtype)}` as in
    torch_state_shapes.json. Key i of the sorted keys uses `np.random.default_rng(seed + i)`."""
    state = {}
    for i, key in enumerate(sorted(shapes)):
        shape, dtype = tuple(shapes[key][0]), shapes[key][1]
        rng = np.random.default_rng(seed + i)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            value = np.zeros(shape, np.int64)
        elif key.endswith("conv.weight"):  # OIHW, fan-in = I·H·W; He scale for the relu that follows
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif key == "fc.weight":
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        elif leaf == "weight":  # BatchNorm gain
            value = rng.uniform(0.8, 1.2, shape)
        elif leaf == "running_var":
            value = rng.uniform(0.5, 1.5, shape)
        else:  # BatchNorm bias and running mean, fc bias
            value = 0.1 * rng.standard_normal(shape)
        state[key] = value.astype(np.int64 if dtype == "int64" else np.float32)
    return state


def seeded_images(seed: int = IMAGE_SEED) -> list[np.ndarray]:
    """The reference inputs: one float32 NHWC array in [0, 1) per entry of IMAGE_SHAPES."""
    rng = np.random.default_rng(seed)
    return [rng.random((b, h, w, 3), dtype=np.float32) for b, h, w in IMAGE_SHAPES]


def seeded_resize_input(seed: int = IMAGE_SEED + 1) -> np.ndarray:
    return np.random.default_rng(seed).random(RESIZE_INPUT_SHAPE, dtype=np.float32)


def fixture_tensors(torch):
    """The tensors of state_zip.pth / state_legacy.pth (the test writes the same numbers by hand)."""
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3) + 0.5
    return collections.OrderedDict(
        float32=torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4,
        float64=torch.tensor([0.1, -2.5], dtype=torch.float64),
        int64=torch.tensor([1, -2, 2**40], dtype=torch.int64),
        int32=torch.tensor([[7], [-8]], dtype=torch.int32),
        uint8=torch.tensor([0, 255], dtype=torch.uint8),
        float16=torch.tensor([0.5, -1.25, 65504.0], dtype=torch.float16),
        bfloat16=torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        bool=torch.tensor([True, False, True]),
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 3),
        base=base,
        transposed=base.t(),  # stride (1, 3): not contiguous
        slice=base.view(-1)[2:5],  # storage offset 2
        column=base[:, 1],  # offset 1, stride 3
        parameter=torch.nn.Parameter(torch.tensor([[1.0, 2.0]])),
    )


def make_torch_files(torch) -> None:
    os.makedirs(TORCH_FILES, exist_ok=True)
    tensors = fixture_tensors(torch)
    torch.save(tensors, os.path.join(TORCH_FILES, "state_zip.pth"))
    torch.save(tensors, os.path.join(TORCH_FILES, "state_legacy.pth"), _use_new_zipfile_serialization=False)

    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    with torch.no_grad():
        module[0].weight.copy_(torch.arange(6, dtype=torch.float32).reshape(3, 2) / 2)
        module[0].bias.copy_(torch.tensor([-1.0, 0.0, 1.0]))
    nested = {"state_dict": module.state_dict(), "epoch": 7, "meta": {"name": "tiny", "lr": 0.1},
              "history": [torch.tensor([0.25, 0.5])]}
    torch.save(nested, os.path.join(TORCH_FILES, "nested_zip.pth"))
    torch.save(nested, os.path.join(TORCH_FILES, "nested_legacy.pth"), _use_new_zipfile_serialization=False)

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), os.path.join(TORCH_FILES, "torchscript.pt"))
    with open(os.path.join(TORCH_FILES, "forbidden_global.pkl"), "wb") as f:
        pickle.dump(os.system, f, protocol=2)
    torch.save({"x": os.system}, os.path.join(TORCH_FILES, "forbidden_zip.pth"))


def main() -> None:
    import torch
    import torch.nn.functional as F
    import torchvision
    from pytorch_fid import inception as fid_inception

    torch.set_num_threads(2)
    make_torch_files(torch)

    # The FID network's key set is torchvision's Inception3(num_classes=1008, aux_logits=False): the FID
    # blocks subclass torchvision's with the same constructors.
    template = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                               init_weights=False)
    shapes = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in template.state_dict().items()}
    with open(os.path.join(HERE, "torch_state_shapes.json"), "w") as f:
        json.dump(shapes, f, indent=0)
    state = {k: torch.from_numpy(v) for k, v in seeded_state(shapes).items()}
    # pytorch-fid downloads the weights inside fid_inception_v3(); hand it the seeded dict instead (its
    # strict load_state_dict checks that the keys are exactly these).
    fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state

    model = fid_inception.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    full = fid_inception.fid_inception_v3().eval()  # the Inception3 forward, for the logits check
    pools, logits = [], []
    with torch.no_grad():
        for images in seeded_images():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
            pool = model(x)[0].flatten(1)
            logit = F.linear(pool, state["fc.weight"], state["fc.bias"])
            resized = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
            check = full(resized)
            assert torch.allclose(check, logit, atol=1e-5), float((check - logit).abs().max())
            pools.append(pool.numpy())
            logits.append(logit.numpy())
            print(f"{tuple(images.shape)}: pool mean {pool.mean():.4f} std {pool.std():.4f}, "
                  f"logits std {logit.std():.4f}")
        small = torch.from_numpy(seeded_resize_input()).permute(0, 3, 1, 2)
        resizes = {f"resize_{h}x{w}": F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
                   .permute(0, 2, 3, 1).numpy() for h, w in RESIZE_SIZES}
    np.savez_compressed(os.path.join(HERE, "reference.npz"), pool=np.concatenate(pools).astype(np.float32),
                        logits=np.concatenate(logits).astype(np.float32), **resizes)
    print("wrote", HERE, "and", TORCH_FILES)


if __name__ == "__main__":
    main()
