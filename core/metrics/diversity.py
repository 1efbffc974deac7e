"""L1 diversity (EMAGE's L1div, docs/METHOD.md §8).

Per clip: joint positions without root translation, flattened to (N, 165); sum over frames and coordinates
of |x_t - mean_t(x)|. Pooled over clips: total sum / total frames (EMAGE accumulates exactly so).
A still pose scores 0; larger = the motion wanders further from its own mean pose.
"""
from __future__ import annotations

import numpy as np


def l1_deviation_sum(positions: np.ndarray) -> tuple[float, int]:
    """(N, J, 3) positions -> (sum of |x_t - mean(x)| over frames and coordinates, N)."""
    flat = np.asarray(positions, np.float64).reshape(positions.shape[0], -1)
    if flat.shape[0] == 0:
        return 0.0, 0
    return float(np.abs(flat - flat.mean(axis=0)).sum()), int(flat.shape[0])


def l1_diversity(position_sets: list[np.ndarray]) -> float:
    """Pooled L1div over clips (each clip measured against its own mean pose)."""
    total, frames = 0.0, 0
    for positions in position_sets:
        s, n = l1_deviation_sum(positions)
        total, frames = total + s, frames + n
    return total / frames if frames else float("nan")
