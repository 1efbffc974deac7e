"""3D View > Sidebar > EchoMask: the settings an animator picks, the job's progress, takes, re-key, export.

Settings live on the scene (`scene.echomask`, saved with the .blend); the running job's progress lives on
the window manager (`wm.echomask_job`, never saved); both are defined in ../settings.py. Buttons that cannot run say why: their operators'
`disabled_reason()` feeds poll()/poll_message_set (the tooltip) and is also drawn under the button.
"""
from __future__ import annotations

import bpy

from ...core.motion.take_parts import ANIM_PARTS, PART_LABELS
from .. import compat
from ..exchange.export import ECHOMASK_OT_export
from ..preview.render_preview import ECHOMASK_OT_render_preview, ECHOMASK_OT_speech_sync
from ..run import worker_service
from ..run.generate_op import ECHOMASK_OT_cancel_generation, ECHOMASK_OT_create_rig_for_panel, ECHOMASK_OT_generate
from ..takes.nla import ECHOMASK_OT_take_compare
from ..takes.rekey import ECHOMASK_OT_rekey, ECHOMASK_OT_scale_intensity, ECHOMASK_OT_simplify_keys
from ..settings import PROPERTY_CLASSES, attach_properties, detach_properties, selected_parts  # noqa: F401


def _wrap(layout, text: str, icon="NONE", width: int = 48):
    """A long message as several labels (panels do not wrap)."""
    words, line, first = text.split(), "", True
    col = layout.column(align=True)
    for word in words:
        if len(line) + len(word) + 1 > width:
            col.label(text=line, icon=icon if first else "BLANK1")
            line, first = word, False
        else:
            line = f"{line} {word}".strip()
    if line:
        col.label(text=line, icon=icon if first else "BLANK1")


def _sound_strip_collection(scene):
    editor = scene.sequence_editor
    if editor is None:
        return None, None
    return editor, ("strips_all" if hasattr(editor, "strips_all") else "sequences_all")


def _draw_worker(layout, context) -> None:
    """The warm generator's state (read from the client's own fields: nothing is polled here) and its buttons."""

    row = layout.row(align=True)
    text = worker_service.state_text(context)
    row.label(text=text, icon="LINKED" if "warm" in text else "UNLINKED")
    if worker_service.worker_alive():
        row.operator(worker_service.ECHOMASK_OT_stop_worker.bl_idname, text="Stop Worker", icon="X")
    elif worker_service.warm_enabled(context):
        row.operator(worker_service.ECHOMASK_OT_start_worker.bl_idname, text="Start Worker", icon="PLAY")


