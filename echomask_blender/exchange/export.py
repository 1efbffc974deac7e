"""One-click export of the playing take: FBX for Unity or Unreal, BVH, or a BEAT2/SMPL-X .npz.

FBX goes through the foundation's `scene_io.export_take_fbx` (no leaf bones, only this take, every key; the
animation is named after the take and starts at time 0, so the take's first frame is the speech's start and
Blender's importer at its defaults puts it on frame 1) with a preset's overrides:
- Unity: Y up / -Z forward, metres with the unit scale in the FBX header ("Apply Scalings: FBX All"), so
  Unity imports at scale 1 with no 100x on the root.
- Unreal: the same axes (Unreal converts FBX axes on import), centimetres baked into the transforms and an
  FBX unit scale of 1 ("Apply Scalings: All Local"), Unreal's native unit, so no 0.01 scale appears.
Both presets were checked by re-importing into Blender (same joint positions); they were not tried in Unity
or Unreal themselves.
BVH uses Blender's BVH exporter over the take's frames (it samples the evaluated pose: the playing take),
rewritten in Y-up axes (core.motion.bvh), which BVH readers expect: Blender's own importer at its defaults brings
the character in standing, facing as in Blender.
NPZ reads the take back (the animator's edits included) and writes BEAT2's schema, at 30 fps by default.
"""
from __future__ import annotations

import contextlib
import os

import bpy

from ...core.motion import bvh
from ...core.errors import EchoMaskError
from ...core.motion.take import resample_take, save_take
from . import scene_io
from .. import compat
from ..rigs.rig import check_smplx_armature
from ..ui.poll import DisabledReasonPoll
from ..takes.nla import face_tracks, get_take_action, playing_take, playing_take_reason, read_take, take_info

FBX_PRESETS = {
    "UNITY": dict(axis_forward="-Z", axis_up="Y", apply_scale_options="FBX_SCALE_ALL", apply_unit_scale=True,
                  global_scale=1.0),
    "UNREAL": dict(axis_forward="-Z", axis_up="Y", apply_scale_options="FBX_SCALE_NONE", apply_unit_scale=True,
                   global_scale=1.0),
}
FORMATS = (("FBX_UNITY", "FBX (Unity)", ""), ("FBX_UNREAL", "FBX (Unreal)", ""), ("BVH", "BVH", ""),
           ("NPZ", "SMPL-X .npz (BEAT2)", ""))
EXTENSIONS = {"FBX_UNITY": ".fbx", "FBX_UNREAL": ".fbx", "BVH": ".bvh", "NPZ": ".npz"}


def _output_path(filepath: str, ext: str) -> str:
    path = os.path.abspath(os.path.expanduser(bpy.path.abspath(filepath)))
    if not path.lower().endswith(ext):
        path += ext
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise EchoMaskError(f"Cannot write {path}: the folder {folder} does not exist.")
    return path


def _take_for_export(armature, take: str | None):
    check_smplx_armature(armature)
    info = playing_take(armature) if not take else take_info(armature, get_take_action(armature, take))
    if info is None:
        raise EchoMaskError(f"'{armature.name}' has no playing take to export: generate or pick one first.")
    return info


@contextlib.contextmanager
def take_as_active_action(armature, name: str):
    """Temporarily make the take the rig's (and faces') active action with its slot, as FBX export needs."""
    action = get_take_action(armature, name)
    owners = [(armature, action, _strip_slot_of(armature.animation_data, action))]
    for key, track in face_tracks(armature, action):
        owners.append((key, track.strips[0].action, compat.strip_slot(track.strips[0])))
    saved = []
    try:
        for owner, act, slot in owners:
            anim = owner.animation_data
            saved.append((owner, anim.action, compat.assigned_slot(owner), anim.use_nla))
            anim.action = act
            if slot is not None:
                anim.action_slot = slot
        yield action
    finally:
        for owner, act, slot, use_nla in reversed(saved):
            anim = owner.animation_data
            anim.action = act
            if slot is not None and act is not None:
                anim.action_slot = slot
            anim.use_nla = use_nla


