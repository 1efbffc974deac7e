"""Takes on the animator's own character: an armature with a bone map (Mixamo, Rigify, Unreal, custom).

The maths is core/retarget (no bpy); this module reads the rig (rest bone matrices, rotation modes,
constraints), turns a take into F-curves in each bone's own rotation mode, and reads a take back.

A *mapped rig* is an armature carrying an applied bone map: the JSON ID property `echomask_applied_bone_map` on
the armature object (written by Apply in the Bone Mapping panel, or by the command line). Everything the
take tools do on an SMPL-X rig (Generate, Re-key, Simplify, Scale Intensity, A/B, exports) then works on
it too: takes.py asks `is_mapped` and comes here for the channels and for reading a take back.
Nothing is changed before Apply: `plan_for` only reads the rig (it sets the map's rig settings, e.g. a
Rigify limb's IK_FK, for one depsgraph update to read the constraint influences they imply, and restores
them at once).
"""
from __future__ import annotations

import json

import bpy
import numpy as np

from ...core.errors import RigError
from ...core.retarget import solve
from ...core.retarget.bone_map import BoneMap, BoneMapError, auto_match, resolve_bone_map
from ...core.retarget.solve import Copy, RetargetOptions, TargetBone, TargetRig
from ...core.motion.skeleton import JOINT_NAMES
from ...core.motion.take import Take
from ...core.motion.take_parts import ANIM_PARTS, PART_JOINT_INDICES, check_parts
from ..rna_paths import pose_bone_path

MAP_PROP = "echomask_applied_bone_map"
OPTIONS_PROP = "echomask_retarget_options"
_COPY_KINDS = {"COPY_TRANSFORMS": "TRANSFORMS", "COPY_ROTATION": "ROTATION", "COPY_LOCATION": "LOCATION"}
# constraints that set a bone's own rotation (so keys on it would be overridden)
_OVERRIDING = {"COPY_TRANSFORMS", "COPY_ROTATION", "CHILD_OF", "IK", "DAMPED_TRACK", "LOCKED_TRACK", "TRACK_TO",
               "STRETCH_TO", "ARMATURE", "TRANSFORM", "ACTION", "SPLINE_IK", "LIMIT_ROTATION"}


# ------------------------------------------------------------------------------------------ stored map

def stored_map(obj) -> BoneMap | None:
    """The bone map applied to this armature (None: not a mapped rig)."""
    if obj is None or obj.type != "ARMATURE":
        return None
    text = obj.get(MAP_PROP)
    if not text:
        return None
    try:
        return BoneMap.from_json(json.loads(str(text)), f"'{obj.name}' bone map")
    except (ValueError, BoneMapError):
        return None


def is_mapped(obj) -> bool:
    return stored_map(obj) is not None


def stored_options(obj) -> RetargetOptions:
    data = {}
    try:
        data = json.loads(str(obj.get(OPTIONS_PROP, "{}")))
    except ValueError:
        pass
    return RetargetOptions(root_motion=str(data.get("root_motion", "TRAVEL")),
                           foot_correction=bool(data.get("foot_correction", True)))


def store_map(obj, bone_map: BoneMap, options: RetargetOptions) -> None:
    obj[MAP_PROP] = json.dumps(bone_map.to_json())
    obj[OPTIONS_PROP] = json.dumps({"root_motion": options.root_motion, "foot_correction": options.foot_correction})


# ------------------------------------------------------------------------------------------ reading the rig

def _evaluated_influences(obj, settings) -> dict[tuple[str, str], float]:
    """Constraint influences (bone, constraint) as the rig evaluates them with `settings` applied
    (drivers read the rig's switches); the settings are restored before returning."""
    saved = []
    for s in settings:
        pb = obj.pose.bones.get(s.bone)
        if pb is not None and s.prop in pb.keys():
            saved.append((pb, s.prop, pb[s.prop]))
            pb[s.prop] = type(pb[s.prop])(s.value) if isinstance(pb[s.prop], (int, float)) else s.value
    try:
        if saved:
            obj.update_tag()
            bpy.context.view_layer.update()
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = obj.evaluated_get(depsgraph)
        out = {}
        for pb in evaluated.pose.bones:
            for c in pb.constraints:
                out[(pb.name, c.name)] = float(c.influence)
        return out
    finally:
        for pb, prop, value in saved:
            pb[prop] = value
        if saved:
            obj.update_tag()
            bpy.context.view_layer.update()


