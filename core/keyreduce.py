"""Key reduction: dense per-frame keys -> the few key poses that linear interpolation needs (no bpy).

Ramer–Douglas–Peucker on curves with several channels: a segment between two kept keys is split at the
frame whose error is largest, until every frame is within tolerance. The error of a frame is measured per
channel group (a bone's 4 quaternion components, the 3 root position components, one expression) as the
Euclidean distance between the original value and the linear interpolation of the kept keys, divided by the
group's tolerance; a frame is fine when that ratio is <= 1 for every group. Reducing all groups together
gives keys at the same frames on every channel (whole key poses); reducing each group alone gives the
fewest keys per bone.

For quaternions, a rotation error of `angle` radians between unit quaternions is a 4-D distance of
2 sin(angle / 4); `quaternion_tolerance` converts degrees to that distance.
"""
from __future__ import annotations

import numpy as np


def quaternion_tolerance(degrees: float) -> float:
    return float(2.0 * np.sin(np.radians(degrees) / 4.0))


def reduce_keys(times: np.ndarray, values: np.ndarray, groups: list[slice] | None = None,
                tolerances=None) -> np.ndarray:
    """Indices of the keys to keep (always the first and last).

    times (N,) increasing; values (N, C); groups: channel slices measured together (default: each channel
    alone); tolerances: one per group (> 0). Linear interpolation between kept keys is within tolerance
    at every original key.
    """
    times = np.asarray(times, np.float64)
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n, c = values.shape
    if times.shape != (n,):
        raise ValueError(f"times has shape {times.shape}, expected ({n},)")
    if n <= 2:
        return np.arange(n)
    if groups is None:
        groups = [slice(i, i + 1) for i in range(c)]
    tol = np.broadcast_to(np.asarray(1.0 if tolerances is None else tolerances, np.float64), (len(groups),))
    if np.any(tol <= 0):
        raise ValueError("tolerances must be positive")
    keep = np.zeros(n, bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        t = (times[a + 1:b] - times[a]) / (times[b] - times[a])
        interp = values[a] + t[:, None] * (values[b] - values[a])
        diff = values[a + 1:b] - interp
        ratio = np.zeros(b - a - 1)
        for g, sl in enumerate(groups):
            ratio = np.maximum(ratio, np.linalg.norm(diff[:, sl], axis=1) / tol[g])
        worst = int(np.argmax(ratio))
        if ratio[worst] > 1.0:
            split = a + 1 + worst
            keep[split] = True
            stack.append((a, split))
            stack.append((split, b))
    return np.flatnonzero(keep)


def max_interpolation_error(times: np.ndarray, values: np.ndarray, kept: np.ndarray, group: slice) -> float:
    """Largest distance, over all frames, between the values and the linear interpolation of `kept` keys."""
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    sub = values[:, group]
    interp = np.stack([np.interp(times, times[kept], sub[kept, i]) for i in range(sub.shape[1])], 1)
    return float(np.linalg.norm(sub - interp, axis=1).max())
