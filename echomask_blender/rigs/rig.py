"""SMPL-X armatures: build one from the rest skeleton, or check and read an existing one.

Rig convention (the one the SMPL-X Blender add-on relies on)
------------------------------------------------------------
The SMPL-X add-on writes BEAT2/SMPL-X axis-angle straight into `pose_bone.rotation_quaternion`. That is
only right when every bone's local frame equals the SMPL-X model frame (x left, y up, z forward). So the
armature built here has every bone pointing straight up (+Z in Blender) with roll 0. Such a bone's rest
matrix is exactly

    C = [[1, 0, 0], [0, 0, -1], [0, 1, 0]],   C (x, y, z)_smplx = (x, -z, y)_blender,

the Y-up -> Z-up rotation, and its head sits at C @ rest_joint (metres, armature object at the origin).
Because all rest frames are equal, Blender's pose chain reduces to SMPL-X forward kinematics:

    world rotation of bone j  = C @ G_j @ C^T          (G_j the SMPL-X global rotation)
    world head of bone j      = C @ fk_position_j
    rotation_quaternion_j     = the SMPL-X local rotation R_j as it is
    pelvis pose `location`    = trans, in bone-local = SMPL-X model axes

(tests/blender/test_rig_and_keys.py checks this to 1e-4 m against core.motion.rotations.forward_kinematics).

Other rigs with the SMPL-X bone names are valid targets too. `RigFrames` measures how a rig differs:
`model_frame` F (armature space <- SMPL-X axes, with the rig's scale) is fitted from the rest bone heads
(so it works whether the armature is Z-up in armature space like ours, or Y-up under a rotated object like
the SMPL-X add-on's), and each bone's rest rotation A_j gives B_j = F^-1 A_j. The local rotation to key
is then B_j^-1 R_j B_j, which is R_j itself when B_j = I (this rig and the add-on's).
"""
from __future__ import annotations

import dataclasses

import bpy
import numpy as np

from ...core.motion import skeleton
from ...core.errors import RigError

# SMPL-X model axes -> Blender axes (Y up -> Z up).
C = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
BONE_NAMES = skeleton.JOINT_NAMES
_MIN_BONE_LENGTH = 0.01


def _bone_lengths(heads: np.ndarray) -> np.ndarray:
    """Display length per bone: the mean distance to its children, half the parent's for leaves."""
    lengths = np.zeros(len(heads))
    for j in range(len(heads)):
        kids = skeleton.children(j)
        if kids:
            lengths[j] = np.mean([np.linalg.norm(heads[k] - heads[j]) for k in kids])
    for j, parent in enumerate(skeleton.PARENTS):  # parents come first in SMPL-X order
        if lengths[j] == 0.0:
            lengths[j] = 0.5 * lengths[parent] if parent >= 0 else 0.1
    return np.maximum(lengths, _MIN_BONE_LENGTH)


def create_smplx_armature(context: bpy.types.Context, name: str = "SMPLX",
                          rest_joints_yup: np.ndarray | None = None,
                          collection: bpy.types.Collection | None = None) -> bpy.types.Object:
    """Add a 55-bone SMPL-X armature (bones only, Z up, metres) to the scene and return its object.

    `rest_joints_yup` (55, 3) defaults to the neutral skeleton (core.motion.skeleton.REST_JOINTS_YUP); pass the
    joints of the user's own model file to match a mesh built from it. Leaves the object active in Object
    mode; the previous mode must be Object mode (the operators ensure it).
    """
    rest = skeleton.REST_JOINTS_YUP if rest_joints_yup is None else np.asarray(rest_joints_yup, np.float64)
    if rest.shape != (skeleton.NUM_JOINTS, 3) or not np.isfinite(rest).all():
        raise RigError(f"Rest joints must be a finite (55, 3) array, got shape {rest.shape}.")
    heads = rest @ C.T
    lengths = _bone_lengths(heads)

    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    (collection or context.scene.collection).objects.link(obj)
    obj["smplx_rig"] = "echomask"  # provenance, readable from Python and kept in FBX custom props

    view_layer = context.view_layer
    view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        edit_bones = data.edit_bones
        for j, bone_name in enumerate(BONE_NAMES):
            bone = edit_bones.new(bone_name)
            bone.head = heads[j]
            bone.tail = heads[j] + np.array([0.0, 0.0, lengths[j]])
            bone.roll = 0.0
            bone.use_connect = False
            bone.use_deform = True
            parent = skeleton.PARENTS[j]
            if parent >= 0:
                bone.parent = edit_bones[BONE_NAMES[parent]]
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    for pose_bone in obj.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"
    return obj


def missing_bones(obj: bpy.types.Object) -> list[str]:
    if obj is None or obj.type != "ARMATURE":
        return list(BONE_NAMES)
    have = obj.data.bones.keys()
    return [name for name in BONE_NAMES if name not in have]


