"""Takes: every generation is a new Action on its own NLA track of the rig; one take plays at a time.

Layout on an SMPL-X armature (and, for the face, on each expression mesh's shape-key datablock):
- each take is an Action (named after its audio and seed) in a strip on a track named "EchoMask: <take>";
- the playing take's track is unmuted, every other take's track is muted; "compare" solos a track;
- the rig's active action is left empty, so the NLA plays; an active action the animator had is stashed on
  a muted NLA track first (compat.stash_active_action): its keys are never touched.
Bones keep their rotation modes: a take is keyed in each bone's own mode (keys.bone_rotation_curves), and
read back from whichever rotation property it keys (keyed_rotation_mode).
Takes are edited in the NLA editor's tweak mode (Tab), like any strip. Re-key, simplify and intensity
never modify a take: they make a new one from it.

A take's Action carries ID properties (`echomask_*`: audio, seed, parts, first frame, face actions), so
the list survives saving, and `read_take` turns a take (the animator's edits included) back into a
core.motion.take.Take for re-keying and .npz export.
"""
from __future__ import annotations

import dataclasses

import bpy
import numpy as np

from ...core.motion import rotations as R
from ...core.motion import skeleton
from ...core.errors import EchoMaskError, RigError
from ...core.motion.take import Take
from ...core.motion.take_parts import ANIM_PARTS, check_parts
from .. import compat
from ..rigs import retarget
from .keys import (BODY, EXPRESSION_KEY, SHAPE_KEY_SLIDER_LIMIT, CurveKeys,  # noqa: F401
                   channels_to_quaternions, expression_key_count, expression_meshes, pose_bone_path, rest_channels,
                   rotation_property, shape_key_path, take_curves)
from ..rigs.rig import BONE_NAMES, check_smplx_armature, rig_frames

TAKE_PROP = "echomask_take"
TRACK_PREFIX = "EchoMask: "
MAX_NAME = 60  # Blender ID names hold 63 bytes


@dataclasses.dataclass
class TakeInfo:
    name: str                  # the armature Action's name
    frame_start: int
    frame_end: int
    audio: str
    seed: int
    parts: tuple[str, ...]
    face_actions: list[str]
    playing: bool
    solo: bool


# ------------------------------------------------------------------------------------------ naming

def take_name(audio_label: str, seed: int, suffix: str = "") -> str:
    """'speech_01 · seed 7' (+ suffix); Blender appends .001 if the name is taken."""
    tail = f" · seed {seed}{suffix}"
    stem = (audio_label or "take").strip()
    room = MAX_NAME - len(tail.encode())
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return stem + tail


# ------------------------------------------------------------------------------------------ tracks

def _take_track(anim, action) -> bpy.types.NlaTrack | None:
    if anim is None:
        return None
    for track in anim.nla_tracks:
        if any(strip.action == action for strip in track.strips):
            return track
    return None


def _is_take(action) -> bool:
    return action is not None and bool(action.get(TAKE_PROP))


def _leave_tweak_mode(anim) -> None:
    if anim is not None and anim.use_tweak_mode:
        anim.use_tweak_mode = False


def _stash_foreign_action(owner_id) -> str | None:
    """Stash an active action that is not a take (the animator's own), keys untouched."""
    anim = owner_id.animation_data
    if anim is None:
        return None
    _leave_tweak_mode(anim)
    if anim.action is None:
        return None
    if _is_take(anim.action) or anim.action.get("echomask_face_of"):
        anim.action = None   # a take picked as the active action: it is on its track already
        return None
    return compat.stash_active_action(owner_id, track_name="[Stash] before EchoMask")


# ------------------------------------------------------------------------------------------ writing
#
# Writing 223 bone F-curves x 1800 keys (60 s) costs 0.1-0.4 s inside Blender (keyframe_points.add alone is
# about a third). To keep every main-thread step short, a take is *staged*: its Actions are built in small
# time-boxed steps without touching the rig (they are not assigned to anything yet), then *linked* (stash,
# NLA tracks, play) in one short step. Blender folds data changes made outside an undo push into the next
# push, so the undoable Apply operator that links the take undoes the whole take in one step.

