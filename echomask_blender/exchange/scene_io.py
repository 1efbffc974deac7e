"""Takes in and out of a scene: import (rig, keys, speech strip, frame rate) and FBX export.

Everything the user gave is checked before the first datablock is created, so bad input (a broken .npz,
a missing or unreadable speech file, an armature without SMPL-X bones, a bad model file) raises an
EchoMaskError and leaves the scene exactly as it was.

Frame rate. An animator's scene rate is a project decision (24 for film, 25 PAL, 29.97 NTSC...), so by
default the take is resampled to the scene's rate (core.motion.take.resample_take: slerp for rotations; the
duration and audio sync are kept). `fps_mode='TAKE'` instead sets the scene to the take's rate (what a
fresh scene, e.g. the command line, wants), and an explicit `fps` sets the scene to that rate and
resamples the take to it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

import bpy

from ...core.errors import AudioError, EchoMaskError, RigError
from ...core.motion.take import Take, load_take, resample_take
from .. import compat
from ..takes.keys import expression_meshes, write_take_to_armature
from ..rigs.rig import check_smplx_armature, create_smplx_armature

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".aif", ".aiff")


@dataclasses.dataclass
class ImportOptions:
    audio_path: str | None = None           # speech; placed as a sound strip at the take's first frame
    armature_name: str | None = None        # an existing SMPL-X armature to key; None -> create a rig
    fps_mode: str = "SCENE"                 # 'SCENE': resample to the scene rate; 'TAKE': adopt the take's
    fps: float | None = None                # explicit scene rate (overrides fps_mode)
    frame_start: int | None = None          # default: the scene's start frame
    smplx_model_path: str = ""              # the user's SMPL-X model .npz: also build the mesh (new rigs)
    fit_frame_range: bool = True            # set the scene's frame range to the take
    name: str | None = None                 # action name; default: the file's name


@dataclasses.dataclass
class ImportResult:
    armature: str
    mesh: str | None
    action: str
    shape_actions: list[str]
    sound_strip: str | None
    frame_start: int
    frame_end: int
    frames: int
    fps: float
    resampled: bool
    stashed: list[str]


def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / scene.render.fps_base


def set_scene_fps(scene: bpy.types.Scene, fps: float) -> None:
    """Set fps/fps_base; NTSC rates (23.976, 29.97, 59.94) use base 1.001 as Blender's presets do."""
    if fps <= 0 or fps > 1000:
        raise EchoMaskError(f"Frame rate {fps} is not usable.")
    whole = round(fps)
    ntsc = round(fps * 1.001)
    if abs(fps - whole) < 1e-6:
        scene.render.fps, scene.render.fps_base = int(whole), 1.0
    elif abs(fps * 1.001 - ntsc) < 1e-3:
        scene.render.fps, scene.render.fps_base = int(ntsc), 1.001
    else:
        scene.render.fps, scene.render.fps_base = max(1, int(whole)), max(1, whole) / fps


def resolve_audio_path(path: str) -> str:
    """Absolute path of a speech file, checked to exist and be decodable by this Blender."""
    resolved = os.path.abspath(os.path.expanduser(bpy.path.abspath(path)))
    name = os.path.basename(resolved)
    if not os.path.exists(resolved):
        raise AudioError(f"Speech file not found: {resolved}. Check the path, or import without audio.")
    if os.path.isdir(resolved):
        raise AudioError(f"{resolved} is a folder, not an audio file.")
    if os.path.getsize(resolved) == 0:
        raise AudioError(f"{name} is empty (0 bytes).")
    compat.check_sound_file(resolved)
    return resolved


def _load(take_or_path) -> tuple[Take, str]:
    if isinstance(take_or_path, Take):
        return take_or_path.validate("take"), "EchoMask take"
    path = os.path.abspath(os.path.expanduser(bpy.path.abspath(os.fspath(take_or_path))))
    return load_take(path), os.path.splitext(os.path.basename(path))[0]


def _ensure_object_mode(context: bpy.types.Context) -> None:
    if context.mode != "OBJECT" and context.view_layer.objects.active is not None:
        bpy.ops.object.mode_set(mode="OBJECT")


