"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019) on k-NN feature manifolds.

Each set's manifold is the union of balls around its vectors, each ball's radius the distance to the
vector's k-th nearest neighbour within its own set (itself excluded). Precision is the fraction of
generated vectors inside the real manifold (fidelity); recall the fraction of real vectors inside the
generated manifold (coverage). Distances are computed in float64 blocks, so memory stays at
`block × N` whatever the set sizes.
"""

from __future__ import annotations

import numpy as np


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`[len(a), len(b)]` squared Euclidean distances (float64, clipped at 0 against round-off)."""
    d = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def knn_radii(features, k: int = 3, block: int = 1024) -> np.ndarray:
    """float64 `[N]`: the squared distance of each vector of `[N, D]` features to its k-th nearest other."""
    x = np.asarray(features, np.float64)
    if not 1 <= k < len(x):
        raise ValueError(f"k={k}: expected 1 <= k < number of vectors ({len(x)})")
    radii = np.empty(len(x))
    for start in range(0, len(x), block):
        d = _squared_distances(x[start:start + block], x)
        # the k+1-th smallest: the smallest is the vector itself (distance 0)
        radii[start:start + block] = np.partition(d, k, axis=1)[:, k]
    return radii


def coverage_of(queries, manifold, radii, block: int = 1024) -> float:
    """The fraction of `queries` `[M, D]` inside any ball (centre `manifold[j]`, squared radius `radii[j]`)."""
    q, m = np.asarray(queries, np.float64), np.asarray(manifold, np.float64)
    inside = 0
    for start in range(0, len(q), block):
        d = _squared_distances(q[start:start + block], m)
        inside += int(np.sum(np.any(d <= radii[None, :], axis=1)))
    return inside / max(len(q), 1)


def precision_recall(real, generated, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of `generated` `[M, D]` against `real` `[N, D]` features with k-NN manifolds."""
    real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"precision_recall: expected [N, D] and [M, D] features, got {real.shape} and "
                         f"{generated.shape}")
    precision = coverage_of(generated, real, knn_radii(real, k))
    recall = coverage_of(real, generated, knn_radii(generated, k))
    return precision, recall