KEY_ATTRIBUTES = ("interpolation", "handle_left_type", "handle_right_type", "easing", "type", "back",
                  "amplitude", "period")


def read_curve_keys(fcurve, owner: str) -> CurveKeys:
    """All keys of an F-curve with all their attributes, for an exact copy."""
    points = fcurve.keyframe_points
    n = len(points)
    co = np.empty(2 * n, np.float32)
    points.foreach_get("co", co)
    attributes = {}
    for name in ("handle_left", "handle_right"):
        arr = np.empty(2 * n, np.float32)
        points.foreach_get(name, arr)
        attributes[name] = arr
    for name in KEY_ATTRIBUTES:
        prop = bpy.types.Keyframe.bl_rna.properties[name]
        arr = np.empty(n, np.int32 if prop.type == "ENUM" else np.float32)
        points.foreach_get(name, arr)
        attributes[name] = arr
    group = fcurve.group.name if fcurve.group is not None else ""
    return CurveKeys(owner, fcurve.data_path, fcurve.array_index, co[0::2].copy(), co[1::2].copy(), group, attributes)


def write_curve_keys(container, curve: CurveKeys):
    fcurve = container.fcurves.new(curve.data_path, index=curve.index)
    if curve.group:
        fcurve.group = container.groups.get(curve.group) or container.groups.new(curve.group)
    n = len(curve.frames)
    points = fcurve.keyframe_points
    points.add(n)
    co = np.empty(2 * n, np.float32)
    co[0::2] = curve.frames
    co[1::2] = curve.values
    points.foreach_set("co", co)
    if curve.attributes is None:
        points.foreach_set("interpolation", np.full(n, compat.KEYFRAME_INTERPOLATION["LINEAR"], np.int32))
        points.handles_recalc()
    else:  # an exact copy: every attribute as it was, handles included (no recalculation)
        for name, arr in curve.attributes.items():
            points.foreach_set(name, arr)
    return fcurve


