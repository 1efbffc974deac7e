"""Root translation for generated takes: feet stay planted, the character stands on the floor.

Inputs are the generated joint rotations, the lower part's decoded translation features (vx, y, vz) and its
foot contacts (ankles and feet, SMPL-X joints 7, 8, 10, 11).

* Height: the pelvis is placed so that the lowest foot joint sits `FOOT_CLEARANCE` above the floor (y = 0),
  i.e. the character always stands on the ground whatever the legs do (slightly smoothed).
* Horizontal motion, foot locking: between two frames where a foot is in contact, the root moves by
  minus that foot's motion relative to the pelvis, so the planted foot does not slide; with no foot in
  contact, the decoded velocity is used.
* `travel=False` (default): the foot-locked path minus its slow trend (a centred moving average over
  `inplace_window_s`), so the character stays where it started (no x/z drift) while weight shifts still
  keep the feet planted. `travel=True`: the foot-locked path itself (the character may walk/travel).

Forward kinematics runs in chunks over the 9 lower-body joints only: memory stays small for long takes.
"""
from __future__ import annotations

import numpy as np

from . import rotations as R
from .skeleton import FOOT_CONTACT_JOINTS, PARENTS, REST_JOINTS_YUP, STANCE_JOINTS

FOOT_CLEARANCE = 0.02   # metres between a planted SMPL-X foot joint and the floor (BEAT2 median 0.025)


def feet_relative_to_root(poses: np.ndarray, rest_joints: np.ndarray | None = None,
                          chunk: int = 4096) -> np.ndarray:
    """(N, 165) axis-angle -> (N, 4, 3) positions of joints 7, 8, 10, 11 with the root at the origin."""
    rest = REST_JOINTS_YUP if rest_joints is None else rest_joints
    n = len(poses)
    out = np.empty((n, len(FOOT_CONTACT_JOINTS), 3), np.float64)
    local = {j: (rest[j] - rest[PARENTS[j]]) if PARENTS[j] >= 0 else rest[j] for j in STANCE_JOINTS}
    for lo in range(0, n, chunk):
        aa = np.asarray(poses[lo:lo + chunk], np.float64).reshape(-1, 55, 3)[:, list(STANCE_JOINTS)]
        mats = R.axis_angle_to_matrix(aa)
        glob_r, glob_p = {}, {}
        for k, j in enumerate(STANCE_JOINTS):
            par = PARENTS[j]
            if par < 0:
                glob_r[j], glob_p[j] = mats[:, k], np.broadcast_to(local[j], (len(aa), 3))
            else:
                glob_r[j] = glob_r[par] @ mats[:, k]
                glob_p[j] = glob_p[par] + np.einsum("nij,j->ni", glob_r[par], local[j])
        out[lo:lo + chunk] = np.stack([glob_p[j] for j in FOOT_CONTACT_JOINTS], axis=1)
    return out


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge padding (same length)."""
    if width <= 1 or len(x) < 2:
        return x.copy()
    half = width // 2
    pad = np.concatenate([np.repeat(x[:1], half, 0), x, np.repeat(x[-1:], half, 0)], 0)
    c = np.cumsum(np.concatenate([np.zeros((1,) + x.shape[1:]), pad], 0), axis=0)
    return (c[width:] - c[:-width])[: len(x)] / width


def root_translation(poses: np.ndarray, trans_features: np.ndarray, contacts: np.ndarray, fps: float = 30.0,
                     travel: bool = False, start_xz=(0.0, 0.0), contact_threshold: float = 0.5,
                     inplace_window_s: float = 4.0, rest_joints: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) root translation (metres, Y up) for a generated take; see the module docstring."""
    n = len(poses)
    feet = feet_relative_to_root(poses, rest_joints)                       # (N, 4, 3)
    height = FOOT_CLEARANCE - feet[:, :, 1].min(axis=1)
    height = moving_average(height[:, None], 3)[:, 0]
    planted = np.asarray(contacts, np.float64) >= contact_threshold        # (N, 4)
    vel = np.asarray(trans_features, np.float64)[:, [0, 2]] / fps           # metres per frame
    step = np.zeros((n, 2))
    if n > 1:
        both = planted[:-1] & planted[1:]                                   # contact held across the step
        foot_step = feet[1:, :, [0, 2]] - feet[:-1, :, [0, 2]]               # (N-1, 4, 2)
        cnt = both.sum(1)
        locked = -(foot_step * both[..., None]).sum(1) / np.maximum(cnt, 1)[:, None]
        step[1:] = np.where(cnt[:, None] > 0, locked, vel[:-1])
    path = np.cumsum(step, axis=0)
    if not travel:
        path = path - moving_average(path, max(3, int(round(inplace_window_s * fps)) | 1))
    out = np.empty((n, 3), np.float32)
    out[:, 0] = start_xz[0] + path[:, 0]
    out[:, 1] = height
    out[:, 2] = start_xz[1] + path[:, 1]
    return out
