"""3D View > Sidebar > EchoMask: the settings an animator picks, the job's progress, takes, re-key, export.

Settings live on the scene (`scene.echomask`, saved with the .blend); the running job's progress lives on
the window manager (`wm.echomask_job`, never saved). Buttons that cannot run say why: their operators'
`disabled_reason()` feeds poll()/poll_message_set (the tooltip) and is also drawn under the button.
"""
from __future__ import annotations

import bpy

from ...core.generation.options import MAX_INTENSITY, MAX_TEMPERATURE, GenerationOptions
from ...core.motion.take_parts import ANIM_PARTS, PART_LABELS
from .. import compat
from ..run.speech_source import SOURCES


DEFAULTS = GenerationOptions()   # one default per option, shared with the CLI and the worker


def _is_armature(self, obj) -> bool:
    return obj.type == "ARMATURE"


def _on_take_index(self, context):
    """Picking a take in the list plays it."""
    from ..takes import nla as takes

    rig = self.target
    anim = rig.animation_data if rig is not None else None
    if anim is None or not (0 <= self.take_index < len(anim.nla_tracks)):
        return
    track = anim.nla_tracks[self.take_index]
    action = next((s.action for s in track.strips if s.action is not None and s.action.get(takes.TAKE_PROP)), None)
    if action is not None and track.mute:
        takes.set_playing_take(rig, action.name)


class EchoMaskSettings(bpy.types.PropertyGroup):
    target: bpy.props.PointerProperty(
        name="Rig", type=bpy.types.Object, poll=_is_armature,
        description="The SMPL-X armature to animate (made by EchoMask or the SMPL-X add-on)")
    audio_source: bpy.props.EnumProperty(name="Audio", items=SOURCES, default="MIX")
    strip: bpy.props.StringProperty(name="Strip", description="The sound strip with the speech")
    audio_file: bpy.props.StringProperty(name="File", subtype="FILE_PATH", options=compat.FILE_PATH_OPTIONS,
                                         description="Speech audio file (wav, flac, ogg, mp3)")
    range_mode: bpy.props.EnumProperty(
        name="Frames", items=(("SCENE", "Scene Range", "The scene's start to end frame"),
                              ("CUSTOM", "Custom", "Frames chosen here")), default="SCENE")
    frame_start: bpy.props.IntProperty(name="Start", default=1, min=0)
    frame_end: bpy.props.IntProperty(name="End", default=250, min=0)
    fit_scene: bpy.props.BoolProperty(
        name="Extend Scene", default=False,
        description="When the speech runs past the scene's end frame, move the end frame instead of refusing")
    part_face: bpy.props.BoolProperty(name="Face", default=True, description="Jaw, eyes and expressions (lip sync)")
    part_upper: bpy.props.BoolProperty(name="Upper Body", default=True, description="Spine, neck, head, arms")
    part_hands: bpy.props.BoolProperty(name="Hands", default=True, description="All finger joints")
    part_lower: bpy.props.BoolProperty(name="Lower Body", default=True, description="Pelvis rotation, legs, feet")
    part_root: bpy.props.BoolProperty(name="Root Motion", default=True, description="The pelvis position")
    travel: bpy.props.BoolProperty(name="Travel", default=False,
                                   description="Let the character move around (off: stays in place)")
    seed: bpy.props.IntProperty(name="Seed", default=0, min=0, description="Same seed, same take")
    temperature: bpy.props.FloatProperty(
        name="Variation", default=DEFAULTS.temperature, min=0.0, max=MAX_TEMPERATURE, soft_max=1.5,
        description="0 = the model's single most likely motion; higher = more varied takes per seed")
    model: bpy.props.EnumProperty(
        name="Model",
        items=(("BUNDLED", "Bundled Model", "The small EchoMask model shipped with the extension"),
               ("FILE", "Model File", "The checkpoint set in Preferences › EchoMask › Model Weights, e.g. the "
                                      "authors' official release converted with `convert-official`")),
        default="BUNDLED")
    lipsync: bpy.props.FloatProperty(
        name="Lip Sync", default=DEFAULTS.lipsync, min=0.0, max=1.0,
        description="How strongly recognised speech sounds drive the mouth (lips close on p/b/m, open on vowels), "
                    "combined with the model's face. 0 = the model's face alone")
    intensity: bpy.props.FloatProperty(name="Gesture Intensity", default=DEFAULTS.intensity, min=0.0, max=MAX_INTENSITY,
                                       description="How big the gestures are (1 = as the model makes them)")
    device: bpy.props.EnumProperty(
        name="Device",
        items=(("AUTO", "Auto", "The fastest device this computer has"), ("CUDA", "CUDA", "An NVIDIA GPU"),
               ("CPU", "CPU", "The processor (always available)"), ("MPS", "Apple GPU", "Apple Silicon GPU (Metal)")),
        default="AUTO")
    take_index: bpy.props.IntProperty(name="Take", default=0, update=_on_take_index)
    # re-key and key editing
    rekey_start: bpy.props.IntProperty(name="From", default=1, min=0)
    rekey_end: bpy.props.IntProperty(name="To", default=50, min=0)
    rekey_blend: bpy.props.IntProperty(name="Blend Frames", default=3, min=0, max=30,
                                       description="Frames at each inside edge of the range that crossfade from "
                                                   "the old motion into the new")
    simplify_rotation: bpy.props.FloatProperty(name="Rotation Tolerance", default=3.0, min=0.01, max=45.0,
                                               description="Largest rotation error wanted, in degrees (within "
                                                           "the key budget; the report says the error left)")
    simplify_budget: bpy.props.FloatProperty(
        name="Key Budget", default=25.0, min=1.0, max=100.0, subtype="PERCENTAGE", precision=0,
        description="At most this share of the frames become keys (25%: about every 4th frame, editable key "
                    "poses); the largest errors are fixed first. 100% = as many keys as the tolerances need")
    simplify_location: bpy.props.FloatProperty(name="Location Tolerance", default=0.005, min=0.0001, max=0.5,
                                               unit="LENGTH", description="Largest root position error allowed")
    simplify_expression: bpy.props.FloatProperty(name="Expression Tolerance", default=0.05, min=0.001, max=2.0,
                                                 description="Largest expression value error allowed")
    simplify_mode: bpy.props.EnumProperty(
        name="Keys", items=(("POSE", "Key Poses", "Keys at the same frames on every channel: whole key poses"),
                            ("CHANNEL", "Per Bone", "Each bone keeps only the keys it needs")), default="POSE")
    intensity_scale: bpy.props.FloatProperty(name="Scale", default=1.25, min=0.0, max=3.0,
                                             description="1 = unchanged, 0 = rest pose, above 1 = bigger")


