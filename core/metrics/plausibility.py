"""Physical plausibility of a take: jerk, foot skating, floor penetration, joint-angle limits, speed.

All on world joint positions (forward kinematics WITH root translation, neutral SMPL-X rest joints), metres,
Y up, the take's frame rate. BEAT2 takes stand on the floor plane y = 0 (their feet's joint centres sit
1-5 cm above it). A take whose translation is all zero carries no root placement (some published outputs
write zeros), so its floor metrics are NaN ("n/a") rather than a made-up number.

- jerk: mean |d^3 p / dt^3| over all 55 joints and frames (m/s^3); real motion is smooth, jitter is not.
- foot skating: for each ankle/foot joint (7, 8, 10, 11), frames where it is within `contact_height`
  of its own lowest level (its 5th height percentile in the take) count as contact; skating = mean
  horizontal (x/z) speed of the joint over its contact frames (m/s). Planted feet score 0.
- floor penetration: mean over frames of how far the lowest foot joint is below y = 0 (m), and the share
  of frames where it is more than 1 cm below. The joint centre is ~2 cm above the sole, so this
  under-counts shallow penetration; it catches feet sunk into the floor.
- joint-angle limits: share of (frame, joint) rotations whose angle from the SMPL-X rest pose exceeds the
  joint's limit in JOINT_ANGLE_LIMITS_DEG (a simple, documented table: total rotation angle, no per-axis
  ranges), and the mean excess in degrees over the violations.
- mean speed: mean joint speed without translation (m/s) over the 55 joints; `speed_ratio` divides it by
  the reference's (1 = as lively as the ground truth, 0 = frozen).
"""
from __future__ import annotations

import numpy as np

from ..motion.skeleton import FOOT_CONTACT_JOINTS, JOINT_NAMES, NUM_JOINTS
from ..motion.take import Take
from .kinematics import joint_speeds, take_positions

# Largest plausible rotation away from the SMPL-X rest pose (T-pose, hands flat), degrees, by joint name
# prefix. Chosen from human range of motion, generously; the root (global orientation) has no limit.
# Ground-truth BEAT2 motion exceeds these in well under 1 % of joint-frames (see docs/RESULTS.md).
_LIMITS_BY_KIND = {
    "hip": 120.0, "knee": 150.0, "ankle": 60.0, "foot": 45.0,
    "spine": 45.0, "neck": 60.0, "head": 60.0, "collar": 45.0,
    "shoulder": 160.0, "elbow": 160.0, "wrist": 100.0,
    "jaw": 35.0, "eye": 45.0,
    "index": 110.0, "middle": 110.0, "ring": 110.0, "pinky": 110.0, "thumb": 110.0,
}


def _limit_for(name: str) -> float:
    for kind, limit in _LIMITS_BY_KIND.items():
        if kind in name:
            return limit
    return float("inf")


JOINT_ANGLE_LIMITS_DEG = np.array([float("inf") if j == 0 else _limit_for(n) for j, n in enumerate(JOINT_NAMES)])

FLOOR_Y = 0.0
PENETRATION_REPORT_DEPTH = 0.01     # metres below the floor that count as a penetrating frame


def has_root_placement(take: Take) -> bool:
    return bool(np.any(take.trans != 0))


def jerk(world_positions: np.ndarray, fps: float) -> float:
    if world_positions.shape[0] < 4:
        return float("nan")
    d3 = np.diff(world_positions, n=3, axis=0) * fps ** 3
    return float(np.linalg.norm(d3, axis=-1).mean())


def foot_skating(world_positions: np.ndarray, fps: float, contact_height: float = 0.03,
                 joints: tuple[int, ...] = FOOT_CONTACT_JOINTS) -> float:
    """Mean horizontal speed (m/s) of the foot joints while in contact (see module text)."""
    if world_positions.shape[0] < 2:
        return float("nan")
    speeds, weights = [], []
    for j in joints:
        p = world_positions[:, j]
        height = p[:, 1]
        contact = height < np.percentile(height, 5) + contact_height
        step = np.linalg.norm(np.diff(p[:, [0, 2]], axis=0), axis=-1) * fps   # speed between t and t+1
        both = contact[:-1] & contact[1:]                                      # in contact at both frames
        if both.any():
            speeds.append(step[both].sum())
            weights.append(both.sum())
    return float(sum(speeds) / sum(weights)) if weights else float("nan")


def floor_penetration(world_positions: np.ndarray, joints: tuple[int, ...] = FOOT_CONTACT_JOINTS
                      ) -> tuple[float, float]:
    """(mean depth of the lowest foot joint below y = 0 in metres, share of frames > 1 cm below)."""
    lowest = world_positions[:, list(joints), 1].min(axis=1)
    depth = np.maximum(FLOOR_Y - lowest, 0.0)
    return float(depth.mean()), float(np.mean(depth > PENETRATION_REPORT_DEPTH))


def joint_limit_violations(take: Take) -> tuple[float, float]:
    """(share of limited joint-frames over their limit, mean excess in degrees over those violations)."""
    angles = np.degrees(np.linalg.norm(take.poses.astype(np.float64).reshape(-1, NUM_JOINTS, 3), axis=-1))
    limited = np.isfinite(JOINT_ANGLE_LIMITS_DEG)
    excess = angles[:, limited] - JOINT_ANGLE_LIMITS_DEG[limited]
    over = excess > 0
    share = float(over.mean()) if over.size else float("nan")
    return share, float(excess[over].mean()) if over.any() else 0.0


def mean_joint_speed(local_positions: np.ndarray, fps: float) -> float:
    return float(joint_speeds(local_positions, fps).mean())


def plausibility(take: Take, rest_joints: np.ndarray | None = None) -> dict[str, float]:
    """All plausibility numbers of one take (floor metrics NaN without root placement)."""
    world = take_positions(take, with_translation=True, rest_joints=rest_joints)
    local = take_positions(take, with_translation=False, rest_joints=rest_joints)
    placed = has_root_placement(take)
    depth, share = floor_penetration(world) if placed else (float("nan"), float("nan"))
    limit_share, limit_excess = joint_limit_violations(take)
    return {
        "jerk": jerk(world, take.fps),
        "foot_skating": foot_skating(world, take.fps) if placed else float("nan"),
        "penetration": depth,
        "penetration_frames": share,
        "limit_violations": limit_share,
        "limit_excess_deg": limit_excess,
        "mean_speed": mean_joint_speed(local, take.fps),
    }
