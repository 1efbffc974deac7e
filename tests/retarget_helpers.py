"""Synthetic target rigs for the retargeting tests (no bpy): SMPL-X-like skeletons in another pose, axes,
rolls, names and units, and an independent pose evaluator that mimics Blender's pose chain."""
from __future__ import annotations

import numpy as np

from echomask.core.motion import rotations as R
from echomask.core.motion import skeleton as S
from echomask.core.retarget.solve import TargetBone, TargetRig, channels_to_rotation

C = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])   # SMPL-X (Y up) -> Blender (Z up)


def _rot_about(axis, angle):
    axis = np.asarray(axis, np.float64)
    return R.axis_angle_to_matrix(axis / np.linalg.norm(axis) * angle)


def posed_rest(a_pose_deg: float = 0.0, fingers: bool = True) -> np.ndarray:
    """SMPL-X rest joints (Y up) with the arms lowered by `a_pose_deg` about the forward axis."""
    joints = S.REST_JOINTS_YUP.copy()
    for side, sign in (("left", 1.0), ("right", -1.0)):
        root = S.JOINT_INDEX[f"{side}_shoulder"]
        rot = _rot_about([0, 0, 1], -sign * np.radians(a_pose_deg))
        below = [j for j in range(S.NUM_JOINTS) if _descends(j, root)]
        for j in below:
            joints[j] = joints[root] + rot @ (joints[j] - joints[root])
    return joints


def _descends(j, a):
    while j >= 0:
        if j == a:
            return True
        j = S.PARENTS[j]
    return False


def make_rig(joints_yup: np.ndarray, names=None, *, roll_seed=None, random_axes=False, units=1.0,
             frame=C, drop=(), modes=None) -> TargetRig:
    """A TargetRig with one bone per SMPL-X joint (minus `drop`), heads at `frame @ joints * units`.

    Bones point to their first child (or up), rolled randomly with `roll_seed`; `random_axes` gives every
    bone an arbitrary rest rotation instead. `names` maps joint -> bone name. `modes` joint -> rotation mode.
    """
    rng = np.random.default_rng(roll_seed if roll_seed is not None else 0)
    names = names or {j: j for j in S.JOINT_NAMES}
    heads = (joints_yup * units) @ frame.T
    bones = []
    keep = [j for j in S.JOINT_NAMES if j not in drop]
    for jn in keep:
        j = S.JOINT_INDEX[jn]
        kids = [k for k in S.children(j) if S.JOINT_NAMES[k] in keep]
        y = heads[kids[0]] - heads[j] if kids else frame @ np.array([0.0, 1.0, 0.0])
        y = y / np.linalg.norm(y)
        ref = np.array([0.0, 0.0, 1.0]) if abs(y[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        x = np.cross(y, ref)
        x /= np.linalg.norm(x)
        rot = np.stack([x, y, np.cross(x, y)], -1)
        if random_axes:
            q = rng.normal(size=4)
            rot = R.quaternion_to_matrix(q / np.linalg.norm(q))
        elif roll_seed is not None:
            rot = _rot_about(y, rng.uniform(-np.pi, np.pi)) @ rot
        m = np.eye(4)
        m[:3, :3] = rot
        m[:3, 3] = heads[j]
        p = S.PARENTS[j]
        while p >= 0 and S.JOINT_NAMES[p] not in keep:
            p = S.PARENTS[p]
        bones.append(TargetBone(names[jn], names[S.JOINT_NAMES[p]] if p >= 0 else None, m,
                                rotation_mode=(modes or {}).get(jn, "QUATERNION")))
    return TargetRig("test rig", bones)


def evaluate_pose(rig: TargetRig, locals_: dict[str, np.ndarray], root: str, root_location: np.ndarray):
    """Blender's pose chain, independently: armature-space rotations and heads of every bone, (N, ...)."""
    n = len(root_location)
    W, H = {}, {}
    for b in rig.bones:   # parents first (make_rig lists them so)
        L = locals_.get(b.name, np.broadcast_to(np.eye(3), (n, 3, 3)))
        loc = root_location if b.name == root else np.zeros((n, 3))
        if b.parent is None:
            W[b.name] = b.rotation @ L
            H[b.name] = b.head + loc @ b.rotation.T
        else:
            P = rig.bone(b.parent)
            rel_r = P.rotation.T @ b.rotation
            rel_t = P.rotation.T @ (b.head - P.head)
            W[b.name] = W[P.name] @ rel_r @ L
            H[b.name] = H[P.name] + (W[P.name] @ (rel_t + (rel_r @ loc[..., None])[..., 0])[..., None])[..., 0]
    return W, H


def locals_from_channels(result) -> dict[str, np.ndarray]:
    """The keyed channels read back as rotation matrices (what Blender would evaluate)."""
    out = {}
    for bone, prop, values in result.channels():
        if prop != "location":
            out[bone] = channels_to_rotation(values, result.plan.rig.bone(bone).rotation_mode)
    return out


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))
