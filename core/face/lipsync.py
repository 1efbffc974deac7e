"""Phone-accurate mouth, combined with the model's face.

The phone track is the fitted mean fast face of each mouth class, weighted by how much of each frame the
class covers and spread by a Gaussian (co-articulation); it says how the mouth moves for these phones.
`apply_phone_mouth` replaces the model's fast mouth motion by the phone track inside the mouth subspace
(jaw-opening axis + the fitted expression directions) only: the model keeps its slow mouth posture (a smile
stays a smile) and every expression direction outside the mouth subspace. Bilabials (P, B, M) then get a
closure constraint: where the aperture is above the mean bilabial level it is pulled down along the fitted
closure direction, with raised-cosine ramps into and out of the closure.
"""
from __future__ import annotations

import numpy as np

from ..motion.take import Take
from .fitted import FaceFit, default_fit
from .measure import frame_range
from .phone_classes import BILABIALS, class_shares, segments_of, shift_phones
from .signals import EXPR, JAW, face_vector, smooth, with_face

# Measured by bench/eval_lipsync.py (docs/LIPSYNC.md): the strength whose combined face scored best on the
# held-out GT take; see that table before changing it.
DEFAULT_STRENGTH = 0.5
# Closure ramps: the lips close gradually (anticipating the bilabial) and release fast (the burst is the
# vowel onset), so the ramp into a closure is longer than the ramp out of it.
RAMP_IN_S = 0.067
RAMP_OUT_S = 0.033


def phone_track(phones, n_frames: int, fps: float, fit: FaceFit | None = None) -> np.ndarray:
    """(n_frames, 103) fast face the phones ask for (zero-mean: add it to a slow face)."""
    fit = fit or default_fit()
    shares = class_shares(shift_phones(phones, fit.lag_s), n_frames, fps)
    return smooth(shares, fit.sigma_s * fps) @ fit.class_deltas


def project_mouth(vectors: np.ndarray, fit: FaceFit) -> np.ndarray:
    """The part of face-vector changes (N, 103) inside the mouth subspace; the rest is dropped."""
    out = np.zeros_like(vectors, dtype=np.float64)
    out[:, JAW] = np.outer(vectors[:, JAW] @ fit.jaw_axis, fit.jaw_axis)
    basis = fit.mouth_basis
    out[:, EXPR] = (vectors[:, EXPR] @ basis) @ basis.T
    return out


def _ramped(need: np.ndarray, ramp_in: int, ramp_out: int) -> np.ndarray:
    """max over tau of need[tau] * k(t - tau): raised-cosine k reaching `ramp_in` frames before and
    `ramp_out` frames after each constrained frame."""
    out = need.copy()
    for d in range(1, ramp_in + 1):          # frames before a closure
        out[:-d] = np.maximum(out[:-d], 0.5 * (1.0 + np.cos(np.pi * d / (ramp_in + 1))) * need[d:])
    for d in range(1, ramp_out + 1):         # frames after it
        out[d:] = np.maximum(out[d:], 0.5 * (1.0 + np.cos(np.pi * d / (ramp_out + 1))) * need[:-d])
    return out


def bilabial_frames(phones, n_frames: int, fps: float, lag_s: float = 0.0) -> np.ndarray:
    """Frames (at times k / fps) inside a bilabial shifted by lag_s; a short one gets its nearest frame."""
    mask = np.zeros(n_frames, bool)
    for start, end in segments_of(shift_phones(phones, lag_s), BILABIALS):
        first, last = frame_range(start, end, fps, n_frames)
        mask[first:last + 1] = True
    return mask


def lower_aperture(face: np.ndarray, target: np.ndarray, fps: float, fit: FaceFit,
                   iterations: int = 2) -> np.ndarray:
    """(N, 103) change along the closure direction that brings the aperture down to `target` (N,) where it
    is above it (NaN in target: no constraint), ramped in and out with raised cosines."""
    correction = np.zeros_like(face, dtype=np.float64)
    active = np.isfinite(target)
    if not active.any():
        return correction
    ramp_in, ramp_out = int(round(RAMP_IN_S * fps)), int(round(RAMP_OUT_S * fps))
    for _ in range(iterations):  # the slow baseline moves a little with the change: a second pass settles it
        aperture = fit.aperture(face + correction, fps)
        need = np.where(active, np.maximum(aperture - np.where(active, target, 0.0), 0.0), 0.0)
        correction += _ramped(need, ramp_in, ramp_out)[:, None] * fit.closure_direction[None, :]
    return correction


def closure_correction(face: np.ndarray, phones, fps: float, fit: FaceFit) -> np.ndarray:
    """(N, 103) change that seals the lips (aperture <= fit.sealed_level) on bilabial frames."""
    bilabial = bilabial_frames(phones, len(face), fps, fit.lag_s)
    return lower_aperture(face, np.where(bilabial, fit.sealed_level, np.nan), fps, fit)


def phones_only_face(phones, n_frames: int, fps: float, fit: FaceFit | None = None,
                     base: np.ndarray | None = None, enforce_closure: bool = True) -> np.ndarray:
    """(n_frames, 103) a face from phones alone: `base` (default: the fitted mean face) + the phone track."""
    fit = fit or default_fit()
    base = fit.neutral if base is None else np.asarray(base, np.float64)
    face = np.broadcast_to(base, (n_frames, base.shape[-1])) + phone_track(phones, n_frames, fps, fit)
    if enforce_closure:
        face = face + closure_correction(face, phones, fps, fit)
    return face


def apply_phone_mouth(take: Take, phones, strength: float = DEFAULT_STRENGTH, fit: FaceFit | None = None,
                      enforce_closure: bool = True, keep_model_closures: bool = True) -> Take:
    """The take with its mouth driven by `phones` [(start_s, end_s, phone)] and the rest of its face kept.

    strength 0 returns an unchanged copy; 1 puts the phone track fully in place of the model's fast mouth
    motion (inside the mouth subspace) and closes the lips on every bilabial.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    if strength == 0.0 or take.num_frames == 0:
        return with_face(take, face_vector(take))
    fit = fit or default_fit()
    fps = take.fps
    face = face_vector(take)
    target = phone_track(phones, take.num_frames, fps, fit)
    combined = face + strength * project_mouth(target - fit.fast(face, fps), fit)
    if keep_model_closures:  # the recogniser misses bilabials: where the model closes the lips, keep them closed
        model_aperture = fit.aperture(face, fps)
        combined = combined + lower_aperture(
            combined, np.where(model_aperture < fit.closed_below, model_aperture, np.nan), fps, fit)
    if enforce_closure:
        combined = combined + strength * closure_correction(combined, phones, fps, fit)
    out = with_face(take, combined)
    out.meta["phone_mouth"] = {"strength": float(strength), "phones": len(phones)}
    return out