class VIEW3D_PT_echomask(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EchoMask"
    bl_label = "EchoMask"

    def draw(self, context):

        layout = self.layout
        settings = context.scene.echomask
        job = context.window_manager.echomask_job

        row = layout.row(align=True)
        row.prop(settings, "target")
        row.operator(ECHOMASK_OT_create_rig_for_panel.bl_idname, text="", icon="ADD")

        col = layout.column()
        col.prop(settings, "audio_source", expand=True)
        if settings.audio_source == "STRIP":
            editor, coll = _sound_strip_collection(context.scene)
            if editor is not None:
                col.prop_search(settings, "strip", editor, coll, text="Strip", icon="SOUND")
            else:
                col.label(text="The scene has no sound strips", icon="INFO")
        elif settings.audio_source == "FILE":
            col.prop(settings, "audio_file")

        col = layout.column(align=True)
        col.prop(settings, "range_mode", expand=True)
        if settings.range_mode == "CUSTOM":
            row = col.row(align=True)
            row.prop(settings, "frame_start")
            row.prop(settings, "frame_end")
        col.prop(settings, "fit_scene")

        box = layout.box()
        box.label(text="Body Parts")
        grid = box.grid_flow(columns=2, align=True)
        for part in ANIM_PARTS:
            grid.prop(settings, f"part_{part}", text=PART_LABELS[part], toggle=True)
        sub = box.row()
        sub.enabled = settings.part_root
        sub.prop(settings, "travel")

        col = layout.column(align=True)
        col.prop(settings, "seed")
        col.prop(settings, "temperature", slider=True)
        col.prop(settings, "intensity", slider=True)
        col.prop(settings, "lipsync", slider=True)
        layout.prop(settings, "model")
        layout.prop(settings, "device")
        _draw_worker(layout, context)

        if job.running:
            layout.progress(factor=job.progress, text=job.status[:60] or "Working")
            layout.operator(ECHOMASK_OT_cancel_generation.bl_idname, text="Cancel (Esc)", icon="CANCEL")
        else:
            row = layout.row()
            row.scale_y = 1.5
            row.operator(ECHOMASK_OT_generate.bl_idname, icon="PLAY_SOUND")
            reason = ECHOMASK_OT_generate.disabled_reason(context)
            if reason:
                _wrap(layout, reason, icon="INFO")
        if job.last_error:
            _wrap(layout, job.last_error, icon="ERROR")
        elif job.last_info:
            _wrap(layout, job.last_info, icon="CHECKMARK")
            if job.last_warning:
                _wrap(layout, job.last_warning, icon="ERROR")


class VIEW3D_PT_echomask_takes(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EchoMask"
    bl_label = "Takes"
    bl_parent_id = "VIEW3D_PT_echomask"

    def draw(self, context):

        layout = self.layout
        settings = context.scene.echomask
        rig = settings.target
        if rig is None or rig.animation_data is None:
            layout.label(text="No takes yet: press Generate")
            return
        layout.template_list("ECHOMASK_UL_takes", "", rig.animation_data, "nla_tracks", settings, "take_index",
                             rows=3)
        layout.operator(ECHOMASK_OT_take_compare.bl_idname, icon="ARROW_LEFTRIGHT")


class VIEW3D_PT_echomask_rekey(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EchoMask"
    bl_label = "Re-key"
    bl_parent_id = "VIEW3D_PT_echomask"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):

        layout = self.layout
        settings = context.scene.echomask
        col = layout.column(align=True)
        row = col.row(align=True)
        row.prop(settings, "rekey_start")
        row.prop(settings, "rekey_end")
        col.prop(settings, "rekey_blend")
        col.label(text="Regenerates the ticked body parts in this range", icon="INFO")
        col.operator(ECHOMASK_OT_rekey.bl_idname, icon="FILE_REFRESH")
        reason = ECHOMASK_OT_rekey.disabled_reason(context)
        if reason:
            _wrap(col, reason, icon="INFO")

        col = layout.column(align=True)
        col.prop(settings, "simplify_mode", expand=True)
        col.prop(settings, "simplify_budget")
        col.prop(settings, "simplify_rotation", text="Rotation (°)")
        col.prop(settings, "simplify_location")
        col.prop(settings, "simplify_expression")
        col.operator(ECHOMASK_OT_simplify_keys.bl_idname, icon="IPO_LINEAR")

        col = layout.column(align=True)
        col.prop(settings, "intensity_scale")
        col.operator(ECHOMASK_OT_scale_intensity.bl_idname, icon="FULLSCREEN_ENTER")


class VIEW3D_PT_echomask_output(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EchoMask"
    bl_label = "Preview & Export"
    bl_parent_id = "VIEW3D_PT_echomask"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):

        layout = self.layout
        layout.operator(ECHOMASK_OT_speech_sync.bl_idname, icon="SPEAKER")
        layout.operator(ECHOMASK_OT_render_preview.bl_idname, icon="RENDER_ANIMATION")
        reason = ECHOMASK_OT_render_preview.disabled_reason(context)
        if reason:
            _wrap(layout, reason, icon="INFO")
        else:   # the style and frame rate are chosen in the file dialog
            from ..preview.render_preview import DEFAULT_FRAME_STEP

            fps = context.scene.render.fps / context.scene.render.fps_base
            _wrap(layout, f"Skeleton at {fps / DEFAULT_FRAME_STEP:.3g} fps with the speech (Workbench, every frame: "
                          "in the file dialog)", icon="INFO")
        col = layout.column(align=True)
        for fmt, label, icon in (("FBX_UNITY", "FBX for Unity", "EXPORT"), ("FBX_UNREAL", "FBX for Unreal", "EXPORT"),
                                 ("BVH", "BVH", "EXPORT"), ("NPZ", "SMPL-X .npz (BEAT2)", "EXPORT")):
            col.operator(ECHOMASK_OT_export.bl_idname, text=label, icon=icon).format = fmt


PANEL_CLASSES = (VIEW3D_PT_echomask, VIEW3D_PT_echomask_takes, VIEW3D_PT_echomask_rekey, VIEW3D_PT_echomask_output)


def sound_strips_available() -> bool:
    return compat.HAS_AUDASPACE