class StagedActions:
    """New Actions for a take (the rig's, and one per face mesh), written a few curves per step, then
    linked onto the rig as a playing take. Subclasses fill `pending` with CurveKeys."""

    def __init__(self, armature: bpy.types.Object, *, name: str, parts, fps: float, frame_start: int,
                 frame_end: int, face_meshes=()):
        self.armature = armature.name
        self.name = name
        self.parts = check_parts(parts)
        self.fps = float(fps)
        self.frame_start = int(frame_start)
        self.frame_end = int(frame_end)
        self.face_meshes = [m.name for m in face_meshes]
        self.actions: dict[str, str] = {}   # owner -> Action name
        self.pending: list[CurveKeys] = []
        self._started = False
        self.applied_name: str | None = None

    @property
    def action(self) -> str | None:
        return self.actions.get(BODY)

    @property
    def done(self) -> bool:
        return self._started and not self.pending

    def _begin(self) -> None:
        self._started = True
        body = compat.new_unassigned_action(self.name, "OBJECT")
        self.actions[BODY] = body.name
        for mesh in self.face_meshes:
            face = compat.new_unassigned_action(f"{body.name} face", "KEY")
            face["echomask_face_of"] = body.name
            self.actions[mesh] = face.name
        self.pending.reverse()  # pop() from the end = the order they were listed in

    def step(self, budget_s: float = 0.03) -> bool:
        """Write F-curves for about `budget_s` seconds; True when every curve is written."""
        import time

        end = time.perf_counter() + budget_s
        if not self._started:
            self._begin()
        containers = {}
        while self.pending:
            curve = self.pending.pop()
            action = bpy.data.actions.get(self.actions.get(curve.owner, ""))
            if action is None:  # undone or deleted meanwhile
                raise EchoMaskError("The take being written was removed (by Undo?). Generate it again.")
            if curve.owner not in containers:
                containers[curve.owner] = compat.action_channels(action)
            write_curve_keys(containers[curve.owner], curve)
            if time.perf_counter() > end:
                break
        return self.done

    def discard(self) -> None:
        """Remove whatever was staged (cancel, error): nothing is left behind."""
        for name in self.actions.values():
            action = bpy.data.actions.get(name)
            if action is not None and action.users == 0:
                bpy.data.actions.remove(action)
        self.actions.clear()
        self.pending.clear()

    def link(self, meta: dict | None = None) -> TakeInfo:
        """Stash the animator's active actions, put the take on new NLA tracks and make it play."""
        while not self.done:
            self.step(budget_s=10.0)
        armature = bpy.data.objects.get(self.armature)
        action = bpy.data.actions.get(self.action or "")
        if armature is None or action is None:
            raise EchoMaskError("The rig or the take disappeared before it could be applied.")
        face_names = []
        for mesh_name in self.face_meshes:
            mesh, face = bpy.data.objects.get(mesh_name), bpy.data.actions.get(self.actions.get(mesh_name, ""))
            if mesh is None or face is None or mesh.data.shape_keys is None:
                continue
            key = mesh.data.shape_keys
            for i in range(expression_key_count(mesh)):
                block = key.key_blocks[EXPRESSION_KEY.format(i)]
                block.slider_min = min(block.slider_min, -SHAPE_KEY_SLIDER_LIMIT)   # widen only
                block.slider_max = max(block.slider_max, SHAPE_KEY_SLIDER_LIMIT)
            _stash_foreign_action(key)
            _add_take_track(key, face)
            face_names.append(face.name)
        action[TAKE_PROP] = 1   # bones keep their rotation modes: the take is keyed in each bone's own
        action["echomask_frame_start"] = self.frame_start
        action["echomask_frame_end"] = self.frame_end
        action["echomask_fps"] = self.fps
        action["echomask_parts"] = ",".join(self.parts)
        action["echomask_face_actions"] = "\n".join(face_names)
        for key, value in (meta or {}).items():
            action[f"echomask_{key}"] = value
        _stash_foreign_action(armature)
        _add_take_track(armature, action)
        set_playing_take(armature, action.name)
        self.applied_name = action.name
        return take_info(armature, action)


class StagedTake(StagedActions):
    """A core Take keyed densely (one key per frame, linear) from `frame_start`, only the given parts: the
    F-curves of keys.take_curves (an SMPL-X rig or a mapped character), staged a few per step."""

    def __init__(self, armature: bpy.types.Object, take: Take, *, name: str, frame_start: int,
                 parts=ANIM_PARTS, meshes=None):
        parts = check_parts(parts)
        if not parts:
            raise EchoMaskError("No body part is selected: tick at least one of Face, Upper Body, Hands, "
                                "Lower Body or Root Motion.")
        take.validate("take")
        curves, face_meshes = take_curves(armature, take, frame_start=frame_start, parts=parts, meshes=meshes)
        super().__init__(armature, name=name, parts=parts, fps=take.fps, frame_start=frame_start,
                         frame_end=frame_start + take.num_frames - 1, face_meshes=face_meshes)
        self.pending.extend(curves)


def _add_take_track(owner_id, action) -> bpy.types.NlaTrack:
    """A new NLA track on top holding `action` where its keys are (with its slot on 4.4+). It starts muted:
    `set_playing_take` switches to it, which is what remembers the take that played before (A/B)."""
    anim = owner_id.animation_data or owner_id.animation_data_create()
    track = anim.nla_tracks.new()
    track.name = (TRACK_PREFIX + action.name)[:63]
    track.mute = True
    strip = track.strips.new(action.name[:63], int(round(action.frame_range[0])), action)
    compat.play_first_slot(strip, action)
    strip.blend_type = "REPLACE"
    strip.extrapolation = "HOLD"
    return track