def _strip_slot_of(anim, action):
    for track in anim.nla_tracks:
        for strip in track.strips:
            if strip.action == action:
                return compat.strip_slot(strip)
    return None


def export_fbx(context, armature, filepath: str, preset: str = "UNITY", take: str | None = None) -> str:
    if preset not in FBX_PRESETS:
        raise EchoMaskError(f"Unknown FBX preset '{preset}' (use {', '.join(FBX_PRESETS)}).")
    info = _take_for_export(armature, take)
    path = _output_path(filepath, ".fbx")
    with take_as_active_action(armature, info.name):
        return scene_io.export_take_fbx(context, armature, path, overrides=FBX_PRESETS[preset])


def export_bvh(context, armature, filepath: str, take: str | None = None) -> str:
    info = _take_for_export(armature, take)
    path = _output_path(filepath, ".bvh")
    if not hasattr(bpy.ops.export_anim, "bvh"):
        import addon_utils

        addon_utils.enable("io_anim_bvh", default_set=False)
    scene = context.scene
    view_layer = context.view_layer
    saved = (view_layer.objects.active, [o for o in view_layer.objects if o.select_get()], scene.frame_current)
    try:
        for obj in saved[1]:
            obj.select_set(False)
        view_layer.objects.active = armature
        armature.select_set(True)
        result = bpy.ops.export_anim.bvh(filepath=path, check_existing=False, frame_start=info.frame_start,
                                         frame_end=info.frame_end, rotate_mode="NATIVE", root_transform_only=False,
                                         global_scale=1.0)
    finally:
        armature.select_set(False)
        for obj in saved[1]:
            obj.select_set(True)
        view_layer.objects.active = saved[0]
        scene.frame_set(saved[2])
    if "FINISHED" not in result:
        raise EchoMaskError(f"BVH export to {path} did not finish.")
    with open(path, encoding="utf-8") as f:   # Blender writes its own Z-up axes; BVH readers expect Y up
        text = bvh.z_up_to_y_up(f.read())
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return path


def export_npz(context, armature, filepath: str, take: str | None = None, fps: float | None = 30.0) -> str:
    """The take as a BEAT2/SMPL-X .npz (resampled to `fps`; None keeps the scene's rate)."""
    info = _take_for_export(armature, take)
    path = _output_path(filepath, ".npz")
    data = read_take(armature, info.name)
    if fps and abs(data.fps - fps) > 1e-6:
        data = resample_take(data, float(fps))
    save_take(data, path)
    return path


def export_take(context, armature, fmt: str, filepath: str, take: str | None = None) -> str:
    if fmt == "FBX_UNITY":
        return export_fbx(context, armature, filepath, "UNITY", take)
    if fmt == "FBX_UNREAL":
        return export_fbx(context, armature, filepath, "UNREAL", take)
    if fmt == "BVH":
        return export_bvh(context, armature, filepath, take)
    if fmt == "NPZ":
        return export_npz(context, armature, filepath, take)
    raise EchoMaskError(f"Unknown export format '{fmt}'.")


class ECHOMASK_OT_export(DisabledReasonPoll, bpy.types.Operator):
    """Export the playing take of the EchoMask rig"""

    bl_idname = "echomask.export"
    bl_label = "Export Take"
    bl_options = {"REGISTER"}

    format: bpy.props.EnumProperty(name="Format", items=FORMATS, default="FBX_UNITY")
    filepath: bpy.props.StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})
    check_existing: bpy.props.BoolProperty(default=True, options={"HIDDEN"})

    @classmethod
    def disabled_reason(cls, context):
        return playing_take_reason(context)

    def invoke(self, context, event):
        take = playing_take(context.scene.echomask.target)
        stem = bpy.path.clean_name(take.name) if take else "take"
        self.filepath = os.path.join(os.path.dirname(bpy.data.filepath) or os.path.expanduser("~"),
                                     stem + EXTENSIONS[self.format])
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            path = export_take(context, context.scene.echomask.target, self.format, self.filepath)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {path}")
        return {"FINISHED"}


CLASSES = (ECHOMASK_OT_export,)
