"""Operators and menu entries: File > Import > SMPL-X motion, File > Export > SMPL-X take (FBX), Add > SMPL-X rig.

Operators stay thin: they gather options, call scene_io / rig / mesh, and turn EchoMaskError into one
report line (the scene is left unchanged on those errors; scene_io validates before building).
"""
from __future__ import annotations

import os

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from ...core.errors import EchoMaskError
from . import scene_io
from .. import compat
from ..ui.poll import DisabledReasonPoll
from ..ui.preferences import smplx_model_path
from ..rigs.rig import create_smplx_armature, missing_bones


def _is_smplx_rig(obj) -> bool:
    return obj is not None and obj.type == "ARMATURE" and not missing_bones(obj)


def find_speech_for(take_path: str) -> str | None:
    """A speech file next to the take with the same name, or in BEAT2's ../wave16k folder."""
    folder, stem = os.path.split(os.path.splitext(take_path)[0])
    for base in (folder, os.path.join(os.path.dirname(folder), "wave16k")):
        for ext in scene_io.AUDIO_EXTENSIONS:
            candidate = os.path.join(base, stem + ext)
            if os.path.isfile(candidate):
                return candidate
    return None


class ECHOMASK_OT_import_take(bpy.types.Operator, ImportHelper):
    """Import a BEAT2/SMPL-X motion file (.npz) onto an SMPL-X rig, with its speech as a sound strip"""

    bl_idname = "echomask.import_take"
    bl_label = "Import SMPL-X Motion"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filename_ext = ".npz"
    filter_glob: bpy.props.StringProperty(default="*.npz", options={"HIDDEN"})
    use_audio: bpy.props.BoolProperty(
        name="Import Speech", default=True,
        description="Add the take's speech as a sound strip at its first frame and play in sync with audio")
    audio_path: bpy.props.StringProperty(
        name="Speech File", subtype="FILE_PATH", default="",
        description="Speech audio for this take. Empty: look for a file with the take's name next to it "
                    "(or in BEAT2's wave16k folder)")
    target: bpy.props.EnumProperty(
        name="Rig",
        items=(("NEW", "New Rig", "Create a new SMPL-X rig (with the body mesh when the SMPL-X model is set "
                                  "in the preferences)"),
               ("ACTIVE", "Active Armature", "Key the active armature (it must have the SMPL-X bone names)")),
        default="NEW")
    fps_mode: bpy.props.EnumProperty(
        name="Frame Rate",
        items=(("SCENE", "Keep Scene Rate", "Resample the take to the scene's frame rate"),
               ("TAKE", "Use Take Rate", "Set the scene's frame rate to the take's")),
        default="SCENE")
    fit_frame_range: bpy.props.BoolProperty(
        name="Fit Frame Range", default=True, description="Set the scene's start/end frames to the take")

    def invoke(self, context, event):
        if _is_smplx_rig(context.active_object):
            self.target = "ACTIVE"
        return ImportHelper.invoke(self, context, event)

    def execute(self, context):
        audio, note = None, ""
        if self.use_audio:
            audio = self.audio_path or find_speech_for(self.filepath)
            if audio and not self.audio_path and not compat.HAS_AUDASPACE:
                # Found by name only: skip it rather than refuse the motion on a Blender without audio.
                audio, note = None, " (speech found but this Blender build has no audio support)"
        options = scene_io.ImportOptions(
            audio_path=audio,
            armature_name=context.active_object.name if self.target == "ACTIVE" and context.active_object else None,
            fps_mode=self.fps_mode,
            frame_start=context.scene.frame_start,
            smplx_model_path=smplx_model_path(context),
            fit_frame_range=self.fit_frame_range,
        )
        if self.target == "ACTIVE" and options.armature_name is None:
            self.report({"ERROR"}, "No active armature: select an SMPL-X armature or choose 'New Rig'.")
            return {"CANCELLED"}
        try:
            result = scene_io.import_take(context, self.filepath, options)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        speech = f", speech '{result.sound_strip}'" if result.sound_strip else (
            ", no speech file found" if self.use_audio and not self.audio_path and not note else note)
        resampled = f" (resampled to {result.fps:g} fps)" if result.resampled else ""
        self.report({"INFO"}, f"Imported {result.frames} frames onto '{result.armature}'{resampled}{speech}.")
        return {"FINISHED"}


class ECHOMASK_OT_export_take_fbx(DisabledReasonPoll, bpy.types.Operator, ExportHelper):
    """Export the active SMPL-X rig with its current take to FBX (no leaf bones, every key, this take only)"""

    bl_idname = "echomask.export_take_fbx"
    bl_label = "Export SMPL-X Take (FBX)"
    bl_options = {"REGISTER"}

    filename_ext = ".fbx"
    filter_glob: bpy.props.StringProperty(default="*.fbx", options={"HIDDEN"})

    @classmethod
    def disabled_reason(cls, context) -> str | None:
        obj = context.active_object
        if not _is_smplx_rig(obj):
            return "Select an SMPL-X armature"
        if obj.animation_data is None or obj.animation_data.action is None:
            return "The selected rig has no take: import or generate one first"
        return None


    def execute(self, context):
        try:
            path = scene_io.export_take_fbx(context, context.active_object, self.filepath)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {path}")
        return {"FINISHED"}


class ECHOMASK_OT_create_rig(bpy.types.Operator):
    """Add an SMPL-X armature (55 bones, Z up, metres); with the SMPL-X model set in the preferences, also
    the skinned body mesh with expression shape keys"""

    bl_idname = "echomask.create_rig"
    bl_label = "SMPL-X Rig"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        model_path = smplx_model_path(context)
        try:
            model = None
            if model_path:
                from ..rigs.mesh import load_smplx_model

                model = load_smplx_model(bpy.path.abspath(model_path))  # checked before anything is added
            scene_io._ensure_object_mode(context)
            armature = create_smplx_armature(context, rest_joints_yup=None if model is None else model.rest_joints)
            if model is not None:
                from ..rigs.mesh import build_smplx_mesh

                build_smplx_mesh(context, model, armature)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        for obj in context.view_layer.objects:
            obj.select_set(obj == armature)
        return {"FINISHED"}


def menu_import(self, context):
    self.layout.operator(ECHOMASK_OT_import_take.bl_idname, text="SMPL-X Motion (.npz)")


def menu_export(self, context):
    self.layout.operator(ECHOMASK_OT_export_take_fbx.bl_idname, text="SMPL-X Take (.fbx)")


def menu_add_armature(self, context):
    self.layout.operator(ECHOMASK_OT_create_rig.bl_idname, text="SMPL-X Rig", icon="ARMATURE_DATA")


CLASSES = (ECHOMASK_OT_import_take, ECHOMASK_OT_export_take_fbx, ECHOMASK_OT_create_rig)
MENUS = (
    (bpy.types.TOPBAR_MT_file_import, menu_import),
    (bpy.types.TOPBAR_MT_file_export, menu_export),
    (bpy.types.VIEW3D_MT_armature_add, menu_add_armature),
)