def write_staged(staged: StagedActions, meta: dict | None = None) -> TakeInfo:
    """Write and link in one go (operators that run quickly anyway: simplify, intensity)."""
    try:
        staged.step(budget_s=float("inf"))
        return staged.link(meta)
    except Exception:
        staged.discard()
        raise


def write_new_take(armature: bpy.types.Object, take: Take, *, name: str, frame_start: int,
                   parts=ANIM_PARTS, meta: dict | None = None, meshes=None) -> TakeInfo:
    """Key `take` (already at the scene's frame rate) as a new take from `frame_start` and make it play.

    Only the channels of `parts` are keyed (face = jaw, eyes and expressions; root = pelvis location).
    Every check runs before the first change, so a RigError/EchoMaskError leaves the scene as it was.
    """
    staged = StagedTake(armature, take, name=name, frame_start=frame_start, parts=parts, meshes=meshes)
    return write_staged(staged, meta)


# ------------------------------------------------------------------------------------------ listing

def take_info(armature, action) -> TakeInfo:
    track = _take_track(armature.animation_data, action)
    parts = tuple(p for p in str(action.get("echomask_parts", ",".join(ANIM_PARTS))).split(",") if p)
    faces = [n for n in str(action.get("echomask_face_actions", "")).split("\n") if n]
    return TakeInfo(name=action.name, frame_start=int(action.get("echomask_frame_start", action.frame_range[0])),
                    frame_end=int(action.get("echomask_frame_end", action.frame_range[1])),
                    audio=str(action.get("echomask_audio", "")), seed=int(action.get("echomask_seed", 0)),
                    parts=parts, face_actions=faces, playing=bool(track and not track.mute),
                    solo=bool(track and track.is_solo))


def list_takes(armature) -> list[TakeInfo]:
    """The rig's takes, in NLA track order (oldest first)."""
    anim = armature.animation_data if armature is not None else None
    if anim is None:
        return []
    out = []
    for track in anim.nla_tracks:
        for strip in track.strips:
            if _is_take(strip.action):
                out.append(take_info(armature, strip.action))
                break
    return out


def playing_take(armature) -> TakeInfo | None:
    playing = [t for t in list_takes(armature) if t.playing]
    return playing[-1] if playing else None


def get_take_action(armature, name: str) -> bpy.types.Action:
    action = bpy.data.actions.get(name)
    if action is None or not _is_take(action) or _take_track(armature.animation_data, action) is None:
        raise EchoMaskError(f"'{name}' is not a take of '{armature.name}'.")
    return action


def face_tracks(armature, action):
    """(Key datablock, track) of each face action of this take."""
    out = []
    names = set(take_info(armature, action).face_actions)
    for mesh in expression_meshes(armature):
        key = mesh.data.shape_keys
        anim = key.animation_data
        if anim is None:
            continue
        for track in anim.nla_tracks:
            if any(s.action is not None and s.action.name in names for s in track.strips):
                out.append((key, track))
    return out


def _face_take_tracks(armature):
    """(Key datablock, track) of every take's face track on the rig's expression meshes."""
    out = []
    for mesh in expression_meshes(armature):
        key = mesh.data.shape_keys
        anim = key.animation_data
        if anim is None:
            continue
        for track in anim.nla_tracks:
            if any(s.action is not None and s.action.get("echomask_face_of") for s in track.strips):
                out.append((key, track))
    return out


# ------------------------------------------------------------------------------------------ switching

def set_playing_take(armature, name: str) -> None:
    """Unmute this take's tracks (body and face), mute every other take's; remembers the previous one."""
    action = get_take_action(armature, name)
    previous = next((t for t in reversed(list_takes(armature)) if t.playing and t.name != name), None)
    anim = armature.animation_data
    _leave_tweak_mode(anim)
    for info in list_takes(armature):
        track = _take_track(anim, bpy.data.actions[info.name])
        track.mute = info.name != name
    playing_faces = {(key.name, track.name) for key, track in face_tracks(armature, action)}
    for key, track in _face_take_tracks(armature):
        track.mute = (key.name, track.name) not in playing_faces
    if previous is not None and previous.name != name:
        armature["echomask_previous_take"] = previous.name


