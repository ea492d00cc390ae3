"""2D → 3D inflation: start a video tokenizer (and its discriminator) from a trained image tokenizer.

The 3D VQGAN mirrors the 2D one name for name (`mgt.tokenizers.vqgan3d_layers`), so every 3D
parameter has a 2D counterpart at the same path:

- a conv kernel `[kh, kw, I, O]` becomes `[kt, kh, kw, I, O]`: mode "central" puts the 2D kernel in
  the temporal tap that sees the current frame (the middle one, or the last one of a causal conv) and
  zeros elsewhere — on a static video every frame then comes out exactly as the 2D model's; mode
  "average" puts kernel / kt in every tap (MAGVIT's alternative);
- a dense layer over a flattened `(t, h, w, c)` grid (the discriminator's first dense layer) gets
  the 2D weights for `(h, w, c)` repeated over t and divided by t;
- everything else (norms, biases, the codebook) is copied unchanged.

`inflate_tree(source, target, ...)` works on flat `{path: array}` dicts, so it serves the generator,
its EMA copy and the discriminator alike; `inflate_workdir_state` reads a trained image workdir.
"""

from __future__ import annotations

import os

import numpy as np

MODES = ("central", "average")
_SIZES_HINT = ("the video tokenizer must have the image tokenizer's sizes (base_channels, channel_multipliers, "
               "num_res_blocks, embedding_dim, codebook_size) and shortcut='output'")


def inflate_kernel(kernel2d: np.ndarray, time_taps: int, *, mode: str = "central", causal: bool = False):
    """`[kh, kw, I, O]` → `[time_taps, kh, kw, I, O]` (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"inflation mode must be one of {list(MODES)}, got {mode!r}")
    kernel2d = np.asarray(kernel2d)
    out = np.zeros((time_taps,) + kernel2d.shape, kernel2d.dtype)
    if mode == "average":
        out[:] = kernel2d / time_taps
    else:
        out[time_taps - 1 if causal else time_taps // 2] = kernel2d
    return out


def inflate_array(source: np.ndarray, target_shape: tuple[int, ...], *, mode: str, causal: bool, path: str):
    """One 2D parameter → the 3D parameter of `target_shape` (ValueError naming `path` if it cannot)."""
    source = np.asarray(source)
    target_shape = tuple(int(s) for s in target_shape)
    if source.shape == target_shape:
        return source
    if source.ndim + 1 == len(target_shape) and source.shape == target_shape[1:]:
        return inflate_kernel(source, target_shape[0], mode=mode, causal=causal)
    if source.ndim == 2 == len(target_shape) and source.shape[1] == target_shape[1] \
            and target_shape[0] % source.shape[0] == 0:
        t = target_shape[0] // source.shape[0]
        # rows are the flattened (t, h, w, c) grid: the same (h, w, c) block once per time cell
        return np.tile(source, (t, 1)) / t
    raise ValueError(f"cannot inflate {path}: 2D shape {source.shape}, 3D shape {target_shape}; {_SIZES_HINT}")


def inflate_tree(source: dict[str, np.ndarray], target: dict[str, tuple], *, mode: str = "central",
                 causal: bool = False, what: str = "the 3D model") -> dict[str, np.ndarray]:
    """Flat 2D parameters `{path: array}` → flat 3D parameters for `target` `{path: shape}`.
    Raises ValueError listing 3D paths without a 2D counterpart."""
    missing = sorted(p for p in target if p not in source)
    if missing:
        raise ValueError(f"the image tokenizer has no parameters for {len(missing)} of {what}'s: {missing[:6]}; "
                         f"{_SIZES_HINT}")
    return {p: inflate_array(source[p], shape, mode=mode, causal=causal, path=p) for p, shape in target.items()}


def flat_paths(tree, prefix: str = "") -> dict[str, object]:
    """Nested dicts / nnx States → `{"a/b/0/kernel": leaf}` (keys joined with "/")."""
    out = {}
    items = tree.items() if hasattr(tree, "items") else enumerate(tree) if isinstance(tree, (list, tuple)) else None
    if items is None:
        return {prefix.rstrip("/"): tree}
    for k, v in items:
        out.update(flat_paths(v, f"{prefix}{k}/"))
    return out


def read_workdir_tokenizer(workdir: str) -> dict[str, dict[str, np.ndarray]]:
    """The latest tokenizer checkpoint of an image workdir → `{"params", "ema", "disc_params"}`, each a
    flat `{path: array}` dict (`disc_params` empty without a discriminator)."""
    from mgt.training.checkpoint import Checkpointer

    folder = os.path.join(workdir, "tokenizer", "checkpoints")
    if not os.path.isdir(folder):
        raise ValueError(f"config.tokenizer.inflate_from={workdir!r} has no tokenizer checkpoints ({folder})")
    ckpt = Checkpointer(folder)
    try:
        if ckpt.latest_step() is None:
            raise ValueError(f"config.tokenizer.inflate_from={workdir!r}: {folder} holds no checkpoint")
        tree = ckpt.read_tree()
    finally:
        ckpt.close()
    # saved nnx variables end in ".../value"
    return {key: {p.removesuffix("/value"): np.asarray(v) for p, v in flat_paths(tree.get(key, {})).items()}
            for key in ("params", "ema", "disc_params")}