def target_rig(obj, settings=()) -> TargetRig:
    """The armature's bones for core.retarget: rest matrices (armature space), rotation modes, parents,
    and the world-space copy constraints of its control rig."""
    influences = _evaluated_influences(obj, settings) if any(pb.constraints for pb in obj.pose.bones) else {}
    bones = []
    for bone in obj.data.bones:
        pb = obj.pose.bones[bone.name]
        copies, constrained = [], False
        for c in pb.constraints:
            if c.mute or not getattr(c, "enabled", True):
                continue
            influence = influences.get((pb.name, c.name), float(c.influence))
            if influence <= 0.0:
                continue
            world = getattr(c, "owner_space", "WORLD") == "WORLD" and getattr(c, "target_space", "WORLD") == "WORLD"
            if c.type in _COPY_KINDS and world and getattr(c, "target", None) == obj and c.subtarget \
                    and getattr(c, "mix_mode", "REPLACE") == "REPLACE":
                copies.append(Copy(_COPY_KINDS[c.type], c.subtarget, influence))
            if c.type in _OVERRIDING and (world or c.type not in _COPY_KINDS):
                constrained = True
        bones.append(TargetBone(bone.name, bone.parent.name if bone.parent else None,
                                np.array(bone.matrix_local, np.float64), rotation_mode=pb.rotation_mode,
                                inherit_rotation=bool(bone.use_inherit_rotation), copies=copies,
                                constrained=constrained))
    return TargetRig(obj.name, bones)


def check_rig_object(obj) -> None:
    """Rigs that cannot take keys: not an armature, linked from a library without an override."""
    if obj is None:
        raise RigError("No armature is selected: pick the character's rig.")
    if obj.type != "ARMATURE":
        raise RigError(f"'{obj.name}' is a {obj.type.lower()}, not an armature.")
    if obj.library is not None:
        raise RigError(f"'{obj.name}' is linked from {obj.library.filepath} and cannot be animated here: make a "
                       f"library override first (Object > Library Override > Make).")


def resolve_for(obj, bone_map: BoneMap):
    """(joint -> bone, resolved map) for this rig; a map naming missing bones raises naming them."""
    resolved = resolve_bone_map(bone_map, obj.data.bones.keys())
    if resolved.missing:
        names = ", ".join(f"{b} ({j})" for j, b in resolved.missing[:12])
        more = f" and {len(resolved.missing) - 12} more" if len(resolved.missing) > 12 else ""
        raise RigError(f"'{obj.name}' has no bones {names}{more} that the bone map '{bone_map.name}' names. "
                       f"Fix those rows (they show in red), or clear them to skip the joints.")
    if not resolved.bones:
        raise RigError(f"None of the bone map's bones is on '{obj.name}'. Pick another preset or use Auto.")
    return resolved


def plan_for(obj, bone_map: BoneMap | None = None, options: RetargetOptions | None = None):
    """(plan, resolved map) for the armature and map (default: its applied map and options)."""
    check_rig_object(obj)
    bone_map = bone_map or stored_map(obj)
    if bone_map is None:
        raise RigError(f"'{obj.name}' has no bone map: set one up in EchoMask > Bone Mapping and Apply it.")
    resolved = resolve_for(obj, bone_map)
    rig = target_rig(obj, resolved.settings)
    try:
        plan = solve.plan_retarget(rig, resolved.bones, options or stored_options(obj))
    except solve.RetargetError as err:
        raise RigError(str(err)) from None
    return plan, resolved


def auto_map(obj) -> BoneMap:
    return auto_match(obj.data.bones.keys(), {b.name: b.parent.name if b.parent else None for b in obj.data.bones})


# ------------------------------------------------------------------------------------------ takes

def setting_path(bone: str, prop: str) -> str:
    return f'pose.bones["{bpy.utils.escape_identifier(bone)}"]["{bpy.utils.escape_identifier(prop)}"]'


def _keyed_for_parts(plan, parts) -> list[str]:
    joints = {JOINT_NAMES[j] for p in parts for j in PART_JOINT_INDICES.get(p, ())}
    mapped = {plan.joint_bone[j] for j in joints if j in plan.joint_bone}
    body = bool(set(parts) & {"upper", "lower", "hands"})
    return [b for b in plan.keyed if b in mapped or (body and b not in plan.joint_bone.values())]


def take_channels(obj, take: Take, parts=ANIM_PARTS):
    """[(data_path, index, values (N,), group)] for the take on the mapped rig, only the given parts."""
    parts = check_parts(parts)
    plan, resolved = plan_for(obj)
    result = solve.retarget(plan, take)
    keyed = set(_keyed_for_parts(plan, parts))
    out = []
    for bone, prop, values in result.channels():
        if prop == "location":
            if "root" in parts:
                out.extend((pose_bone_path(bone, prop), c, values[:, c], bone) for c in range(3))
        elif bone in keyed:
            out.extend((pose_bone_path(bone, prop), c, values[:, c], bone) for c in range(values.shape[1]))
    n = take.num_frames
    for s in resolved.settings:
        out.append((setting_path(s.bone, s.prop), 0, np.full(n, s.value), "Rig settings"))
    return out, plan


