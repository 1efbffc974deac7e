"""Write a Take onto an SMPL-X armature (and its face shape keys) as NEW Actions, in bulk.

Nothing existing is edited: a rig's (or shape-key datablock's) current action is stashed on a muted NLA
track, and the take goes into a fresh Action with its own slot, so it plays on Blender 4.2, 4.5 and 5.0.
Keys are written with `keyframe_points.add` + `foreach_set` (about 40x faster than keyframe_insert).
"""
from __future__ import annotations

import dataclasses

import bpy
import numpy as np

from ..core import rotations as R
from ..core import skeleton
from ..core.take import Take
from . import compat
from .rig import BONE_NAMES, RigFrames, check_smplx_armature, rig_frames

EXPRESSION_KEY = "Exp{:03d}"   # shape-key names of the SMPL-X Blender add-on
SHAPE_KEY_SLIDER_LIMIT = 10.0  # Blender's widest slider range; BEAT2 expressions reach about +-6


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


def _bone_quaternions(frames: RigFrames, take: Take) -> np.ndarray:
    """(N, 55, 4) sign-continuous quaternions to key on the rig's bones."""
    axis_angle = take.joint_rotations().astype(np.float64)
    if frames.is_direct:
        quats = R.axis_angle_to_quaternion(axis_angle)
    else:
        quats = R.matrix_to_quaternion(frames.local_rotations(R.axis_angle_to_matrix(axis_angle)))
    return R.make_quaternions_continuous(quats, axis=0)


def write_take_to_armature(armature: bpy.types.Object, take: Take, *, name: str = "EchoMask take",
                           frame_start: int = 1, meshes: list[bpy.types.Object] | None = None) -> WriteResult:
    """Key the take on `armature` from `frame_start` (take frame k -> scene frame frame_start + k).

    Every bone gets rotation_quaternion (the jaw and eyes included), the pelvis gets `location` from
    `trans`, and meshes with Exp### shape keys (by default the armature's child meshes) get the
    expressions on their shape-key datablock. The take must already be at the scene's frame rate.
    """
    take.validate(name)
    check_smplx_armature(armature)
    rig = rig_frames(armature)
    quats = _bone_quaternions(rig, take)                             # everything computed before any change
    pelvis_location = rig.pelvis_location(take.trans.astype(np.float64))
    meshes = expression_meshes(armature) if meshes is None else [m for m in meshes if expression_key_count(m)]
    frames = frame_start + np.arange(take.num_frames, dtype=np.float64)

    stashed = []
    old = compat.stash_active_action(armature)
    if old:
        stashed.append(old)
    action, bag = compat.new_action_for(armature, name)
    for j, bone in enumerate(BONE_NAMES):
        armature.pose.bones[bone].rotation_mode = "QUATERNION"
        path = f'pose.bones["{bpy.utils.escape_identifier(bone)}"].rotation_quaternion'
        for c in range(4):
            compat.write_fcurve(bag, path, c, frames, quats[:, j, c], group=bone)
    pelvis = f'pose.bones["{BONE_NAMES[0]}"].location'
    for c in range(3):
        compat.write_fcurve(bag, pelvis, c, frames, pelvis_location[:, c], group=BONE_NAMES[0])

    shape_actions = []
    for mesh in meshes:
        key = mesh.data.shape_keys
        old = compat.stash_active_action(key)
        if old:
            stashed.append(old)
        face_action, face_bag = compat.new_action_for(key, f"{name} face")
        blocks = key.key_blocks
        for i in range(min(expression_key_count(mesh), take.expressions.shape[1])):
            block = blocks[EXPRESSION_KEY.format(i)]
            block.slider_min = min(block.slider_min, -SHAPE_KEY_SLIDER_LIMIT)  # widen only, never narrow
            block.slider_max = max(block.slider_max, SHAPE_KEY_SLIDER_LIMIT)
            path = f'key_blocks["{bpy.utils.escape_identifier(block.name)}"].value'
            compat.write_fcurve(face_bag, path, 0, frames, take.expressions[:, i], group="Expressions")
        shape_actions.append(face_action.name)
    return WriteResult(action=action.name, shape_actions=shape_actions, frame_start=int(frames[0]),
                       frame_end=int(frames[-1]), stashed=stashed)
