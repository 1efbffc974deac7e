"""Bone Mapping: drive the animator's own character (3D View > Sidebar > EchoMask > Bone Mapping, with the
character's armature active). Same pattern as Face Mapping: an editable list "SMPL-X joint -> bone" (bones
the rig lacks in red), presets saved as JSON (Mixamo, Rigify, Unreal Engine 5, SMPL-X add-on; Auto matches
by name), Check, and Apply.

Apply stores the map on the armature (so Generate, Re-key, Simplify, Scale Intensity, A/B and the exports
work on it, echomask_blender/rigs/retarget.py) and, given a take (a .npz file or the take playing on an SMPL-X
rig), writes it as a new take: a new Action on its own NLA track, the rig's own animation stashed on a
muted track and never edited, each bone keyed in its own rotation mode; one undo step. Nothing changes
before Apply.
"""
from __future__ import annotations

import os

import bpy
from bpy_extras.io_utils import ExportHelper

from ...core.errors import EchoMaskError
from ...core.retarget.bone_map import (PRESET_DIR, BoneMap, BoneRow, find_bone, list_presets, load_bone_map,
                                      save_bone_map)
from ...core.retarget.solve import RetargetOptions
from ...core.motion.skeleton import JOINT_NAMES
from ...core.motion.take import Take, load_take, resample_take
from . import retarget

AUTO = "__auto__"


# ------------------------------------------------------------------------------------------ bpy-side logic

def apply_bone_map(context, obj, bone_map: BoneMap, options: RetargetOptions, take: Take | None = None, *,
                   name: str = "EchoMask take", frame_start: int = 1):
    """Check everything, then store the map on `obj` and (given a take) write it as a new take.

    Returns (TakeInfo or None, notes). Raises EchoMaskError naming the bones involved; the scene is then
    unchanged.
    """
    from ..takes.nla import write_new_take

    plan, resolved = retarget.plan_for(obj, bone_map, options)   # every check before the first change
    notes = retarget.rig_notes(obj, plan)
    if take is not None:
        take.validate("take")
    had = (obj.get(retarget.MAP_PROP), obj.get(retarget.OPTIONS_PROP))
    retarget.store_map(obj, bone_map, options)
    if take is None:
        return None, notes
    try:
        info = write_new_take(obj, take, name=name, frame_start=frame_start,
                              meta={"source": "retarget", "bone_map": bone_map.name})
    except Exception:
        for key, value in zip((retarget.MAP_PROP, retarget.OPTIONS_PROP), had):
            if value is None:
                obj.pop(key, None)
            else:
                obj[key] = value
        raise
    return info, notes


def settings_from_map(settings, bone_map: BoneMap) -> None:
    settings.rows.clear()
    by_joint = {r.joint: r for r in bone_map.rows}
    for joint in JOINT_NAMES:
        row = settings.rows.add()
        src = by_joint.get(joint)
        row.joint = joint
        row.bone = src.bone if src else ""
        row.enabled = src.enabled if src else True
    settings.map_name = bone_map.name
    settings.rig_settings = "\n".join(f"{s.bone}|{s.prop}|{s.value:g}" for s in bone_map.settings)
    settings.active_index = 0


def _map_with_rig_settings(settings) -> BoneMap:
    from ...core.retarget.bone_map import RigSetting

    bone_map = BoneMap(name=settings.map_name or "Custom", rows=[BoneRow(r.joint, r.bone, r.enabled)
                                                                 for r in settings.rows])
    for line in settings.rig_settings.splitlines():
        parts = line.split("|")
        if len(parts) == 3:
            try:
                bone_map.settings.append(RigSetting(parts[0], parts[1], float(parts[2])))
            except ValueError:
                continue
    return bone_map


def options_from_settings(settings) -> RetargetOptions:
    return RetargetOptions(root_motion=settings.root_motion, foot_correction=settings.foot_correction)


def _scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def read_source_take(context, settings):
    """(take at the scene rate, first frame, label) or (None, None, None) when no source is set."""
    if settings.source == "NONE":
        return None, None, None
    if settings.source == "FILE":
        if not settings.take_file:
            raise EchoMaskError("Choose a take file (.npz) to retarget, or set Take to None to only apply the map.")
        path = bpy.path.abspath(settings.take_file)
        take, start, label = load_take(path), int(settings.frame_start), os.path.splitext(os.path.basename(path))[0]
    else:
        from ..takes.nla import playing_take, read_take

        rig = settings.source_rig
        if rig is None:
            raise EchoMaskError("Choose the SMPL-X rig whose playing take is retargeted.")
        info = playing_take(rig)
        if info is None:
            raise EchoMaskError(f"'{rig.name}' plays no EchoMask take: generate or import one first.")
        take, start, label = read_take(rig, info.name), int(info.frame_start), info.name
    fps = _scene_fps(context.scene)
    if abs(take.fps - fps) > 1e-6:
        take = resample_take(take, fps)
    return take, start, label


# ------------------------------------------------------------------------------------------ properties