def swap_with_previous(armature) -> str:
    """A/B compare: play the take that played before this one; returns its name."""
    name = armature.get("echomask_previous_take")
    if not name or bpy.data.actions.get(name) is None:
        raise EchoMaskError("There is no previous take to compare with: generate or pick another take first.")
    set_playing_take(armature, name)
    return name


def set_solo(armature, name: str, solo: bool) -> None:
    """Solo this take's track (only it plays, even over the animator's own NLA tracks), or un-solo it."""
    action = get_take_action(armature, name)
    track = _take_track(armature.animation_data, action)
    track.is_solo = solo
    for key, face_track in face_tracks(armature, action):
        face_track.is_solo = solo


def delete_take(armature, name: str) -> None:
    """Remove the take's tracks and its Actions (body and face). The next newest take plays if it was playing."""
    action = get_take_action(armature, name)
    was_playing = take_info(armature, action).playing
    anim = armature.animation_data
    _leave_tweak_mode(anim)
    for key, track in face_tracks(armature, action):
        face_actions = [s.action for s in track.strips if s.action is not None]
        key.animation_data.nla_tracks.remove(track)
        for face in face_actions:
            if face.users == 0:
                bpy.data.actions.remove(face)
    anim.nla_tracks.remove(_take_track(anim, action))
    if action.users == 0:
        bpy.data.actions.remove(action)
    if armature.get("echomask_previous_take") == name:
        del armature["echomask_previous_take"]
    remaining = list_takes(armature)
    if was_playing and remaining:
        set_playing_take(armature, remaining[-1].name)


# ------------------------------------------------------------------------------------------ reading back

def channelbag_curves(action, slot=None) -> dict:
    return {(fc.data_path, fc.array_index): fc for fc in compat.action_fcurves(action, slot)}


def sample_fcurve(fcurve, frames: np.ndarray) -> np.ndarray:
    """The curve's values at integer `frames`: straight from the keys when there is one key per frame
    (generated takes), else by evaluating the curve (animator-edited keys, any interpolation)."""
    n = len(fcurve.keyframe_points)
    if n == len(frames):
        co = np.empty(2 * n, np.float32)  # float32 = the keys' own type: a plain memory copy
        fcurve.keyframe_points.foreach_get("co", co)
        if np.array_equal(co[0::2], frames):
            return co[1::2].astype(np.float64)
    return np.array([fcurve.evaluate(float(f)) for f in frames], np.float64)


def keyed_rotation_mode(curves: dict, pose_bone) -> str | None:
    """The rotation mode a take's keys for this bone are in (None: it keys no rotation): the bone's own
    mode when the take keys that property, else whichever rotation property it keys (Euler in the bone's
    order, or XYZ)."""
    own = pose_bone.rotation_mode
    euler = own if rotation_property(own)[0] == "rotation_euler" else "XYZ"
    for mode in (own, "QUATERNION", euler, "AXIS_ANGLE"):
        if (pose_bone_path(pose_bone.name, rotation_property(mode)[0]), 0) in curves:
            return mode
    return None


def bone_rotation_samples(curves: dict, pose_bone, mode: str, frames: np.ndarray) -> np.ndarray:
    """(N, C) the take's values of the bone's rotation channels in `mode` at `frames` (unkeyed: rest)."""
    prop, channels = rotation_property(mode)
    values = rest_channels(mode, len(frames))
    for c in range(channels):
        fcurve = curves.get((pose_bone_path(pose_bone.name, prop), c))
        if fcurve is not None:
            values[:, c] = sample_fcurve(fcurve, frames)
    return values