def selected_parts(settings) -> tuple[str, ...]:
    """The ticked body parts, in core.motion.take_parts.ANIM_PARTS order. (A module function, not a method: a
    Python method on this PropertyGroup made the 4.2 module crash at exit after unregistering.)"""
    return tuple(p for p in ANIM_PARTS if getattr(settings, f"part_{p}"))


class EchoMaskJobState(bpy.types.PropertyGroup):
    """The running generation as the UI shows it (window manager: not saved with the file)."""

    running: bpy.props.BoolProperty(default=False)
    progress: bpy.props.FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: bpy.props.StringProperty(default="")
    last_error: bpy.props.StringProperty(default="")
    last_info: bpy.props.StringProperty(default="")
    last_warning: bpy.props.StringProperty(default="")   # the worker's warnings about the last take made


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
    from ..run import worker_service

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
        from ..run.generate_op import ECHOMASK_OT_cancel_generation, ECHOMASK_OT_create_rig_for_panel, ECHOMASK_OT_generate

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
        from ..takes.nla import ECHOMASK_OT_take_compare

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
        from ..takes.rekey import ECHOMASK_OT_rekey, ECHOMASK_OT_scale_intensity, ECHOMASK_OT_simplify_keys

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
        from ..exchange.export import ECHOMASK_OT_export
        from ..preview.render_preview import ECHOMASK_OT_render_preview, ECHOMASK_OT_speech_sync

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


PROPERTY_CLASSES = (EchoMaskSettings, EchoMaskJobState)
PANEL_CLASSES = (VIEW3D_PT_echomask, VIEW3D_PT_echomask_takes, VIEW3D_PT_echomask_rekey, VIEW3D_PT_echomask_output)


def attach_properties() -> None:
    bpy.types.Scene.echomask = bpy.props.PointerProperty(type=EchoMaskSettings)
    bpy.types.WindowManager.echomask_job = bpy.props.PointerProperty(type=EchoMaskJobState)


def detach_properties() -> None:
    for owner, name in ((bpy.types.WindowManager, "echomask_job"), (bpy.types.Scene, "echomask")):
        if hasattr(owner, name):
            delattr(owner, name)


def sound_strips_available() -> bool:
    return compat.HAS_AUDASPACE
