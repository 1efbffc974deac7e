"""Scale how big a take's motion is (no bpy): "intensity" has one meaning in the product, at generation
(`GenerationOptions.intensity`) and in the Scale Intensity tool alike.

Motion is scaled about the take's own mean pose, so the character keeps its average posture and only its
gestures grow or shrink (0 = holds the mean pose, 1 = unchanged, 2 = twice as big). Rotations are scaled
on the rotation itself, not per component: q' = r (r^-1 q)^s, the slerp from the joint's mean rotation r
towards q with parameter s (s > 1 extrapolates); for the pelvis r is the mean facing, so scaling never
turns the whole character. Root translation scales about its mean position, expressions about their mean.
"""
from __future__ import annotations

import numpy as np

from . import rotations as R
from . import skeleton
from .take import Take
from .take_parts import ANIM_PARTS, PART_JOINT_INDICES, check_parts


def quaternion_power(q: np.ndarray, s: float) -> np.ndarray:
    """q^s for unit quaternions (w, x, y, z), taking the short way (w >= 0)."""
    q = np.where(q[..., :1] < 0, -q, q)
    w = np.clip(q[..., 0], -1.0, 1.0)
    half = np.arccos(w)
    sin_half = np.sin(half)
    axis = np.where(sin_half[..., None] > 1e-12, q[..., 1:] / np.maximum(sin_half, 1e-12)[..., None], 0.0)
    out = np.empty_like(q)
    out[..., 0] = np.cos(s * half)
    out[..., 1:] = axis * np.sin(s * half)[..., None]
    return out


def mean_quaternion(q: np.ndarray) -> np.ndarray:
    """The average rotation of (N, 4) quaternions (sign-aligned mean, normalised)."""
    ref = q[0]
    aligned = np.where((q @ ref)[:, None] < 0, -q, q)
    m = aligned.mean(0)
    return m / np.linalg.norm(m)


def _conjugate(q):
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def scale_take(take: Take, scale: float, parts=ANIM_PARTS) -> Take:
    """A copy of `take` with the motion of `parts` scaled by `scale` about its mean pose (1 = unchanged,
    0 = the mean pose held still)."""
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale}")
    parts = check_parts(parts)
    q = R.axis_angle_to_quaternion(take.joint_rotations().astype(np.float64))   # (N, 55, 4)
    out = q.copy()
    joints = sorted(j for p in parts for j in PART_JOINT_INDICES[p])
    for j in joints:
        ref = np.broadcast_to(mean_quaternion(q[:, j]), q[:, j].shape)
        rel = R.quaternion_multiply(_conjugate(ref), q[:, j])
        out[:, j] = R.quaternion_multiply(ref, quaternion_power(rel, scale))
    poses = R.quaternion_to_axis_angle(out).reshape(take.num_frames, skeleton.NUM_JOINTS * 3)
    trans = take.trans.astype(np.float64)
    if "root" in parts:
        centre = trans.mean(0)
        trans = centre + scale * (trans - centre)
    expressions = take.expressions.astype(np.float64)
    if "face" in parts:
        centre = expressions.mean(0)
        expressions = centre + scale * (expressions - centre)
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=expressions.astype(np.float32), betas=take.betas, fps=take.fps, gender=take.gender,
                meta=dict(take.meta))