def import_take(context: bpy.types.Context, take_or_path, options: ImportOptions | None = None) -> ImportResult:
    """Put a take (a .npz path or a Take) on an SMPL-X rig in the current scene, with its speech."""
    options = options or ImportOptions()
    scene = context.scene

    # 1. Validate everything; nothing in the scene changes before this block has passed.
    take, default_name = _load(take_or_path)
    audio = resolve_audio_path(options.audio_path) if options.audio_path else None
    armature = None
    if options.armature_name:
        armature = bpy.data.objects.get(options.armature_name)
        if armature is None:
            raise RigError(f"There is no object named '{options.armature_name}'.")
        check_smplx_armature(armature)
    model = None
    if armature is None and options.smplx_model_path:
        from ..rigs.mesh import load_smplx_model

        model = load_smplx_model(bpy.path.abspath(options.smplx_model_path))
    if options.fps is not None:
        target_fps = float(options.fps)
    elif options.fps_mode == "TAKE":
        target_fps = take.fps
    elif options.fps_mode == "SCENE":
        target_fps = scene_fps(scene)
    else:
        raise EchoMaskError(f"Unknown frame-rate mode '{options.fps_mode}' (use 'SCENE' or 'TAKE').")
    if not (0 < target_fps <= 1000):
        raise EchoMaskError(f"Frame rate {target_fps} is not usable.")
    resampled = abs(target_fps - take.fps) > 1e-6
    if resampled:
        take = resample_take(take, target_fps)
    frame_start = scene.frame_start if options.frame_start is None else int(options.frame_start)
    name = options.name or default_name

    # 2. Build.
    if abs(scene_fps(scene) - target_fps) > 1e-6:
        set_scene_fps(scene, target_fps)
    mesh_obj = None
    if armature is None:
        _ensure_object_mode(context)
        rest = None if model is None else model.rest_joints
        armature = create_smplx_armature(context, name="SMPLX", rest_joints_yup=rest)
        if model is not None:
            from ..rigs.mesh import build_smplx_mesh

            mesh_obj = build_smplx_mesh(context, model, armature, name="SMPLX-mesh")
        for obj in context.view_layer.objects:
            obj.select_set(False)
        armature.select_set(True)
        context.view_layer.objects.active = armature
    else:
        meshes = expression_meshes(armature)
        mesh_obj = meshes[0] if meshes else None
    written = write_take_to_armature(armature, take, name=name, frame_start=frame_start)
    action = bpy.data.actions[written.action]
    action["echomask_source"] = str(take_or_path) if not isinstance(take_or_path, Take) else "generated"
    action["echomask_fps"] = float(take.fps)

    strip_name = None
    if audio:
        strip = compat.new_sound_strip(scene, os.path.basename(audio), audio, frame_start)
        strip_name = strip.name
        scene.sync_mode = "AUDIO_SYNC"  # playback drops frames rather than drifting from the speech
    if options.fit_frame_range:
        scene.frame_start = written.frame_start
        scene.frame_end = written.frame_end
    scene.frame_set(written.frame_start)
    return ImportResult(armature=armature.name, mesh=mesh_obj.name if mesh_obj else None, action=action.name,
                        shape_actions=written.shape_actions, sound_strip=strip_name,
                        frame_start=written.frame_start, frame_end=written.frame_end, frames=take.num_frames,
                        fps=float(take.fps), resampled=resampled, stashed=written.stashed)


# FBX settings for one take (docs/BLENDER_NOTES.md §2.1/§4.3): the SMPL-X add-on's export choices. The 5.0 defaults
# (leaf bones, every action, NLA strips, simplify 1.0) would add bones, other takes and drop keys.
# The take is exported as the one NLA strip playing (export_take_fbx puts it on a temporary track): the
# exporter then names the animation after the strip (the take, not "Scene") and starts its keys at time 0,
# so an importer at its defaults (Blender's: frame 1 = time 0) puts the take's first frame on frame 1, and
# a game engine plays it from the speech's start.
FBX_TAKE_SETTINGS = dict(
    use_selection=True,
    object_types={"ARMATURE", "MESH"},
    add_leaf_bones=False,
    bake_anim=True,
    bake_anim_use_all_bones=True,
    bake_anim_use_all_actions=False,   # every compatible Action in the file would be a stack
    bake_anim_use_nla_strips=True,     # one stack per unmuted strip: only the take's is unmuted
    bake_anim_simplify_factor=0.0,     # every key as written
    bake_anim_force_startend_keying=True,
    bake_anim_step=1.0,
    apply_scale_options="FBX_SCALE_ALL",  # metres in Blender -> unit scale baked in, no 100x root scale
    apply_unit_scale=True,
    global_scale=1.0,
    axis_forward="-Z",
    axis_up="Y",                         # Y-up FBX (Unity/Unreal/Maya convention)
    primary_bone_axis="Y",
    secondary_bone_axis="X",
    use_armature_deform_only=False,
    use_mesh_modifiers=False,            # keep shape keys; skinning stays a live deformer
    mesh_smooth_type="FACE",
    use_custom_props=True,
)


