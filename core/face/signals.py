"""The face vector and its slow/fast split, shared by fitting, lip-sync and the mapping.

Face vector = [jaw axis-angle (3), expressions (100)] per frame, as in the take. Speech mouth movements are
fast (phones last 30-200 ms); a take's mean face differs from take to take (BEAT2's two GT takes differ by
0.1 in expression 0, as much as a vowel moves it), so lip-sync statistics are taken on the fast part:
face minus its moving average over about a second.

numpy only: the bpy layer imports this (Face Mapping) and Blender's Python has no scipy. The two filters
follow scipy.ndimage's conventions (mode "nearest"; tests compare them with scipy where it is installed).
"""
from __future__ import annotations

import numpy as np

from ..motion.skeleton import NUM_EXPRESSIONS, POSE_JAW
from ..motion.take import Take

FACE_DIMS = 3 + NUM_EXPRESSIONS
JAW = slice(0, 3)
EXPR = slice(3, FACE_DIMS)


def face_vector(take: Take) -> np.ndarray:
    """(N, 103) float64: jaw axis-angle then the 100 expression coefficients."""
    return np.concatenate([take.poses[:, POSE_JAW], take.expressions], axis=1).astype(np.float64)


def with_face(take: Take, face: np.ndarray) -> Take:
    """A copy of `take` with its jaw and expressions replaced by `face` (N, 103)."""
    poses = take.poses.copy()
    poses[:, POSE_JAW] = face[:, JAW]
    out = Take(poses=poses, trans=take.trans.copy(), expressions=face[:, EXPR].astype(np.float32),
               betas=take.betas, fps=take.fps, gender=take.gender, meta=dict(take.meta))
    return out


def slow_part(x: np.ndarray, window_frames: int) -> np.ndarray:
    """Moving average over `window_frames` (edges repeat the end values)."""
    if window_frames <= 1 or len(x) == 0:
        return np.array(x, np.float64, copy=True)
    return _moving_average(np.asarray(x, np.float64), int(window_frames))


def fast_part(x: np.ndarray, window_frames: int) -> np.ndarray:
    return np.asarray(x, np.float64) - slow_part(x, window_frames)


def smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing along time (co-articulation); sigma 0 returns a copy."""
    x = np.asarray(x, np.float64)
    if sigma_frames <= 0 or len(x) == 0:
        return x.copy()
    return _gaussian_smooth(x, float(sigma_frames))


def _edge_padded(x: np.ndarray, before: int, after: int) -> np.ndarray:
    return np.concatenate([np.repeat(x[:1], before, 0), x, np.repeat(x[-1:], after, 0)], axis=0)


def _moving_average(x: np.ndarray, size: int) -> np.ndarray:
    """Centred moving average along axis 0 (scipy's uniform_filter1d window: size // 2 frames before)."""
    before = size // 2
    padded = _edge_padded(x, before, size - 1 - before)
    csum = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(padded, axis=0)], axis=0)
    return (csum[size:] - csum[:-size]) / size


def _gaussian_smooth(x: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Gaussian filter along axis 0 (scipy's gaussian_filter1d kernel: radius int(truncate * sigma + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    padded = _edge_padded(x, radius, radius)
    out = np.zeros_like(x)
    for k, w in enumerate(kernel):
        out += w * padded[k:k + len(x)]
    return out
