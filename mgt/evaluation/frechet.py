"""Feature statistics and the Fréchet distance between two Gaussians (FID, FVD, FAD, rFID).

    d² = |μ₁ − μ₂|² + tr(Σ₁) + tr(Σ₂) − 2 tr((Σ₁ Σ₂)^½)

pytorch-fid and the ADM suite take `scipy.linalg.sqrtm(Σ₁ Σ₂)` of a non-symmetric product, which can
turn complex or blow up when a covariance is near-singular (fewer samples than feature dimensions) and
needs an ad-hoc ε offset. Here the trace term is computed from symmetric matrices only:
tr((Σ₁ Σ₂)^½) = Σᵢ √λᵢ(Σ₁^½ Σ₂ Σ₁^½), with Σ₁^½ from an eigendecomposition and negative round-off
eigenvalues clipped to zero — the same number wherever sqrtm is well defined (tested to 1e-6), and
finite for any pair of positive semi-definite covariances. Everything is float64.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
    """The Gaussian of a feature set: `mean` float64 `[D]`, `cov` float64 `[D, D]`, `count` vectors."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def of(cls, features) -> "FeatureStatistics":
        """Mean and (unbiased, N − 1) covariance of float `[N, D]` features, N ≥ 2."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"features: expected an [N, D] array with N >= 2, got shape {x.shape}")
        return cls(mean=x.mean(0), cov=np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), count=len(x))

    def save(self, path: str) -> None:
        np.savez(path, mean=self.mean, cov=self.cov, count=self.count)

    @classmethod
    def load(cls, path: str) -> "FeatureStatistics":
        with np.load(path) as f:
            return cls(mean=f["mean"], cov=f["cov"], count=int(f["count"]) if "count" in f else 0)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative round-off → 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
    """The squared Fréchet distance between N(`mean1`, `cov1`) and N(`mean2`, `cov2`) (what FID reports).

    Args: means `[D]`, covariances `[D, D]` (symmetric PSD), any float dtype (computed in float64).
    Returns a float ≥ 0 (clipped at 0 against round-off).
    """
    m1, m2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    s1, s2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if m1.shape != m2.shape or m1.ndim != 1 or s1.shape != (len(m1),) * 2 or s2.shape != s1.shape:
        raise ValueError(f"frechet_distance: expected means [D] and covariances [D, D] of one D, got "
                         f"{m1.shape}, {s1.shape}, {m2.shape}, {s2.shape}")
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    trace_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None))))
    d2 = float(np.sum(np.square(m1 - m2)) + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)
    return max(d2, 0.0)


def frechet_between(a: FeatureStatistics, b: FeatureStatistics) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """Inception score exp(E_x KL(p(y|x) ‖ p(y))) of float `[N, C]` classifier logits, as the original
    (Salimans et al.) computes it: the mean and standard deviation over `splits` consecutive chunks."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    splits = max(1, min(int(splits), len(z)))
    scores = []
    for chunk in np.array_split(log_p, splits):
        p = np.exp(chunk)
        log_marginal = np.log(np.mean(p, axis=0, keepdims=True))
        scores.append(float(np.exp(np.mean(np.sum(p * (chunk - log_marginal), axis=1)))))
    return float(np.mean(scores)), float(np.std(scores))
