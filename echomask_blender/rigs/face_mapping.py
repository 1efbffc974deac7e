"""Face mapping: drive any character's own shape keys from EchoMask's face output (as Faceit's target-shapes
list): 3D View > Sidebar > EchoMask > Face Mapping, with the character's mesh active.

Each row of the list is "shape key <- formula" (core/face/mapping.py explains formulas and channels).
Presets (ARKit 52, Rhubarb / Preston Blair mouths, SMPL-X expressions) load from `presets/`. Applying
writes every mapped shape key in bulk (keyframe_points.add + foreach_set) as a NEW Action on the mesh's
shape-key datablock; an action it had is stashed on a muted NLA track, never edited.
"""
from __future__ import annotations

import dataclasses
import os

import bpy
import numpy as np
from bpy_extras.io_utils import ExportHelper

from ...core.errors import EchoMaskError
from ...core.face.mapping import (FaceChannels, FaceMapping, FaceMappingError, FaceTarget, list_presets,
                                 load_preset, match_shape_keys, no_match_message, save_preset)
from ...core.motion.take import Take, load_take, resample_take
from .. import compat
from ..rna_paths import shape_key_path

PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "presets")  # echomask_blender/presets
SHAPE_GROUP = "EchoMask face"


# ------------------------------------------------------------------------------------------ bpy-side logic

@dataclasses.dataclass
class FaceMappingResult:
    action: str
    written: dict[str, str]      # target -> shape key it keyed
    missing: list[str]           # targets with no matching shape key (not keyed)
    frame_start: int
    frame_end: int
    stashed: str | None
    notes: list[str]


def shape_key_names(obj) -> list[str]:
    if obj is None or obj.type != "MESH" or obj.data.shape_keys is None:
        return []
    return [block.name for block in obj.data.shape_keys.key_blocks]


def check_character(obj, mapping: FaceMapping) -> tuple[dict[str, str], list[str]]:
    """({target: shape key}, missing targets); raises FaceMappingError naming what is expected when the
    object has none of the mapping's shape keys."""
    if obj is None or obj.type != "MESH":
        raise FaceMappingError("Select the character's face mesh (a mesh object with shape keys).")
    names = shape_key_names(obj)
    if not mapping.active():
        raise FaceMappingError(f"The face mapping '{mapping.name}' has no enabled rows with a formula.")
    found, missing = match_shape_keys(mapping, names)
    if not found:
        raise FaceMappingError(no_match_message(mapping, obj.name, names))
    return found, missing


def write_face_mapping(obj, channels: FaceChannels, mapping: FaceMapping, *, name: str = "EchoMask face",
                       frame_start: int = 1) -> FaceMappingResult:
    """Key the mapped shape keys of `obj` from `channels` (take frame k -> scene frame frame_start + k).

    Everything is computed and checked before the scene changes: a bad formula or a character without the
    expected shape keys raises FaceMappingError and leaves the file as it was.
    """
    found, missing = check_character(obj, mapping)
    values = mapping.evaluate(channels, targets=list(found))
    frames = frame_start + np.arange(channels.num_frames, dtype=np.float64)
    key = obj.data.shape_keys
    stashed = compat.stash_active_action(key)
    action, bag = compat.new_action_for(key, name)
    lo, hi = mapping.value_range
    for target, key_name in found.items():
        block = key.key_blocks[key_name]
        block.slider_min = min(block.slider_min, lo)  # widen only, never narrow
        block.slider_max = max(block.slider_max, hi)
        path = shape_key_path(key_name)
        compat.write_fcurve(bag, path, 0, frames, values[target], group=SHAPE_GROUP)
    return FaceMappingResult(action=action.name, written=dict(found), missing=missing,
                             frame_start=int(frames[0]), frame_end=int(frames[-1]), stashed=stashed,
                             notes=list(channels.notes))


def mapping_from_settings(settings) -> FaceMapping:
    rows = [FaceTarget(r.target, r.formula, r.enabled) for r in settings.targets]
    return FaceMapping(name=settings.mapping_name or "Custom", targets=rows,
                       value_range=(settings.value_min, settings.value_max))


def settings_from_mapping(settings, mapping: FaceMapping) -> None:
    settings.targets.clear()
    for row in mapping.targets:
        item = settings.targets.add()
        item.target, item.formula, item.enabled = row.target, row.formula, row.enabled
    settings.mapping_name = mapping.name
    settings.value_min, settings.value_max = mapping.value_range
    settings.active_index = 0


# ------------------------------------------------------------------------------------------ properties

