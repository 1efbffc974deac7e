"""Fréchet distance between two sets of feature vectors (the "F" of FGD).

FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), each set modelled as a Gaussian. The trace of
the matrix square root is computed as tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)) with symmetric eigen-
decompositions: the same value, real and stable even for rank-deficient covariances (fewer vectors than
dimensions). With few vectors FD has a positive bias even for two samples of the same motion, so compare
FGD figures only between systems measured on the same clips with the same evaluator.
"""
from __future__ import annotations

import numpy as np


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """feats (N, D) and (M, D) -> Fréchet distance between their Gaussian fits (0 for identical sets)."""
    a = np.asarray(feats_a, np.float64)
    b = np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each feature set needs at least 2 vectors")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum())
    dist = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    return max(dist, 0.0)  # round-off can give -1e-12 for identical sets