def take_strip_slot(armature, action):
    track = _take_track(armature.animation_data, action)
    return None if track is None else compat.strip_slot(track.strips[0])


def read_take(armature, name: str, frame_start: int | None = None, frame_end: int | None = None,
              fps: float | None = None) -> Take:
    """A take (with the animator's edits to its keys) back as a core Take over [frame_start, frame_end].

    Channels a take does not key (parts it did not generate) read as the rest pose.
    """
    action = get_take_action(armature, name)
    info = take_info(armature, action)
    start = info.frame_start if frame_start is None else int(frame_start)
    end = info.frame_end if frame_end is None else int(frame_end)
    if end < start:
        raise EchoMaskError(f"Empty frame range {start}–{end}.")
    frames = np.arange(start, end + 1, dtype=np.float64)
    n = len(frames)
    curves = channelbag_curves(action, take_strip_slot(armature, action))
    if retarget.is_mapped(armature):   # a character's own rig: back through its bone map
        out = retarget.read_mapped_take(armature, curves, frames, float(fps or action.get("echomask_fps", 30.0)))
        out.meta = {"take": name, "frame_start": start}
        return out
    rig = rig_frames(armature)
    quats = np.zeros((n, skeleton.NUM_JOINTS, 4))
    quats[..., 0] = 1.0
    for j, bone in enumerate(BONE_NAMES):
        pose_bone = armature.pose.bones[bone]
        mode = keyed_rotation_mode(curves, pose_bone)
        if mode is not None:
            quats[:, j] = channels_to_quaternions(bone_rotation_samples(curves, pose_bone, mode, frames), mode)
    quats /= np.linalg.norm(quats, axis=-1, keepdims=True)
    if rig.is_direct:
        poses = R.quaternion_to_axis_angle(quats).reshape(n, -1)
    else:  # keyed = B^T R B  ->  R = B keyed B^T
        b = rig.bone_frames[None]
        rot = b @ R.quaternion_to_matrix(quats) @ np.swapaxes(b, -1, -2)
        poses = R.matrix_to_axis_angle(rot).reshape(n, -1)
    trans = np.zeros((n, 3))
    loc_path = pose_bone_path(BONE_NAMES[0], "location")
    if (loc_path, 0) in curves:
        loc = np.stack([sample_fcurve(curves[(loc_path, c)], frames) if (loc_path, c) in curves
                        else np.zeros(n) for c in range(3)], -1)
        m = rig.pelvis_rest.T @ rig.model_frame
        trans = loc @ m / rig.scale
    expressions = np.zeros((n, skeleton.NUM_EXPRESSIONS))
    for key, track in face_tracks(armature, action):
        face = track.strips[0].action
        face_curves = channelbag_curves(face, compat.strip_slot(track.strips[0]))
        for i in range(skeleton.NUM_EXPRESSIONS):
            fc = face_curves.get((shape_key_path(EXPRESSION_KEY.format(i)), 0))
            if fc is not None:
                expressions[:, i] = sample_fcurve(fc, frames)
        break  # one face is enough: every mesh got the same expressions
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=expressions.astype(np.float32),
                fps=float(fps or action.get("echomask_fps", 30.0)),
                meta={"take": name, "frame_start": start})


def target_armature(context, name: str | None = None):
    """The armature a tool works on: the named one, else the active object; RigError when not SMPL-X."""
    obj = bpy.data.objects.get(name) if name else context.active_object
    check_smplx_armature(obj)
    return obj


# ------------------------------------------------------------------------------------------ operators

def playing_take_reason(context) -> str | None:
    """Why a take operation (export, preview, simplify...) cannot run: None when the panel's rig plays a take."""
    settings = getattr(context.scene, "echomask", None)
    rig = settings.target if settings is not None else None
    if rig is None or rig.type != "ARMATURE" or playing_take(rig) is None:
        return "Pick a rig with a playing take in the EchoMask panel"
    return None


