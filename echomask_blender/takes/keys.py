"""Write a Take onto an SMPL-X armature (and its face shape keys) as NEW Actions, in bulk.

Nothing existing is edited: a rig's (or shape-key datablock's) current action is stashed on a muted NLA
track, and the take goes into a fresh Action with its own slot, so it plays on Blender 4.2, 4.5 and 5.0.
Keys are written with `keyframe_points.add` + `foreach_set` (about 40x faster than keyframe_insert).

Rotation modes: each bone is keyed in its own rotation mode (quaternion, Euler in its order, or axis-angle)
and its mode is never changed, so an animator's own Euler keys (stashed) still play back as keyed. Our
rigs' bones are quaternion; `rotation_channels` / `channels_to_quaternions` convert for the other modes.
"""
from __future__ import annotations

import dataclasses

import bpy
import numpy as np

from ...core.motion import rotations as R
from ...core.motion import skeleton
from ...core.motion.take import Take
from ...core.motion.take_parts import ANIM_PARTS, PART_JOINT_INDICES
from .. import compat
from ..rigs import retarget
from ..rigs.rig import BONE_NAMES, RigFrames, check_smplx_armature, rig_frames
from ..rna_paths import pose_bone_path, shape_key_path  # noqa: F401  (public here too)

EXPRESSION_KEY = "Exp{:03d}"   # shape-key names of the SMPL-X Blender add-on
SHAPE_KEY_SLIDER_LIMIT = 10.0  # Blender's widest slider range; BEAT2 expressions reach about +-6
BODY = ""  # the owner of the armature's own F-curves (face F-curves are owned by their mesh's name)


@dataclasses.dataclass
class CurveKeys:
    """One F-curve to write: its keys, and optionally every per-key attribute (to copy keys exactly)."""
    owner: str                   # BODY or a face mesh's name
    data_path: str
    index: int
    frames: np.ndarray           # (K,) increasing
    values: np.ndarray           # (K,)
    group: str = ""
    attributes: dict | None = None   # name -> (K,) or (2K,) array for foreach_set (None: LINEAR keys)


@dataclasses.dataclass
class WriteResult:
    action: str                      # the armature's new Action
    shape_actions: list[str]         # one new Action per face mesh that got expression keys
    frame_start: int
    frame_end: int                   # inclusive
    stashed: list[str]               # actions moved onto muted NLA tracks


def expression_key_count(obj: bpy.types.Object) -> int:
    """How many consecutive Exp000, Exp001, ... shape keys the mesh object has."""
    if obj is None or obj.type != "MESH" or obj.data.shape_keys is None:
        return 0
    blocks = obj.data.shape_keys.key_blocks
    count = 0
    while count < skeleton.NUM_EXPRESSIONS and EXPRESSION_KEY.format(count) in blocks:
        count += 1
    return count


def expression_meshes(armature: bpy.types.Object) -> list[bpy.types.Object]:
    """Meshes parented to the armature that carry SMPL-X expression shape keys."""
    return [child for child in armature.children if expression_key_count(child) > 0]


def bone_quaternions(frames: RigFrames, take: Take) -> np.ndarray:
    """(N, 55, 4) sign-continuous quaternions to key on the rig's bones."""
    axis_angle = take.joint_rotations().astype(np.float64)
    if frames.is_direct:
        quats = R.axis_angle_to_quaternion(axis_angle)
    else:
        quats = R.matrix_to_quaternion(frames.local_rotations(R.axis_angle_to_matrix(axis_angle)))
    return R.make_quaternions_continuous(quats, axis=0)


ROTATION_PROPERTIES = {"QUATERNION": ("rotation_quaternion", 4), "AXIS_ANGLE": ("rotation_axis_angle", 4)}
_REST_CHANNELS = {"QUATERNION": (1.0, 0.0, 0.0, 0.0), "AXIS_ANGLE": (0.0, 0.0, 1.0, 0.0)}


def rotation_property(mode: str) -> tuple[str, int]:
    """The pose-bone property a rotation mode plays ('rotation_euler' for the six Euler orders) and its
    number of channels."""
    return ROTATION_PROPERTIES.get(mode, ("rotation_euler", 3))