def read_mapped_take(obj, curves: dict, frames: np.ndarray, fps: float) -> Take:
    """Keyed channels of a mapped rig's take (curves: (data_path, index) -> F-curve) as an SMPL-X take."""
    from ..takes.nla import sample_fcurve

    plan, _ = plan_for(obj)
    n = len(frames)
    rotations = {}
    for name in plan.keyed:
        mode = plan.rig.bone(name).rotation_mode
        path = pose_bone_path(name, solve.rotation_property(mode))
        count = solve.channel_count(mode)
        if not any((path, c) in curves for c in range(count)):
            continue
        default = {"QUATERNION": [1, 0, 0, 0], "AXIS_ANGLE": [0, 0, 1, 0]}.get(mode, [0, 0, 0])
        values = np.stack([sample_fcurve(curves[(path, c)], frames) if (path, c) in curves else np.full(n, default[c])
                           for c in range(count)], -1)
        rotations[name] = solve.channels_to_rotation(values, mode)
    loc_path = pose_bone_path(plan.root_bone, "location")
    location = None
    if any((loc_path, c) in curves for c in range(3)):
        location = np.stack([sample_fcurve(curves[(loc_path, c)], frames) if (loc_path, c) in curves
                             else np.zeros(n) for c in range(3)], -1)
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    rotations = {k: rotations.get(k, eye) for k in plan.keyed}
    return solve.inverse(plan, rotations, location, fps=fps)


def rig_notes(obj, plan) -> list[str]:
    """What the animator should know about this rig before Apply (own animation, overrides, warnings)."""
    notes = list(plan.warnings) + list(plan.notes)
    anim = obj.animation_data
    if anim is not None and anim.action is not None and not anim.action.get("echomask_take"):
        from .. import compat

        mapped = set(plan.joint_bone.values())
        animated = sorted({fc.data_path.split('"')[1] for fc in compat.action_fcurves(anim.action, compat.assigned_slot(obj))
                           if fc.data_path.startswith("pose.bones[") and fc.data_path.split('"')[1] in mapped})
        shown = ", ".join(animated[:8]) + (f" and {len(animated) - 8} more" if len(animated) > 8 else "")
        notes.append(f"'{obj.name}' has its own animation ('{anim.action.name}'"
                     + (f", keys on {shown}" if animated else "") + "): it is stashed on a muted NLA track, never edited.")
    if obj.override_library is not None:
        notes.append(f"'{obj.name}' is a library override: the takes are stored in this file.")
    return notes


def rekey_channels(obj, new_take: Take, parts, frames: np.ndarray, rows: np.ndarray, weights: np.ndarray,
                   body_curves: dict) -> dict:
    """Re-key on a mapped rig: {(owner, data_path, index): values on `frames`} for the new take's channels
    of `parts`, blended into the existing keys with `weights` (quaternions by slerp, the rest linearly)."""
    from ...core.motion import rotations as R
    from ..takes.nla import BODY, sample_fcurve

    channels, plan = take_channels(obj, new_take, parts)
    grouped: dict[str, dict[int, np.ndarray]] = {}
    for path, c, values, _ in channels:
        grouped.setdefault(path, {})[c] = values[rows]
    out = {}
    for path, comps in grouped.items():
        old = {c: sample_fcurve(body_curves[(path, c)], frames) if (path, c) in body_curves else None for c in comps}
        if path.endswith(".rotation_quaternion") and len(comps) == 4:
            new_q = np.stack([comps[c] for c in range(4)], -1)
            old_q = np.stack([old[c] if old[c] is not None else np.full(len(frames), float(c == 0)) for c in range(4)], -1)
            old_q /= np.linalg.norm(old_q, axis=-1, keepdims=True)
            if np.dot(new_q[0], old_q[0]) < 0:
                new_q = -new_q
            q = R.make_quaternions_continuous(R.quaternion_slerp(old_q, new_q, weights), axis=0)
            if np.dot(q[0], old_q[0]) < 0:
                q = -q
            for c in range(4):
                out[(BODY, path, c)] = q[:, c]
            continue
        for c, new in comps.items():
            base = old[c] if old[c] is not None else new
            if path.endswith(".rotation_euler"):   # the same turn, nearest to the keys around it
                new = new + 2 * np.pi * np.round((base[0] - new[0]) / (2 * np.pi))
            out[(BODY, path, c)] = base + weights * (new - base)
    return out