def _preset_items(self, context):
    items = [(os.path.basename(path), label, f"Load the '{label}' preset")
             for path, label in list_presets(PRESET_DIR)]
    _preset_items.cache = items  # Blender needs the strings kept alive while the menu shows
    return items or [("", "No presets found", "")]


class EchoMaskFaceTarget(bpy.types.PropertyGroup):
    target: bpy.props.StringProperty(name="Shape Key", description="The character's shape key this row drives")
    formula: bpy.props.StringProperty(
        name="Formula",
        description="What drives it: channels (arkit.jawOpen, viseme.A, jaw_open, exp003, aperture, shape.A) "
                    "with weights, e.g. '0.8*arkit.jawOpen + 0.1'. Empty: not driven")
    enabled: bpy.props.BoolProperty(name="Enabled", default=True)


class EchoMaskFaceMappingSettings(bpy.types.PropertyGroup):
    targets: bpy.props.CollectionProperty(type=EchoMaskFaceTarget)
    active_index: bpy.props.IntProperty(default=0)
    mapping_name: bpy.props.StringProperty(name="Mapping", default="")
    preset: bpy.props.EnumProperty(name="Preset", items=_preset_items)
    value_min: bpy.props.FloatProperty(name="Min", default=0.0, description="Values are clamped to Min..Max")
    value_max: bpy.props.FloatProperty(name="Max", default=1.0)
    source: bpy.props.EnumProperty(
        name="Face From", default="RIG",
        items=(("RIG", "SMPL-X Rig", "The take playing on an SMPL-X rig (generated or imported)"),
               ("FILE", "Take File", "A BEAT2/SMPL-X take file (.npz)")))
    rig: bpy.props.PointerProperty(name="Rig", type=bpy.types.Object, poll=lambda self, obj: obj.type == "ARMATURE")
    take_file: bpy.props.StringProperty(name="Take", subtype="FILE_PATH")
    phones: bpy.props.EnumProperty(
        name="Phones", default="TEXTGRID",
        items=(("TEXTGRID", "Alignment", "A phone alignment (Praat TextGrid, e.g. from the Montreal Forced "
                                         "Aligner): the most accurate mouth shapes"),
               ("AUDIO", "Recognise", "Recognise the phones in a speech file (needs the 'pocketsphinx' module)"),
               ("NONE", "None", "Mouth shapes from the face alone (much less accurate)")))
    phones_file: bpy.props.StringProperty(name="File", subtype="FILE_PATH",
                                          description="TextGrid (Alignment) or speech file (Recognise)")
    frame_start: bpy.props.IntProperty(name="Start Frame", default=1, description="Scene frame of the take's first frame "
                                       "(take files; a rig's take keeps its own start)")


# ------------------------------------------------------------------------------------------ reading the inputs

def _scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def read_face_take(context, settings) -> tuple[Take, int]:
    """The take whose face is mapped, at the scene's frame rate, and the scene frame of its first frame."""
    if settings.source == "FILE":
        if not settings.take_file:
            raise EchoMaskError("Choose a take file (.npz) to take the face from.")
        take, start = load_take(bpy.path.abspath(settings.take_file)), int(settings.frame_start)
    else:
        rig = settings.rig
        if rig is None:
            raise EchoMaskError("Choose the SMPL-X rig whose take drives the face (or use a take file).")
        try:
            from ..takes.nla import playing_take, read_take
        except ImportError:
            raise EchoMaskError("This EchoMask build cannot read takes from a rig; use a take file.") from None
        info = playing_take(rig)
        if info is None:
            raise EchoMaskError(f"'{rig.name}' plays no EchoMask take: generate or import one first.")
        take, start = read_take(rig, info.name), int(info.frame_start)
    fps = _scene_fps(context.scene)
    if abs(take.fps - fps) > 1e-6:
        take = resample_take(take, fps)
    return take, start


def read_phones(settings):
    """[(start_s, end_s, phone)] or None, from the chosen source."""
    if settings.phones == "NONE":
        return None
    path = bpy.path.abspath(settings.phones_file) if settings.phones_file else ""
    if not path:
        raise EchoMaskError("Choose the phone alignment (TextGrid) or speech file, or set Phones to None.")
    if settings.phones == "TEXTGRID":
        from ...core.speech.textgrid import read_textgrid_phones

        return read_textgrid_phones(path)
    try:
        from ...core.speech.audio import load_speech
        from ...core.speech.phones import recognise_phones

        return recognise_phones(load_speech(path))
    except ImportError as exc:
        raise EchoMaskError(f"Recognising phones inside Blender needs a module Blender's Python lacks ({exc.name}); "
                            f"give a TextGrid alignment instead, or set Phones to None.") from None