def _rig_from_context(context):
    settings = getattr(context.scene, "echomask", None)
    target = settings.target if settings is not None else None
    return target if target is not None else context.active_object


class _TakeOperator:
    take: bpy.props.StringProperty(name="Take", description="The take's Action name")
    armature: bpy.props.StringProperty(name="Rig", description="The SMPL-X armature (default: the panel's target)")

    def rig(self, context):
        obj = bpy.data.objects.get(self.armature) if self.armature else _rig_from_context(context)
        if obj is None or obj.type != "ARMATURE":
            raise RigError("No SMPL-X armature is selected.")
        return obj

    def run(self, context) -> str | None:
        """The operator's work; returns an optional message for the status bar."""
        raise NotImplementedError

    def execute(self, context):
        try:
            message = self.run(context)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        if message:
            self.report({"INFO"}, message)
        return {"FINISHED"}


class ECHOMASK_OT_take_play(_TakeOperator, bpy.types.Operator):
    """Play this take (its NLA track is unmuted, every other take's is muted)"""

    bl_idname = "echomask.take_play"
    bl_label = "Play Take"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    def run(self, context):
        set_playing_take(self.rig(context), self.take)


class ECHOMASK_OT_take_solo(_TakeOperator, bpy.types.Operator):
    """Compare: solo this take's track (only it plays, over everything else), or un-solo it"""

    bl_idname = "echomask.take_solo"
    bl_label = "Solo Take"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    def run(self, context):
        rig = self.rig(context)
        set_solo(rig, self.take, not take_info(rig, get_take_action(rig, self.take)).solo)


class ECHOMASK_OT_take_compare(_TakeOperator, bpy.types.Operator):
    """A/B: switch back to the take that played before this one"""

    bl_idname = "echomask.take_compare"
    bl_label = "A/B Previous Take"
    bl_options = {"REGISTER", "UNDO"}

    def run(self, context):
        return f"Playing '{swap_with_previous(self.rig(context))}'"


class ECHOMASK_OT_take_delete(_TakeOperator, bpy.types.Operator):
    """Delete this take (its NLA tracks and Actions); Ctrl+Z brings it back"""

    bl_idname = "echomask.take_delete"
    bl_label = "Delete Take"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    def run(self, context):
        delete_take(self.rig(context), self.take)


class ECHOMASK_UL_takes(bpy.types.UIList):
    """The rig's takes (NLA tracks holding EchoMask takes); the playing one is highlighted."""

    def filter_items(self, context, data, propname):
        tracks = getattr(data, propname)
        flags = [self.bitflag_filter_item if any(_is_take(s.action) for s in t.strips) else 0 for t in tracks]
        return flags, [len(tracks) - 1 - i for i in range(len(tracks))]  # newest first

    def draw_item(self, context, layout, data, track, icon, active_data, active_propname, index=0, flt_flag=0):
        action = next((s.action for s in track.strips if _is_take(s.action)), None)
        if action is None:
            return
        rig = data.id_data
        row = layout.row(align=True)
        row.label(text=action.name, icon="PLAY" if not track.mute else "ACTION")
        op = row.operator(ECHOMASK_OT_take_play.bl_idname, text="", icon="HIDE_OFF" if not track.mute else "HIDE_ON",
                          emboss=False)
        op.take, op.armature = action.name, rig.name
        op = row.operator(ECHOMASK_OT_take_solo.bl_idname, text="", icon="SOLO_ON" if track.is_solo else "SOLO_OFF",
                          emboss=False)
        op.take, op.armature = action.name, rig.name
        op = row.operator(ECHOMASK_OT_take_delete.bl_idname, text="", icon="X", emboss=False)
        op.take, op.armature = action.name, rig.name


CLASSES = (ECHOMASK_OT_take_play, ECHOMASK_OT_take_solo, ECHOMASK_OT_take_compare, ECHOMASK_OT_take_delete,
           ECHOMASK_UL_takes)
