"""Joint positions and speeds of a take, as the metrics need them.

Positions come from core.motion.rotations.forward_kinematics on the SMPL-X rest joints (neutral betas unless the
caller passes rest joints from the user's own model). The EMAGE metrics (BC, diversity) use positions
*without* root translation; plausibility checks (feet, floor, jerk) use world positions *with* it.
"""
from __future__ import annotations

import numpy as np

from ..motion import rotations as R
from ..motion.skeleton import NUM_JOINTS, PARENTS, REST_JOINTS_YUP
from ..motion.take import Take


def take_positions(take: Take, with_translation: bool, rest_joints: np.ndarray | None = None) -> np.ndarray:
    """(N, 55, 3) float64 joint positions in metres (Y up)."""
    rest = REST_JOINTS_YUP if rest_joints is None else np.asarray(rest_joints, np.float64)
    mats = R.axis_angle_to_matrix(take.poses.astype(np.float64).reshape(-1, NUM_JOINTS, 3))
    trans = take.trans.astype(np.float64) if with_translation else None
    pos, _ = R.forward_kinematics(mats, rest, PARENTS, trans)
    return pos


def joint_speeds(positions: np.ndarray, fps: float) -> np.ndarray:
    """(N, J, 3) -> (N, J) speed in m/s: central differences inside, one-sided at both ends (as EMAGE)."""
    n = positions.shape[0]
    if n < 2:
        return np.zeros(positions.shape[:2])
    vel = np.empty_like(positions)
    vel[0] = positions[1] - positions[0]
    vel[-1] = positions[-1] - positions[-2]
    if n > 2:
        vel[1:-1] = (positions[2:] - positions[:-2]) / 2.0
    return np.linalg.norm(vel, axis=-1) * fps