# ------------------------------------------------------------------------------------------ operators

def _settings(context):
    obj = context.active_object
    return obj.echomask_face_mapping if obj is not None and obj.type == "MESH" else None


class _NeedsMesh:
    @classmethod
    def poll(cls, context):
        if _settings(context) is None:
            cls.poll_message_set("Select the character's face mesh")
            return False
        return True


class ECHOMASK_OT_face_mapping_load_preset(_NeedsMesh, bpy.types.Operator):
    """Replace the list with a preset's rows"""

    bl_idname = "echomask.face_mapping_load_preset"
    bl_label = "Load Preset"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context):
        settings = _settings(context)
        path = self.filepath or (os.path.join(PRESET_DIR, settings.preset) if settings.preset else "")
        if not path:
            self.report({"ERROR"}, f"No presets found in {PRESET_DIR}.")
            return {"CANCELLED"}
        try:
            mapping = load_preset(path)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        settings_from_mapping(settings, mapping)
        found, missing = match_shape_keys(mapping, shape_key_names(context.active_object))
        self.report({"INFO"}, f"Loaded '{mapping.name}': {len(found)} of {len(mapping.active())} driven shape "
                              f"keys found on '{context.active_object.name}'.")
        return {"FINISHED"}


class ECHOMASK_OT_face_mapping_save_preset(_NeedsMesh, bpy.types.Operator, ExportHelper):
    """Save this list as a preset file (.json) to reuse on other characters"""

    bl_idname = "echomask.face_mapping_save_preset"
    bl_label = "Save Mapping Preset"
    filename_ext = ".json"
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context):
        settings = _settings(context)
        mapping = mapping_from_settings(settings)
        mapping.name = os.path.splitext(os.path.basename(self.filepath))[0]
        try:
            mapping.check()
            save_preset(mapping, self.filepath)
        except (EchoMaskError, OSError) as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Saved {self.filepath}")
        return {"FINISHED"}


