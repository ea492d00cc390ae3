"""Video quality measures that need no download: per-frame PSNR / SSIM and a translation-robust digit
classifier for moving digits.

The digit classifier is the image digits' (an RBF support-vector machine on real 16 px training
digits, `mgt.modalities.image.metrics.digit_classifier`), applied to 16 × 16 windows of a frame: the
window centred on the bounding box of the frame's ink, shifted by up to `search` pixels each way; the
window the classifier is surest of gives the frame's label. A digit anywhere in the frame is thus
labelled as if it were centred.
"""

from __future__ import annotations

import numpy as np

DIGIT = 16  # side of a moving digit in pixels (an 8 × 8 scikit-learn digit upscaled twice)


def grey_frames(videos) -> np.ndarray:
    """float `[..., H, W, C]` in [0, 1] (or uint8) → float32 `[..., H, W]` grey in [0, 1].

    The scale comes from the dtype, not the values: a generated float clip that overshoots 1 (the
    tokenizer's decoder is not clipped) is clipped, not read as 0–255."""
    x = np.asarray(videos)
    scale = 255.0 if np.issubdtype(x.dtype, np.integer) else 1.0
    return np.clip(x.astype(np.float32).mean(-1) / scale, 0.0, 1.0)


def digit_windows(frames, *, search: int = 2, threshold: float = 0.2) -> np.ndarray:
    """Grey frames `[N, H, W]` → float32 `[N, (2·search+1)², 16·16]`: windows around each frame's ink."""
    n, h, w = frames.shape
    pad = DIGIT + search
    padded = np.pad(frames, ((0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, (2 * search + 1) ** 2, DIGIT * DIGIT), np.float32)
    for i, frame in enumerate(frames):
        rows, cols = np.nonzero(frame > threshold)
        cy, cx = ((rows.min() + rows.max() + 1) / 2, (cols.min() + cols.max() + 1) / 2) if rows.size else (h / 2, w / 2)
        top, left = int(round(cy - DIGIT / 2)) + pad, int(round(cx - DIGIT / 2)) + pad
        k = 0
        for dy in range(-search, search + 1):
            for dx in range(-search, search + 1):
                out[i, k] = padded[i, top + dy:top + dy + DIGIT, left + dx:left + dx + DIGIT].reshape(-1)
                k += 1
    return out


def frame_digit_labels(videos, *, search: int = 2) -> np.ndarray:
    """Clips `[N, T, H, W, C]` → int `[N, T]`: each frame's digit as the real-digit classifier reads it."""
    from mgt.modalities.image.metrics import digit_classifier

    frames = grey_frames(videos)
    n, t = frames.shape[:2]
    clf, _, _ = digit_classifier(DIGIT)
    windows = digit_windows(frames.reshape((n * t,) + frames.shape[2:]), search=search)
    scores = clf.decision_function(windows.reshape(-1, DIGIT * DIGIT)).reshape(n * t, windows.shape[1], -1)
    best = scores.max(-1).argmax(-1)  # the window the classifier is surest of
    labels = clf.classes_[scores[np.arange(n * t), best].argmax(-1)]
    return labels.reshape(n, t)


def class_consistency(videos, labels, *, per_class: bool = False) -> dict:
    """How the real-digit classifier reads clips `[N, T, H, W, C]` of classes `labels` int `[N]`.

    Returns floats: `frame_class_accuracy` (share of frames labelled with their clip's class),
    `label_flips_per_clip` (changes between consecutive frames' labels, averaged over clips) and
    `clip_majority_accuracy` (share of clips whose class is read on more frames than any other digit).
    With `per_class`, also `per_class_frame_accuracy` (a list: frame accuracy of each class 0..C-1, None
    for a class with no clip) and `confusion` (int lists `[C][C]`: frames of class i read as j), C = 10.
    """
    read = frame_digit_labels(videos)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != read.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries for {read.shape[0]} clips; expected one per clip")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"labels must be digit classes in [0, 10), got values in [{labels.min()}, {labels.max()}]")
    right = read == labels[:, None]
    counts = (read[:, :, None] == np.arange(10)).sum(1)  # [N, 10]: frames of each clip read as each digit
    clips = np.arange(len(labels))
    own = counts[clips, labels]
    others = counts.copy()
    others[clips, labels] = -1
    out = {"frame_class_accuracy": float(np.mean(right)),
           "label_flips_per_clip": float(np.mean(np.sum(read[:, 1:] != read[:, :-1], axis=1))),
           "clip_majority_accuracy": float(np.mean(own > others.max(-1)))}
    if per_class:
        out["per_class_frame_accuracy"] = [float(right[labels == c].mean()) if np.any(labels == c) else None
                                           for c in range(10)]
        out["confusion"] = [counts[labels == c].sum(0).tolist() for c in range(10)]
    return out


def motion_and_diversity(videos, labels=None) -> dict:
    """How far the ink moves and how different the clips are: clips `[N, T, H, W, C]` → floats.

    `ink_speed` is the mean distance in pixels between the ink's centroids (grey-level weighted) of
    consecutive frames; `within_class_distance` is the mean absolute grey difference between two
    clips of the same class (over all pairs, averaged over the classes with at least two clips; all
    clips are one class when `labels` is None). A sampler can read more frames right by drawing the
    same clip for every example or by leaving a digit in place; these say when it does.
    """
    g = grey_frames(videos)  # [N, T, H, W]
    n, t, h, w = g.shape
    mass = g.sum((2, 3)) + 1e-6
    cy = (g.sum(3) * np.arange(h)).sum(2) / mass
    cx = (g.sum(2) * np.arange(w)).sum(2) / mass
    speed = float(np.hypot(np.diff(cy, axis=1), np.diff(cx, axis=1)).mean()) if t > 1 else 0.0
    labels = np.zeros(n, np.int32) if labels is None else np.asarray(labels).reshape(-1)
    flat = g.reshape(n, -1)
    distances = []
    for c in np.unique(labels):
        x = flat[labels == c]
        if len(x) > 1:
            d = np.abs(x[:, None] - x[None]).mean(-1)
            distances.append(d[np.triu_indices(len(x), 1)].mean())
    return {"ink_speed": speed, "within_class_distance": float(np.mean(distances)) if distances else float("nan")}


def psnr(x, y, axis=None) -> np.ndarray:
    """PSNR in dB of images in [0, 1] (the mean squared error over `axis`, all when None)."""
    mse = np.mean(np.square(np.asarray(x, np.float64) - np.clip(np.asarray(y, np.float64), 0, 1)), axis=axis)
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def ssim(x, y) -> float:
    """Mean SSIM of grey frames `[..., H, W]` in [0, 1] (Gaussian window σ = 1.5, Wang et al. 2004)."""
    from scipy.ndimage import gaussian_filter

    a = np.asarray(x, np.float64).reshape((-1,) + np.shape(x)[-2:])
    b = np.clip(np.asarray(y, np.float64), 0, 1).reshape(a.shape)
    blur = lambda z: gaussian_filter(z, sigma=(0, 1.5, 1.5), truncate=3.5)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma ** 2, blur(b * b) - mb ** 2, blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    return float(s.mean())