def _preset_items(self, context):
    items = [(AUTO, "Auto (by name)", "Match the rig's bones by their names")]
    items += [(os.path.basename(path), label, f"Load the '{label}' preset") for path, label in list_presets(PRESET_DIR)]
    _preset_items.cache = items
    return items


class EchoMaskBoneRow(bpy.types.PropertyGroup):
    joint: bpy.props.StringProperty(name="Joint", description="The SMPL-X joint")
    bone: bpy.props.StringProperty(name="Bone", description="The rig's bone that follows this joint; empty: skipped")
    enabled: bpy.props.BoolProperty(name="Enabled", default=True)


class EchoMaskBoneMappingSettings(bpy.types.PropertyGroup):
    rows: bpy.props.CollectionProperty(type=EchoMaskBoneRow)
    active_index: bpy.props.IntProperty(default=0)
    map_name: bpy.props.StringProperty(name="Map", default="")
    rig_settings: bpy.props.StringProperty(
        name="Rig Settings", description="Custom properties keyed with every take, one 'bone|property|value' a "
                                         "line (e.g. a Rigify limb's IK_FK = 1: FK)")
    preset: bpy.props.EnumProperty(name="Preset", items=_preset_items)
    root_motion: bpy.props.EnumProperty(
        name="Root Motion", default="TRAVEL",
        items=(("TRAVEL", "As Generated", "The character travels as the take does"),
               ("IN_PLACE", "In Place", "No horizontal travel (height and turns kept)")))
    foot_correction: bpy.props.BoolProperty(
        name="Keep Feet on Floor", default=True,
        description="Shift the root so the lowest foot keeps the source's height above the floor")
    source: bpy.props.EnumProperty(
        name="Take", default="FILE",
        items=(("FILE", "Take File", "A BEAT2/SMPL-X take (.npz)"),
               ("RIG", "SMPL-X Rig", "The take playing on an SMPL-X rig"),
               ("NONE", "None", "Only apply the map (then Generate on this rig)")))
    take_file: bpy.props.StringProperty(name="Take", subtype="FILE_PATH")
    source_rig: bpy.props.PointerProperty(name="Rig", type=bpy.types.Object,
                                          poll=lambda self, obj: obj.type == "ARMATURE")
    frame_start: bpy.props.IntProperty(name="Start Frame", default=1)


def _settings(context):
    obj = context.active_object
    return obj.echomask_bone_map if obj is not None and obj.type == "ARMATURE" else None


class _NeedsArmature:
    @classmethod
    def poll(cls, context):
        if _settings(context) is None:
            cls.poll_message_set("Select the character's armature")
            return False
        return True


class ECHOMASK_OT_bone_map_load_preset(_NeedsArmature, bpy.types.Operator):
    """Fill the list from a preset (or match the rig's bones by name with Auto)"""

    bl_idname = "echomask.bone_map_load_preset"
    bl_label = "Load Bone Map"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context):
        obj = context.active_object
        settings = _settings(context)
        try:
            if self.filepath:
                bone_map = load_bone_map(self.filepath)
            elif settings.preset == AUTO or not settings.preset:
                bone_map = retarget.auto_map(obj)
            else:
                bone_map = load_bone_map(os.path.join(PRESET_DIR, settings.preset))
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        settings_from_map(settings, bone_map)
        names = obj.data.bones.keys()
        found = sum(1 for r in bone_map.active() if find_bone(r.bone, names))
        self.report({"INFO"}, f"Loaded '{bone_map.name}': {found} of {len(bone_map.active())} bones found on "
                              f"'{obj.name}'.")
        return {"FINISHED"}


class ECHOMASK_OT_bone_map_save_preset(_NeedsArmature, bpy.types.Operator, ExportHelper):
    """Save this list as a bone-map preset (.json) to reuse on other characters"""

    bl_idname = "echomask.bone_map_save_preset"
    bl_label = "Save Bone Map"
    filename_ext = ".json"
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context):
        bone_map = _map_with_rig_settings(_settings(context))
        bone_map.name = os.path.splitext(os.path.basename(self.filepath))[0]
        try:
            bone_map.check()
            save_bone_map(bone_map, self.filepath)
        except (EchoMaskError, OSError) as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Saved {self.filepath}")
        return {"FINISHED"}


def check_report(context) -> tuple[str, str]:
    """('INFO' | 'WARNING', message) for the list against the active rig; EchoMaskError when unusable."""
    obj = context.active_object
    settings = _settings(context)
    plan, resolved = retarget.plan_for(obj, _map_with_rig_settings(settings), options_from_settings(settings))
    notes = retarget.rig_notes(obj, plan)
    text = f"{len(resolved.bones)} joints mapped onto '{obj.name}'"
    if notes:
        text += ". " + " ".join(notes)
    return ("WARNING" if plan.warnings else "INFO"), text