class ECHOMASK_OT_face_mapping_add(_NeedsMesh, bpy.types.Operator):
    """Add a row; with 'From Shape Keys', one row for each shape key not yet in the list"""

    bl_idname = "echomask.face_mapping_add"
    bl_label = "Add Row"
    bl_options = {"REGISTER", "UNDO"}

    from_shape_keys: bpy.props.BoolProperty(default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        settings = _settings(context)
        if self.from_shape_keys:
            listed = {r.target for r in settings.targets}
            names = [n for n in shape_key_names(context.active_object)[1:] if n not in listed]  # [0]: Basis
            for name in names:
                settings.targets.add().target = name
            self.report({"INFO"}, f"Added {len(names)} rows: fill in their formulas.")
        else:
            settings.targets.add()
        settings.active_index = len(settings.targets) - 1
        return {"FINISHED"}


class ECHOMASK_OT_face_mapping_remove(_NeedsMesh, bpy.types.Operator):
    """Remove the selected row"""

    bl_idname = "echomask.face_mapping_remove"
    bl_label = "Remove Row"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        settings = _settings(context)
        if 0 <= settings.active_index < len(settings.targets):
            settings.targets.remove(settings.active_index)
            settings.active_index = max(0, min(settings.active_index, len(settings.targets) - 1))
        return {"FINISHED"}


class ECHOMASK_OT_face_mapping_check(_NeedsMesh, bpy.types.Operator):
    """Check the list against this character's shape keys and the formulas"""

    bl_idname = "echomask.face_mapping_check"
    bl_label = "Check Mapping"

    def execute(self, context):
        mapping = mapping_from_settings(_settings(context))
        try:
            mapping.check()
            found, missing = check_character(context.active_object, mapping)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        tail = f"; not found: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}" if missing else ""
        self.report({"WARNING"} if missing else {"INFO"},
                    f"{len(found)} of {len(found) + len(missing)} driven shape keys found{tail}.")
        return {"FINISHED"}


class ECHOMASK_OT_face_mapping_apply(_NeedsMesh, bpy.types.Operator):
    """Key this character's shape keys from the face of a take, as a new action on its shape keys"""

    bl_idname = "echomask.face_mapping_apply"
    bl_label = "Apply Face Mapping"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        obj = context.active_object
        settings = _settings(context)
        try:
            mapping = mapping_from_settings(settings)
            check_character(obj, mapping)              # cheap checks first: nothing read or written yet
            take, start = read_face_take(context, settings)
            channels = FaceChannels.from_take(take, phones=read_phones(settings))
            result = write_face_mapping(obj, channels, mapping, name=f"EchoMask face · {obj.name}",
                                        frame_start=start)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        msg = (f"Keyed {len(result.written)} shape keys on '{obj.name}', frames {result.frame_start}–"
               f"{result.frame_end} (action '{result.action}').")
        if result.missing:
            msg += f" Not on this character: {', '.join(result.missing[:8])}{' ...' if len(result.missing) > 8 else ''}."
        for note in result.notes:
            msg += " " + note
        self.report({"WARNING"} if result.missing or result.notes else {"INFO"}, msg)
        return {"FINISHED"}


# ------------------------------------------------------------------------------------------ UI

class ECHOMASK_UL_face_targets(bpy.types.UIList):
    """Rows: enabled, target shape key (red when the character lacks it), formula."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        obj = data.id_data
        key = obj.data.shape_keys if getattr(obj, "type", "") == "MESH" else None
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        split = row.split(factor=0.45, align=True)
        if key is not None:
            split.prop_search(item, "target", key, "key_blocks", text="")
        else:
            split.prop(item, "target", text="")
        split.prop(item, "formula", text="")

    def filter_items(self, context, data, propname):
        rows = getattr(data, propname)
        flags = [self.bitflag_filter_item] * len(rows)
        if self.filter_name:
            needle = self.filter_name.lower()
            flags = [self.bitflag_filter_item if needle in r.target.lower() or needle in r.formula.lower() else 0
                     for r in rows]
        return flags, []


class VIEW3D_PT_echomask_face_mapping(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EchoMask"
    bl_label = "Face Mapping"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = _settings(context)
        if settings is None:
            layout.label(text="Select the character's face mesh", icon="INFO")
            return
        row = layout.row(align=True)
        row.prop(settings, "preset", text="")
        row.operator(ECHOMASK_OT_face_mapping_load_preset.bl_idname, text="Load", icon="IMPORT")
        row.operator(ECHOMASK_OT_face_mapping_save_preset.bl_idname, text="", icon="EXPORT")
        if context.active_object.data.shape_keys is None:
            layout.label(text="This mesh has no shape keys", icon="ERROR")
        row = layout.row()
        row.template_list("ECHOMASK_UL_face_targets", "", settings, "targets", settings, "active_index", rows=6)
        col = row.column(align=True)
        col.operator(ECHOMASK_OT_face_mapping_add.bl_idname, text="", icon="ADD")
        col.operator(ECHOMASK_OT_face_mapping_remove.bl_idname, text="", icon="REMOVE")
        col.separator()
        op = col.operator(ECHOMASK_OT_face_mapping_add.bl_idname, text="", icon="SHAPEKEY_DATA")
        op.from_shape_keys = True
        row = layout.row(align=True)
        row.prop(settings, "value_min")
        row.prop(settings, "value_max")

        box = layout.box()
        box.prop(settings, "source", expand=True)
        if settings.source == "RIG":
            box.prop(settings, "rig")
        else:
            box.prop(settings, "take_file")
            box.prop(settings, "frame_start")
        box.prop(settings, "phones")
        if settings.phones != "NONE":
            box.prop(settings, "phones_file")
        row = layout.row(align=True)
        row.operator(ECHOMASK_OT_face_mapping_check.bl_idname, icon="VIEWZOOM")
        row.operator(ECHOMASK_OT_face_mapping_apply.bl_idname, icon="SHAPEKEY_DATA")


CLASSES = (EchoMaskFaceTarget, EchoMaskFaceMappingSettings, ECHOMASK_OT_face_mapping_load_preset,
           ECHOMASK_OT_face_mapping_save_preset, ECHOMASK_OT_face_mapping_add, ECHOMASK_OT_face_mapping_remove,
           ECHOMASK_OT_face_mapping_check, ECHOMASK_OT_face_mapping_apply, ECHOMASK_UL_face_targets,
           VIEW3D_PT_echomask_face_mapping)


def register_properties():
    """After CLASSES are registered: the per-mesh mapping settings."""
    bpy.types.Object.echomask_face_mapping = bpy.props.PointerProperty(type=EchoMaskFaceMappingSettings)


def unregister_properties():
    """Before CLASSES are unregistered."""
    if hasattr(bpy.types.Object, "echomask_face_mapping"):
        del bpy.types.Object.echomask_face_mapping
