"""FID, precision and recall between two sets of images from anywhere — no workdir, no sampling.

    python examples/fid_of_two_sets.py --real real.npz --fake samples.npz --weights inception.safetensors
    python examples/fid_of_two_sets.py --real real.npz --fake samples.npz --builtin digits

Each set is an `.npz` with `images` (uint8 `[N, H, W, 3]` or float in [0, 1]; `mgt sample` writes this
layout) or a folder of image files. `--weights` is the Inception-v3 that `mgt convert inception`
makes (the standard FID network); `--builtin NAME` takes a shipped small network instead (digits,
captioned_shapes). The maths are `mgt.evaluation`'s: float64 Fréchet distance, k-NN precision / recall.
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np


def read_images(path: str) -> np.ndarray:
    """float32 `[N, H, W, 3]` in [0, 1] from an `.npz` (`images`) or a folder of same-size image files."""
    if path.endswith(".npz"):
        with np.load(path) as f:
            images = f["images"]
    else:
        from PIL import Image

        files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                       if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".webp")))
        images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def embed(net, images: np.ndarray, batch_size: int = 50) -> np.ndarray:
    """Features `[N, D]` of images in batches of one compiled shape (the last one padded)."""
    from flax import nnx

    forward = nnx.jit(lambda m, x: m(x)[0])
    out = []
    for start in range(0, len(images), batch_size):
        part = images[start:start + batch_size]
        padded = np.concatenate([part, np.repeat(part[-1:], batch_size - len(part), axis=0)])
        out.append(np.asarray(forward(net, padded))[:len(part)])
    return np.concatenate(out)


def main(argv=None) -> dict:
    from mgt.evaluation import FeatureStatistics, frechet_between, precision_recall

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real", required=True)
    p.add_argument("--fake", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--weights", help="Inception-v3 weights from `mgt convert inception`")
    group.add_argument("--builtin", help="a shipped small network: digits or captioned_shapes")
    p.add_argument("--batch-size", type=int, default=50)
    args = p.parse_args(argv)
    if args.weights:
        from mgt.evaluation.inception import load_inception

        net = load_inception(args.weights)
    else:
        from mgt.evaluation.small_nets import load_small_net

        net, _ = load_small_net(args.builtin)
    real = embed(net, read_images(args.real), args.batch_size)
    fake = embed(net, read_images(args.fake), args.batch_size)
    precision, recall = precision_recall(real, fake, k=3)
    result = {"fid": frechet_between(FeatureStatistics.of(fake), FeatureStatistics.of(real)),
              "precision": precision, "recall": recall, "real": len(real), "fake": len(fake)}
    print("  ".join(f"{k} {v:.4g}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
