"""The animator's settings as Blender properties: `scene.echomask` (EchoMaskSettings: saved with the .blend)
and `wm.echomask_job` (EchoMaskJobState: the running job as the UI shows it, never saved). Defaults of the
generation options come from core.generation.options, the one place they are defined for the panel, the CLI
and the worker."""
from __future__ import annotations

import bpy

from ..core.generation.options import MAX_INTENSITY, MAX_TEMPERATURE, GenerationOptions
from ..core.motion.take_parts import ANIM_PARTS
from . import compat
from .run.speech_source import SOURCES

DEFAULTS = GenerationOptions()   # one default per option, shared with the CLI and the worker


def _is_armature(self, obj) -> bool:
    return obj.type == "ARMATURE"


def _on_take_index(self, context):
    """Picking a take in the list plays it."""
    from .takes import nla as takes

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
        description="0 = the model's single most likely motion (the bundled model also draws a run of "
                    "coarse motion from the Seed, so seeds still differ); higher = more varied takes per seed")
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


PROPERTY_CLASSES = (EchoMaskSettings, EchoMaskJobState)


def attach_properties() -> None:
    bpy.types.Scene.echomask = bpy.props.PointerProperty(type=EchoMaskSettings)
    bpy.types.WindowManager.echomask_job = bpy.props.PointerProperty(type=EchoMaskJobState)


def detach_properties() -> None:
    for owner, name in ((bpy.types.WindowManager, "echomask_job"), (bpy.types.Scene, "echomask")):
        if hasattr(owner, name):
            delattr(owner, name)