def rest_channels(mode: str, frames: int) -> np.ndarray:
    """(frames, C) the rest rotation in a mode's channels (what an unkeyed channel reads as)."""
    return np.tile(np.asarray(_REST_CHANNELS.get(mode, (0.0, 0.0, 0.0)), np.float64), (frames, 1))


def rotation_channels(quats: np.ndarray, mode: str, reference: np.ndarray | None = None) -> np.ndarray:
    """(N, ..., 4) quaternions over time -> (N, ..., C) values of the mode's channels, continuous over time
    (no sign flips, no Euler wraps) so Blender's per-channel interpolation turns the short way.
    `reference` (..., C): the channels just before (keys a range is spliced into), which frame 0 stays near."""
    q = R.make_quaternions_continuous(np.asarray(quats, np.float64), axis=0)
    if mode in ("QUATERNION", "AXIS_ANGLE") and reference is not None and len(q):
        ref_q = channels_to_quaternions(np.asarray(reference, np.float64), mode)
        q = q * np.where(np.sum(q[:1] * ref_q, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    if mode == "QUATERNION":
        return q
    if mode == "AXIS_ANGLE":   # (angle, x, y, z); where the angle is ~0 the axis is undefined: keep the last
        v = q[..., 1:]
        s = np.linalg.norm(v, axis=-1, keepdims=True)
        angle = 2.0 * np.arctan2(s, q[..., :1])
        axis = v / np.maximum(s, 1e-12)
        defined = s[..., 0] > 1e-9
        last = np.broadcast_to(np.array([0.0, 1.0, 0.0]) if reference is None
                               else np.asarray(reference, np.float64)[..., 1:], axis.shape[1:])
        for t in range(len(axis)):
            axis[t] = np.where(defined[t][..., None], axis[t], last)
            last = axis[t]
        return np.concatenate([angle, axis], -1)
    return R.make_euler_continuous(R.quaternion_to_euler(q, mode), mode, reference)


def channels_to_quaternions(values: np.ndarray, mode: str) -> np.ndarray:
    """(..., C) values of a rotation mode's channels -> (..., 4) unit quaternions (w, x, y, z)."""
    values = np.asarray(values, np.float64)
    if mode == "QUATERNION":
        return values / np.maximum(np.linalg.norm(values, axis=-1, keepdims=True), 1e-12)
    if mode == "AXIS_ANGLE":
        axis = values[..., 1:]
        norm = np.linalg.norm(axis, axis=-1, keepdims=True)
        axis = np.where(norm > 1e-12, axis / np.maximum(norm, 1e-12), 0.0)
        half = 0.5 * values[..., :1]
        return np.concatenate([np.cos(half), np.sin(half) * axis], -1)
    return R.euler_to_quaternion(values, mode)


def bone_rotation_curves(armature: bpy.types.Object, quats: np.ndarray, joints) -> list[tuple[str, str, np.ndarray]]:
    """[(bone, data path, (N, C) values)] to key joints' rotations (quats (N, 55, 4)) in each bone's own
    rotation mode, in the order of `joints` (bones of one mode are converted together)."""
    joints = list(joints)
    modes = {j: armature.pose.bones[BONE_NAMES[j]].rotation_mode for j in joints}
    values = {}
    for mode in set(modes.values()):
        group = [j for j in joints if modes[j] == mode]
        converted = rotation_channels(quats[:, group], mode)
        values.update({j: converted[:, n] for n, j in enumerate(group)})
    out = []
    for j in joints:
        bone = BONE_NAMES[j]
        prop, _ = rotation_property(modes[j])
        out.append((bone, pose_bone_path(bone, prop), values[j]))
    return out


def take_curves(armature: bpy.types.Object, take: Take, *, frame_start: int = 1, parts=ANIM_PARTS,
                meshes: list[bpy.types.Object] | None = None) -> tuple[list[CurveKeys], list[bpy.types.Object]]:
    """The one place a take becomes F-curves: (curves, face meshes) keying `parts` of `take` on `armature`
    from `frame_start`, one key per frame. An SMPL-X rig gets each bone's rotation in its own rotation mode
    (read before anything changes), the pelvis `location` from `trans` and, for the face, the expressions
    on each mesh's Exp### shape keys (by default the rig's child meshes); a mapped character (bone map,
    rigs/retarget.py) gets the channels its map solves for, and no face."""
    frames = frame_start + np.arange(take.num_frames, dtype=np.float64)
    curves: list[CurveKeys] = []
    if retarget.is_mapped(armature):
        channels, _ = retarget.take_channels(armature, take, parts)
        curves.extend(CurveKeys(BODY, path, c, frames, values, group) for path, c, values, group in channels)
        return curves, []
    check_smplx_armature(armature)
    rig = rig_frames(armature)
    joints = sorted(j for p in parts for j in PART_JOINT_INDICES[p])
    if joints:
        for bone, path, values in bone_rotation_curves(armature, bone_quaternions(rig, take), joints):
            curves.extend(CurveKeys(BODY, path, c, frames, values[:, c], bone) for c in range(values.shape[1]))
    if "root" in parts:
        pelvis = rig.pelvis_location(take.trans.astype(np.float64))
        path = pose_bone_path(BONE_NAMES[0], "location")
        curves.extend(CurveKeys(BODY, path, c, frames, pelvis[:, c], BONE_NAMES[0]) for c in range(3))
    face_meshes = []
    if "face" in parts:
        face_meshes = expression_meshes(armature) if meshes is None else [m for m in meshes if expression_key_count(m)]
        for mesh in face_meshes:
            for i in range(min(expression_key_count(mesh), take.expressions.shape[1])):
                curves.append(CurveKeys(mesh.name, shape_key_path(EXPRESSION_KEY.format(i)), 0, frames,
                                        take.expressions[:, i], "Expressions"))
    return curves, face_meshes


def write_take_to_armature(armature: bpy.types.Object, take: Take, *, name: str = "EchoMask take",
                           frame_start: int = 1, meshes: list[bpy.types.Object] | None = None) -> WriteResult:
    """Key the take on `armature` from `frame_start` (take frame k -> scene frame frame_start + k).

    Every bone gets its rotation in its own rotation mode (the jaw and eyes included; see the module
    docstring), the pelvis gets `location` from `trans`, and meshes with Exp### shape keys (by default the
    armature's child meshes) get the expressions on their shape-key datablock. The take must already be at
    the scene's frame rate.
    """
    take.validate(name)
    curves, face_meshes = take_curves(armature, take, frame_start=frame_start, meshes=meshes)
    frames = frame_start + np.arange(take.num_frames, dtype=np.float64)

    stashed = []
    old = compat.stash_active_action(armature)
    if old:
        stashed.append(old)
    action, bag = compat.new_action_for(armature, name)
    for curve in curves:
        if curve.owner == BODY:
            compat.write_fcurve(bag, curve.data_path, curve.index, curve.frames, curve.values, group=curve.group)

    shape_actions = []
    for mesh in face_meshes:
        key = mesh.data.shape_keys
        old = compat.stash_active_action(key)
        if old:
            stashed.append(old)
        face_action, face_bag = compat.new_action_for(key, f"{name} face")
        for i in range(min(expression_key_count(mesh), take.expressions.shape[1])):
            block = key.key_blocks[EXPRESSION_KEY.format(i)]
            block.slider_min = min(block.slider_min, -SHAPE_KEY_SLIDER_LIMIT)  # widen only, never narrow
            block.slider_max = max(block.slider_max, SHAPE_KEY_SLIDER_LIMIT)
        for curve in curves:
            if curve.owner == mesh.name:
                compat.write_fcurve(face_bag, curve.data_path, curve.index, curve.frames, curve.values,
                                    group=curve.group)
        shape_actions.append(face_action.name)
    return WriteResult(action=action.name, shape_actions=shape_actions, frame_start=int(frames[0]),
                       frame_end=int(frames[-1]), stashed=stashed)
