"""Make the torchvggish reference outputs that tests/test_audio_eval.py compares `mgt.evaluation.vggish` with.

Run once, by hand, in a throwaway environment with torch (never in CI; the test reads only `reference.npz`).
The committed file was made with torch 2.14.1, numpy 2.4.6, resampy 0.4.3 and torchvggish at commit
f3f90969ce8fb77a05d984b892ddf662e8466377 (github.com/harritaylor/torchvggish):

    /tmp/refenv/bin/pip install torch numpy scipy resampy soundfile
    git clone https://github.com/harritaylor/torchvggish /tmp/torchvggish_src
    /tmp/refenv/bin/python tests/data/vggish/make_reference.py /tmp/torchvggish_src

The argument is the folder that holds the `torchvggish` package (its source is imported from there; nothing
is downloaded). The script

- builds torchvggish's `VGG` (the network of `vggish-10086976.pth`) with weights drawn from numpy alone
  (`torch_layout_weights` below; the test redraws the same arrays), so no checkpoint is needed;
- makes two seeded 16 kHz clips of 33 000 samples (tones plus noise; `signal` below, redrawn by the test);
- runs `vggish_input.waveform_to_examples(clip, 16000, return_tensor=False)` on each (the front end only:
  no model postprocessing) and `VGG.forward` on those examples as torchvggish feeds them (float32
  `[B, 1, 96, 64]`);
- applies torchvggish's `Postprocessor` (PCA, clip, 8-bit quantisation) with seeded PCA parameters;

and writes `reference.npz`: examples float32 `[2, 2, 96, 64]` (clip, example, frame, band), embeddings
float32 `[4, 128]` (clips' examples stacked), postprocessed float32 `[4, 128]`.
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
SAMPLES = 33000


def signal(seed: int = SEED) -> np.ndarray:
    """Two clips, float32 `[2, 33000]` in [-1, 1]: a few tones plus white noise, 16 kHz."""
    t = np.arange(SAMPLES) / 16000.0
    rng = np.random.default_rng(seed)
    tones = [0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 1234.5 * t),
             0.3 * np.sin(2 * np.pi * 220.0 * t) * np.cos(2 * np.pi * 3.0 * t) + 0.2 * np.sin(2 * np.pi * 5000.0 * t)]
    return np.stack([x + 0.05 * rng.standard_normal(SAMPLES) for x in tones]).astype(np.float32)


def torch_layout_weights(shapes: dict, seed: int = SEED) -> dict:
    """`{torch key: float32 array}`: for the i-th key in sorted order, `default_rng(seed + i)` normal draws,
    weights scaled by sqrt(2 / fan_in) (activations keep their scale through the ReLUs), biases by 0.1."""
    out = {}
    for i, key in enumerate(sorted(shapes)):
        shape = tuple(shapes[key])
        scale = np.sqrt(2.0 / np.prod(shape[1:])) if key.endswith("weight") else 0.1
        out[key] = np.random.default_rng(seed + i).standard_normal(shape, dtype=np.float32) * np.float32(scale)
    return out


def pca_parameters(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Seeded PCA means float32 `[128]` and eigen vectors float32 `[128, 128]` for the postprocessor."""
    rng = np.random.default_rng(seed + 1000)
    return (rng.standard_normal(128, dtype=np.float32) * np.float32(0.1),
            rng.standard_normal((128, 128), dtype=np.float32) * np.float32(0.05))


def main(source: str) -> None:
    import torch

    sys.path.insert(0, os.path.abspath(source))
    from torchvggish import vggish, vggish_input

    torch.manual_seed(SEED)
    model = vggish.VGG(vggish.make_layers()).eval()
    weights = torch_layout_weights({k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})

    examples = np.stack([vggish_input.waveform_to_examples(clip, 16000, return_tensor=False) for clip in signal()])
    with torch.no_grad():
        batch = torch.tensor(examples.reshape(-1, 96, 64))[:, None, :, :].float()  # as waveform_to_examples
        embeddings = model(batch)
        post = vggish.Postprocessor()
        means, vectors = pca_parameters()
        post.load_state_dict({"pca_means": torch.from_numpy(means.reshape(-1, 1)),
                              "pca_eigen_vectors": torch.from_numpy(vectors)})
        postprocessed = post(embeddings)

    path = os.path.join(HERE, "reference.npz")
    np.savez_compressed(path, examples=examples.astype(np.float32), embeddings=embeddings.numpy(),
                        postprocessed=postprocessed.numpy())
    print(f"wrote {path}: examples {examples.shape}, embeddings {tuple(embeddings.shape)} "
          f"(|mean| {embeddings.abs().mean():.3f}, zeros {(embeddings == 0).float().mean():.2f}), "
          f"postprocessed range {postprocessed.min():.0f}..{postprocessed.max():.0f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} TORCHVGGISH_SOURCE_DIR (the folder holding torchvggish/)")
    main(sys.argv[1])