def check_smplx_armature(obj: bpy.types.Object | None) -> None:
    """Raise RigError unless `obj` is an armature with all 55 SMPL-X bone names, or a character's own rig
    with an applied bone map (echomask_blender/rigs/retarget.py)."""
    from . import retarget

    if retarget.is_mapped(obj):
        retarget.check_rig_object(obj)
        return
    if obj is None:
        raise RigError("No armature is selected. Select an SMPL-X armature, or let EchoMask create one.")
    if obj.type != "ARMATURE":
        raise RigError(f"'{obj.name}' is a {obj.type.lower()}, not an armature. Select an SMPL-X armature.")
    missing = missing_bones(obj)
    if missing:
        shown = ", ".join(missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
        raise RigError(f"Armature '{obj.name}' is not an SMPL-X rig: {len(missing)} of its 55 bones are "
                       f"missing ({shown}). Use a rig made by EchoMask or the SMPL-X add-on.")


def _nearest_axis_aligned(rotation: np.ndarray, tolerance_deg: float = 10.0) -> np.ndarray:
    """Snap to the nearest signed permutation rotation when within tolerance (T-pose rigs are aligned)."""
    snapped = np.zeros((3, 3))
    for row in range(3):
        col = int(np.argmax(np.abs(rotation[row])))
        snapped[row, col] = np.sign(rotation[row, col])
    if abs(np.linalg.det(snapped) - 1.0) > 1e-6:
        return rotation
    cos_angle = (np.trace(snapped.T @ rotation) - 1.0) / 2.0
    return snapped if cos_angle >= np.cos(np.radians(tolerance_deg)) else rotation


@dataclasses.dataclass
class RigFrames:
    """How to turn SMPL-X local rotations and root translation into this rig's pose channels."""

    model_frame: np.ndarray     # (3, 3) rotation F: armature space <- SMPL-X axes
    scale: float                # rig units per metre (1 for our rig, 100 for a centimetre rig)
    bone_frames: np.ndarray     # (55, 3, 3) B_j = F^T A_j
    pelvis_rest: np.ndarray     # (3, 3) A_0, the pelvis bone's rest rotation in armature space

    @property
    def is_direct(self) -> bool:
        """True when every B_j is the identity: SMPL-X rotations are keyed as they are."""
        return bool(np.allclose(self.bone_frames, np.eye(3), atol=1e-6))

    def local_rotations(self, rotmats: np.ndarray) -> np.ndarray:
        """(N, 55, 3, 3) SMPL-X local rotations -> the rotations to key on each bone."""
        if self.is_direct:
            return rotmats
        b = self.bone_frames[None]
        return np.swapaxes(b, -1, -2) @ rotmats @ b

    def pelvis_location(self, trans: np.ndarray) -> np.ndarray:
        """(N, 3) SMPL-X translation (metres) -> pelvis pose `location` in bone-local axes."""
        return self.scale * trans @ (self.pelvis_rest.T @ self.model_frame).T


def rig_frames(obj: bpy.types.Object) -> RigFrames:
    """Measure the rig's rest frames (see the module docstring). `obj` must pass check_smplx_armature.

    On a mapped rig (a character's own, retarget.py) only `scale` (rig units per source metre) is meaningful.
    """
    from . import retarget

    if retarget.is_mapped(obj):
        plan, _ = retarget.plan_for(obj)
        eye = np.broadcast_to(np.eye(3), (skeleton.NUM_JOINTS, 3, 3)).copy()
        return RigFrames(model_frame=plan.model_frame, scale=plan.scale, bone_frames=eye, pelvis_rest=np.eye(3))
    bones = obj.data.bones
    heads = np.array([bones[name].head_local for name in BONE_NAMES], np.float64)
    rests = np.array([np.array(bones[name].matrix_local)[:3, :3] for name in BONE_NAMES], np.float64)
    # Fit heads ~ s F rest + t (Umeyama, rotation only, no reflection).
    src = skeleton.REST_JOINTS_YUP - skeleton.REST_JOINTS_YUP.mean(0)
    dst = heads - heads.mean(0)
    u, sig, vt = np.linalg.svd(dst.T @ src)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    model_frame = _nearest_axis_aligned(u @ fix @ vt)
    fitted = float(np.sum(sig * np.diag(fix)) / np.sum(src ** 2))
    if not np.isfinite(fitted) or fitted <= 1e-6:
        raise RigError(f"Armature '{obj.name}' has degenerate bone positions; its rest pose is not a T-pose.")
    # Body shapes differ by tens of percent, units by powers of ten: trans goes into the rig's unit
    # (1 for metres, 100 for a centimetre rig), never into its body size.
    scale = float(10.0 ** round(np.log10(fitted)))
    bone_frames = model_frame.T[None] @ rests
    return RigFrames(model_frame=model_frame, scale=scale, bone_frames=bone_frames, pelvis_rest=rests[0])
