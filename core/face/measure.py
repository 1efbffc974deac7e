"""Lip-sync measurements on a face track against phone alignments (numpy only).

Without the SMPL-X mesh (each user's own, licensed file) there is no lip-gap distance to measure, so
"mouth open" is a fitted aperture score on the face parameters (see fitted.FaceFit.aperture): 0 at the
mean bilabial face, 1 at the mean open-vowel face of the fitting takes. A frame counts as closed when its
aperture is below the fitted `closed_below` level.

- Closure recall: share of bilabial spans (P, B, M; touching ones merged) with at least one closed frame
  within the span widened by `tolerance_frames` on each side.
- Closure precision: of the closure events (runs of closed frames) that lie wholly inside speech (no frame
  in a pause), the share that overlaps a widened bilabial span.
- Opening timing: for each vowel that follows a bilabial or a pause, the time of the fastest aperture rise
  within +-`window_s` of the vowel onset (sub-frame by parabola), minus the onset.
Frame k is the face at time k / fps (as in core.motion.take); a span holds the frames whose times lie in it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .phone_classes import BILABIALS, MOUTH_CLASSES, VOWELS, segments_of

_PAUSE = MOUTH_CLASSES["rest"]


def frame_range(start: float, end: float, fps: float, n: int, widen: int = 0) -> tuple[int, int]:
    """Inclusive frames whose times k / fps lie in [start, end) (a span shorter than a frame: the frame
    nearest its middle), widened by `widen` frames each side and clipped to [0, n - 1]."""
    first = int(np.ceil(start * fps - 1e-9))
    last = int(np.ceil(end * fps - 1e-9)) - 1
    if last < first:
        first = last = int(np.floor(0.5 * (start + end) * fps + 0.5))
    return max(0, first - widen), min(n - 1, last + widen)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as inclusive (first, last) frame pairs."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), stops.tolist()))


def pause_mask(phones, n: int, fps: float) -> np.ndarray:
    """Frames that any pause segment touches (uncovered time at the ends counts as pause too)."""
    mask = np.zeros(n, bool)
    covered = np.zeros(n, bool)
    for start, end, label in phones:
        first, last = frame_range(start, end, fps, n)
        if last < first:
            continue
        covered[first:last + 1] = True
        if label in _PAUSE:
            mask[first:last + 1] = True
    return mask | ~covered


@dataclasses.dataclass
class ClosureScores:
    recall: float
    precision: float
    bilabials: int          # bilabial spans scored
    events_in_speech: int   # closure events wholly inside speech

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if not (p + r) or np.isnan(p) or np.isnan(r) else 2 * p * r / (p + r)


def closure_scores(aperture: np.ndarray, phones, fps: float, closed_below: float,
                   tolerance_frames: int = 1) -> ClosureScores:
    n = len(aperture)
    closed = np.asarray(aperture) < closed_below
    spans = [frame_range(a, b, fps, n, tolerance_frames) for a, b in segments_of(phones, BILABIALS)]
    spans = [(a, b) for a, b in spans if b >= a]
    hit = [bool(closed[a:b + 1].any()) for a, b in spans]
    in_bilabial = np.zeros(n, bool)
    for a, b in spans:
        in_bilabial[a:b + 1] = True
    pauses = pause_mask(phones, n, fps)
    events = [(a, b) for a, b in runs(closed) if not pauses[a:b + 1].any()]
    correct = [bool(in_bilabial[a:b + 1].any()) for a, b in events]
    return ClosureScores(recall=float(np.mean(hit)) if hit else float("nan"),
                         precision=float(np.mean(correct)) if correct else float("nan"),
                         bilabials=len(spans), events_in_speech=len(events))


def opening_onsets(phones) -> np.ndarray:
    """Onsets (s) of vowels that directly follow a bilabial or a pause: where the mouth must open."""
    ordered = sorted(phones)
    onsets = []
    for prev, cur in zip(ordered, ordered[1:]):
        if cur[2] in VOWELS and (prev[2] in BILABIALS or prev[2] in _PAUSE) and abs(prev[1] - cur[0]) < 1e-3:
            onsets.append(cur[0])
    return np.array(onsets, np.float64)


def opening_times(aperture: np.ndarray, fps: float, onsets: np.ndarray, window_s: float = 0.2) -> np.ndarray:
    """Time (s) of the fastest aperture rise near each onset; NaN where the aperture does not rise."""
    a = np.asarray(aperture, np.float64)
    slope = np.diff(a)  # slope[k]: frame k -> k + 1, placed at the midpoint (k + 0.5) / fps
    times = (np.arange(len(slope)) + 0.5) / fps
    out = np.full(len(onsets), np.nan)
    for i, onset in enumerate(onsets):
        lo = np.searchsorted(times, onset - window_s)
        hi = np.searchsorted(times, onset + window_s, side="right")
        if hi - lo < 1:
            continue
        k = lo + int(np.argmax(slope[lo:hi]))
        if slope[k] <= 0:
            continue
        shift = 0.0
        if 0 < k < len(slope) - 1:  # parabola through the peak and its neighbours
            y0, y1, y2 = slope[k - 1], slope[k], slope[k + 1]
            denom = y0 - 2 * y1 + y2
            if denom < 0:
                shift = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
        out[i] = times[k] + shift / fps
    return out


@dataclasses.dataclass
class TimingScores:
    median_abs_ms: float     # |opening - vowel onset|
    mean_signed_ms: float    # negative: the mouth opens before the vowel starts
    vs_reference_ms: float   # median |opening - reference face's opening| (NaN without a reference)
    onsets: int


def timing_scores(aperture, fps, phones, reference_aperture=None, window_s: float = 0.2) -> TimingScores:
    onsets = opening_onsets(phones)
    times = opening_times(aperture, fps, onsets, window_s)
    ok = np.isfinite(times)
    err = (times[ok] - onsets[ok]) * 1000.0
    vs_ref = float("nan")
    if reference_aperture is not None:
        ref_times = opening_times(reference_aperture, fps, onsets, window_s)
        both = ok & np.isfinite(ref_times)
        if both.any():
            vs_ref = float(np.median(np.abs(times[both] - ref_times[both]))) * 1000.0
    return TimingScores(median_abs_ms=float(np.median(np.abs(err))) if len(err) else float("nan"),
                        mean_signed_ms=float(np.mean(err)) if len(err) else float("nan"),
                        vs_reference_ms=vs_ref, onsets=int(ok.sum()))