class ECHOMASK_OT_bone_map_check(_NeedsArmature, bpy.types.Operator):
    """Check the list against this rig: missing bones, duplicates, hierarchy, rest pose"""

    bl_idname = "echomask.bone_map_check"
    bl_label = "Check Bone Map"

    def execute(self, context):
        try:
            level, text = check_report(context)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({level}, text)
        return {"FINISHED"}


class ECHOMASK_OT_bone_map_apply(_NeedsArmature, bpy.types.Operator):
    """Use this bone map on the rig (Generate, Re-key and the exports then work on it) and retarget the
    chosen take onto it as a new take (a new Action on its own NLA track)"""

    bl_idname = "echomask.bone_map_apply"
    bl_label = "Apply Bone Map"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        obj = context.active_object
        settings = _settings(context)
        try:
            bone_map = _map_with_rig_settings(settings)
            options = options_from_settings(settings)
            retarget.plan_for(obj, bone_map, options)       # cheap checks first: nothing read or written yet
            take, start, label = read_source_take(context, settings)
            info, notes = apply_bone_map(context, obj, bone_map, options, take, name=label or "EchoMask take",
                                         frame_start=start or 1)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        head = f"Retargeted '{info.name}' onto '{obj.name}'" if info else f"Bone map applied to '{obj.name}'"
        self.report({"WARNING"} if any("far from" in n or "does not point" in n for n in notes) else {"INFO"},
                    head + (". " + " ".join(notes) if notes else "."))
        return {"FINISHED"}


class ECHOMASK_OT_bone_map_clear(_NeedsArmature, bpy.types.Operator):
    """Stop using a bone map on this rig (its takes stay; new ones need a map again)"""

    bl_idname = "echomask.bone_map_clear"
    bl_label = "Remove Bone Map"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        obj = context.active_object
        for key in (retarget.MAP_PROP, retarget.OPTIONS_PROP):
            obj.pop(key, None)
        return {"FINISHED"}


class ECHOMASK_UL_bone_rows(bpy.types.UIList):
    """Rows 'SMPL-X joint -> bone'; a bone the rig does not have shows in red."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0, flt_flag=0):
        armature = data.id_data
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        split = row.split(factor=0.42, align=True)
        split.label(text=item.joint)
        cell = split.row(align=True)
        cell.alert = bool(item.bone) and find_bone(item.bone, armature.data.bones.keys()) is None
        cell.prop_search(item, "bone", armature.data, "bones", text="")

    def filter_items(self, context, data, propname):
        rows = getattr(data, propname)
        flags = [self.bitflag_filter_item] * len(rows)
        if self.filter_name:
            needle = self.filter_name.lower()
            flags = [self.bitflag_filter_item if needle in r.joint.lower() or needle in r.bone.lower() else 0
                     for r in rows]
        return flags, []


class VIEW3D_PT_echomask_bone_mapping(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EchoMask"
    bl_label = "Bone Mapping"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = _settings(context)
        if settings is None:
            layout.label(text="Select the character's armature", icon="INFO")
            return
        obj = context.active_object
        if retarget.is_mapped(obj):
            layout.label(text=f"Mapped: {retarget.stored_map(obj).name}", icon="CHECKMARK")
        row = layout.row(align=True)
        row.prop(settings, "preset", text="")
        row.operator(ECHOMASK_OT_bone_map_load_preset.bl_idname, text="Load", icon="IMPORT")
        row.operator(ECHOMASK_OT_bone_map_save_preset.bl_idname, text="", icon="EXPORT")
        layout.template_list("ECHOMASK_UL_bone_rows", "", settings, "rows", settings, "active_index", rows=8)
        layout.prop(settings, "root_motion")
        layout.prop(settings, "foot_correction")
        box = layout.box()
        box.prop(settings, "source", expand=True)
        if settings.source == "FILE":
            box.prop(settings, "take_file")
            box.prop(settings, "frame_start")
        elif settings.source == "RIG":
            box.prop(settings, "source_rig")
        row = layout.row(align=True)
        row.operator(ECHOMASK_OT_bone_map_check.bl_idname, icon="VIEWZOOM")
        row.operator(ECHOMASK_OT_bone_map_apply.bl_idname, icon="ARMATURE_DATA")
        if retarget.is_mapped(obj):
            layout.operator(ECHOMASK_OT_bone_map_clear.bl_idname, icon="X")


CLASSES = (EchoMaskBoneRow, EchoMaskBoneMappingSettings, ECHOMASK_OT_bone_map_load_preset,
           ECHOMASK_OT_bone_map_save_preset, ECHOMASK_OT_bone_map_check, ECHOMASK_OT_bone_map_apply,
           ECHOMASK_OT_bone_map_clear, ECHOMASK_UL_bone_rows, VIEW3D_PT_echomask_bone_mapping)


def register_properties():
    bpy.types.Object.echomask_bone_map = bpy.props.PointerProperty(type=EchoMaskBoneMappingSettings)


def unregister_properties():
    if hasattr(bpy.types.Object, "echomask_bone_map"):
        del bpy.types.Object.echomask_bone_map
