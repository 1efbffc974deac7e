"""Key reduction: dense per-frame keys -> the few key poses that linear interpolation needs (no bpy).

Ramer–Douglas–Peucker on curves with several channels: a segment between two kept keys is split at the
frame whose error is largest, until every frame is within tolerance. The error of a frame is measured per
channel group (a bone's 4 quaternion components, the 3 root position components, one expression) as the
Euclidean distance between the original value and the linear interpolation of the kept keys, divided by the
group's tolerance; a frame is fine when that ratio is <= 1 for every group. Reducing all groups together
gives keys at the same frames on every channel (whole key poses); reducing each group alone gives the
fewest keys per bone. Segments are split worst first, so a key budget (`max_keys`) stops with the largest
errors already taken care of; the error that is left is then reported, not hidden.

For quaternions, a rotation error of `angle` radians between unit quaternions is a 4-D distance of
2 sin(angle / 4); `quaternion_tolerance` converts degrees to that distance.
"""
from __future__ import annotations

import heapq

import numpy as np


def quaternion_tolerance(degrees: float) -> float:
    return float(2.0 * np.sin(np.radians(degrees) / 4.0))


def reduce_keys(times: np.ndarray, values: np.ndarray, groups: list[slice] | None = None,
                tolerances=None, max_keys: int | None = None) -> np.ndarray:
    """Indices of the keys to keep (always the first and last).

    times (N,) increasing; values (N, C); groups: channel slices measured together (default: each channel
    alone); tolerances: one per group (> 0). Linear interpolation between kept keys is within tolerance
    at every original key. max_keys (>= 2): a budget; keys are added worst error first (the segment whose
    worst frame is furthest out of tolerance is split first), so when the budget stops it the error left
    is as small as this greedy order makes it: measure it with `interpolate_kept`.
    """
    times = np.asarray(times, np.float64)
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n, c = values.shape
    if times.shape != (n,):
        raise ValueError(f"times has shape {times.shape}, expected ({n},)")
    if max_keys is not None and max_keys < 2:
        raise ValueError("max_keys must be at least 2 (the first and last key)")
    if n <= 2:
        return np.arange(n)
    if groups is None:
        groups = [slice(i, i + 1) for i in range(c)]
    tol = np.broadcast_to(np.asarray(1.0 if tolerances is None else tolerances, np.float64), (len(groups),))
    if np.any(tol <= 0):
        raise ValueError("tolerances must be positive")

    def worst(a: int, b: int):
        """(largest error / tolerance inside (a, b), the frame where it is)."""
        t = (times[a + 1:b] - times[a]) / (times[b] - times[a])
        diff = values[a + 1:b] - (values[a] + t[:, None] * (values[b] - values[a]))
        ratio = np.zeros(b - a - 1)
        for g, sl in enumerate(groups):
            ratio = np.maximum(ratio, np.linalg.norm(diff[:, sl], axis=1) / tol[g])
        k = int(np.argmax(ratio))
        return float(ratio[k]), a + 1 + k

    keep = np.zeros(n, bool)
    keep[0] = keep[-1] = True
    count = 2
    ratio, split = worst(0, n - 1)
    heap = [(-ratio, 0, n - 1, split)]
    while heap:
        neg_ratio, a, b, split = heapq.heappop(heap)
        if -neg_ratio <= 1.0 or (max_keys is not None and count >= max_keys):
            break   # the worst segment left is within tolerance, or the budget is spent
        keep[split] = True
        count += 1
        for lo, hi in ((a, split), (split, b)):
            if hi - lo >= 2:
                ratio, at = worst(lo, hi)
                heapq.heappush(heap, (-ratio, lo, hi, at))
    return np.flatnonzero(keep)


def interpolate_kept(times: np.ndarray, values: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(N, C) the values that linear interpolation of the kept keys gives at every time (what plays)."""
    times = np.asarray(times, np.float64)
    values = np.asarray(values, np.float64)
    values = values[:, None] if values.ndim == 1 else values
    return np.stack([np.interp(times, times[kept], values[kept, i]) for i in range(values.shape[1])], 1)


def quaternion_angle_deg(reference: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(...) rotation angle in degrees between quaternions (..., 4); neither needs unit length (Blender
    normalises interpolated quaternion keys)."""
    a = reference / np.linalg.norm(reference, axis=-1, keepdims=True)
    b = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.degrees(2.0 * np.arccos(np.clip(np.abs(np.sum(a * b, -1)), 0.0, 1.0)))


def max_interpolation_error(times: np.ndarray, values: np.ndarray, kept: np.ndarray, group: slice) -> float:
    """Largest distance, over all frames, between the values and the linear interpolation of `kept` keys."""
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    sub = values[:, group]
    interp = np.stack([np.interp(times, times[kept], sub[kept, i]) for i in range(sub.shape[1])], 1)
    return float(np.linalg.norm(sub - interp, axis=1).max())
