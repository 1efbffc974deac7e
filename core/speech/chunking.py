"""Cut long audio into pieces of about `target_s` seconds at the quietest moment near each cut, so that
features and phone recognition run piece by piece (memory flat in the audio's length) and no cut falls in
the middle of a word when a pause is near.
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
_HOP = 160  # 10 ms energy frames


def split_points(n_samples: int, audio: np.ndarray, target_s: float = 30.0, search_s: float = 5.0,
                 smooth_s: float = 0.2) -> list[tuple[int, int]]:
    """[(start, end)] sample ranges covering [0, n_samples) in order; each cut is at the lowest-energy
    `smooth_s` stretch within ±`search_s` of `target_s` after the previous cut. Cuts are multiples of
    10 ms so frame grids line up across pieces."""
    target = int(target_s * SAMPLE_RATE) // _HOP * _HOP
    search = int(search_s * SAMPLE_RATE) // _HOP * _HOP
    pieces = []
    start = 0
    while n_samples - start > target + search:
        lo, hi = start + target - search, start + target + search
        frames = audio[lo:hi].astype(np.float64).reshape(-1, _HOP)
        energy = np.square(frames).mean(axis=1)
        width = max(1, int(round(smooth_s * SAMPLE_RATE / _HOP)))
        smoothed = np.convolve(energy, np.ones(width) / width, mode="same")
        cut = lo + int(np.argmin(smoothed)) * _HOP  # argmin takes the first of equal minima: deterministic
        pieces.append((start, cut))
        start = cut
    pieces.append((start, n_samples))
    return pieces