@contextlib.contextmanager
def _as_the_only_playing_strip(armature: bpy.types.Object, action: bpy.types.Action):
    """`action` (with the slot it plays from) alone on a temporary NLA track of the armature, every other
    track muted and none soloed, no active action; everything is put back afterwards."""
    anim = armature.animation_data
    if anim.use_tweak_mode:
        anim.use_tweak_mode = False
    slot = compat.assigned_slot(armature)
    tracks = [(track, track.mute, track.is_solo) for track in anim.nla_tracks]
    use_nla = anim.use_nla
    # strip names are unique per rig: the take's own strip (same name) steps aside while exporting
    renamed = [(strip, strip.name) for track, _, _ in tracks for strip in track.strips if strip.name == action.name]
    temporary = None
    try:
        for strip, name in renamed:
            strip.name = name[:50] + " (exporting)"
        for track, _, _ in tracks:
            track.is_solo = False
            track.mute = True
        anim.action = None
        temporary = anim.nla_tracks.new()
        temporary.name = "EchoMask FBX export"
        strip = temporary.strips.new(action.name[:63], int(round(action.frame_range[0])), action)
        strip.name = action.name   # the FBX animation's name
        if slot is not None and strip.action_slot != slot:
            strip.action_slot = slot
        strip.blend_type = "REPLACE"
        anim.use_nla = True
        yield strip
    finally:
        if temporary is not None:
            anim.nla_tracks.remove(temporary)
        for strip, name in renamed:
            strip.name = name
        anim.action = action
        if slot is not None:
            anim.action_slot = slot
        for track, mute, _ in tracks:
            track.mute = mute
        for track, _, solo in tracks:
            if solo:
                track.is_solo = True
        anim.use_nla = use_nla


def export_take_fbx(context: bpy.types.Context, armature: bpy.types.Object, filepath: str,
                    overrides: dict | None = None) -> str:
    """Export `armature` (and its child meshes) with its active action, over that action's frame range.

    The FBX animation is named after the action and starts at time 0 (see FBX_TAKE_SETTINGS).
    `overrides` replaces some FBX_TAKE_SETTINGS (the export panel's Unity/Unreal presets: axes, scaling).
    """
    check_smplx_armature(armature)
    anim = armature.animation_data
    if anim is None or anim.action is None:
        raise EchoMaskError(f"Armature '{armature.name}' has no active take to export. Import or generate "
                            f"one first (or pick one in the Action editor).")
    filepath = os.path.abspath(os.path.expanduser(bpy.path.abspath(filepath)))
    if not filepath.lower().endswith(".fbx"):
        filepath += ".fbx"
    folder = os.path.dirname(filepath)
    if not os.path.isdir(folder):
        raise EchoMaskError(f"Cannot write {filepath}: the folder {folder} does not exist.")
    scene = context.scene
    first, last = (int(round(f)) for f in anim.action.frame_range)
    saved_range = (scene.frame_start, scene.frame_end, scene.frame_current)
    saved_selection = [obj for obj in context.view_layer.objects if obj.select_get()]
    saved_active = context.view_layer.objects.active
    _ensure_object_mode(context)
    try:
        for obj in saved_selection:
            obj.select_set(False)
        armature.select_set(True)
        for child in armature.children:
            if child.type == "MESH":
                child.select_set(True)
        context.view_layer.objects.active = armature
        scene.frame_start, scene.frame_end = first, last
        with _as_the_only_playing_strip(armature, anim.action):
            result = bpy.ops.export_scene.fbx(filepath=filepath, **{**FBX_TAKE_SETTINGS, **(overrides or {})})
        if "FINISHED" not in result:
            raise EchoMaskError(f"FBX export to {filepath} did not finish ({', '.join(result)}).")
    finally:
        scene.frame_start, scene.frame_end = saved_range[0], saved_range[1]
        scene.frame_set(saved_range[2])
        for obj in context.view_layer.objects:
            obj.select_set(obj in saved_selection)
        context.view_layer.objects.active = saved_active
    return filepath
