"""Preview: lip-synced playback in the viewport, and a small MP4 with the speech.

- Speech sync: the speech is a sound strip on the timeline (Generate adds one for a file source) and the
  scene plays with "Sync to Audio", so viewport playback drops frames rather than drifting from the voice.
- Render Preview: a 640x360 H.264 + AAC MP4 of the playing take with the scene's sound. It runs in a
  separate Blender process on a saved copy of the file, so the animator's scene is never touched and Blender
  stays usable; the same code renders headless (`python -m core render-preview`). Two styles:
  - "skeleton" (default, faster than real time on 2 CPU cores, no GPU or GL needed): the posed bones drawn
    from the front and the side, with a close-up of the head, jaw and lips (preview_skeleton.py,
    preview_draw.py); by default every 2nd frame (15 fps for a 30 fps take) with the whole sound, or every
    frame.
  - "workbench" (slow: a 3D render of every frame, about 0.27 s each on a 2-core CPU with software GL):
    shaded, and with the SMPL-X mesh when the rig has one; a bone-only rig renders as a stick figure (a
    temporary skinned mesh).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile

import bpy
import numpy as np

from ...core.errors import EchoMaskError
from .. import compat
from ...core.jobs.client import JobState, WorkerJob
from ...core.jobs.protocol import emit
from . import poses as preview_skeleton
from ..run.modal_timer import TimerModal
from ..rigs.rig import BONE_NAMES, check_smplx_armature
from ..ui.poll import DisabledReasonPoll
from ..takes.nla import playing_take, playing_take_reason

PREVIEW_SIZE = (640, 360)
STYLES = (("SKELETON", "Skeleton (fast)", "The posed bones from the front and the side with a head and jaw "
                                          "close-up; faster than real time, no GPU needed"),
          ("WORKBENCH", "Workbench (slow)", "A shaded 3D render of every frame (the SMPL-X mesh when the rig "
                                            "has one); several times slower than real time without a GPU"))
# Skeleton style, every 2nd frame: a 62 s take in about a quarter of its duration on 2 busy CPU cores
# (bench_preview.py); every frame took 0.4x (5.x) to 0.9x (4.2) there, too close to real time for a default.
DEFAULT_FRAME_STEP = 2
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "preview_job.py")  # the background script


def ensure_speech_sync(scene) -> int:
    """Playback syncs to audio and scrubbing plays the sound; returns how many sound strips the scene has."""
    scene.sync_mode = "AUDIO_SYNC"
    scene.use_audio_scrub = True
    return len(compat.all_sound_strips(scene))


def _box(verts, faces, a, b, r):
    """Append a square-section box from point a to point b (radius r); returns its vertex indices."""
    axis = b - a
    z = axis / (np.linalg.norm(axis) or 1.0)
    x = np.cross(z, [0.0, 1.0, 0.0] if abs(z[1]) < 0.9 else [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    base = len(verts)
    for end in (a, b):
        for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
            verts.append(tuple(end + r * (sx * x + sy * y)))
    faces += [(base, base + 1, base + 2, base + 3), (base + 4, base + 7, base + 6, base + 5)]
    faces += [(base + i, base + 4 + i, base + 4 + (i + 1) % 4, base + (i + 1) % 4) for i in range(4)]
    return list(range(base, base + 8))


def _stick_figure(armature) -> bpy.types.Object:
    """A temporary skeleton mesh (armatures do not render): a box from each joint to each child joint,
    moving rigidly with the parent bone, and a small block at each joint without children."""
    from ...core.motion import skeleton

    bones = armature.data.bones
    heads = np.array([np.array(bones[name].head_local) for name in BONE_NAMES])
    verts, faces, groups = [], [], []
    for j, name in enumerate(BONE_NAMES):
        kids = skeleton.children(j)
        fine = any(k in name for k in ("index", "middle", "ring", "pinky", "thumb", "eye", "jaw"))
        r = 0.005 if fine else 0.022
        for k in kids:
            groups.append((name, _box(verts, faces, heads[j], heads[k], r)))
        if not kids:
            tip = heads[j] + (heads[j] - heads[skeleton.PARENTS[j]]) * 0.5
            groups.append((name, _box(verts, faces, heads[j], tip, r)))
    mesh = bpy.data.meshes.new("EchoMask preview figure")
    mesh.from_pydata(verts, [], faces)
    obj = bpy.data.objects.new("EchoMask preview figure", mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.matrix_world = armature.matrix_world.copy()
    for name, indices in groups:
        group = obj.vertex_groups.get(name) or obj.vertex_groups.new(name=name)
        group.add(indices, 1.0, "REPLACE")
    obj.modifiers.new("Armature", "ARMATURE").object = armature
    return obj


def _posed_heads(scene, armature, frames) -> np.ndarray:
    """World positions of every bone head at a few frames of the take (the framing must follow root motion)."""
    saved = scene.frame_current
    mw = np.array(armature.matrix_world)
    out = []
    for frame in frames:
        scene.frame_set(int(frame))
        local = np.array([tuple(pb.head) for pb in armature.pose.bones])
        out.append(local @ mw[:3, :3].T + mw[:3, 3])
    scene.frame_set(saved)
    return np.concatenate(out)


def _framing_camera(scene, armature, first: int, last: int) -> bpy.types.Object:
    """A temporary camera in front of the rig, framing where it goes during the take."""
    heads = _posed_heads(scene, armature, np.unique(np.linspace(first, last, 8).round()))
    low, high = heads.min(0), heads.max(0)
    centre = (low + high) / 2
    height = max(high[2] - low[2], 0.5) * 1.25
    data = bpy.data.cameras.new("EchoMask preview camera")
    data.lens = 50.0
    cam = bpy.data.objects.new("EchoMask preview camera", data)
    scene.collection.objects.link(cam)
    fov = 2 * math.atan(data.sensor_width / 2 / data.lens) * PREVIEW_SIZE[1] / PREVIEW_SIZE[0]
    distance = height / 2 / math.tan(fov / 2)
    # SMPL-X faces +Z in model space, which is -Y in Blender (rig.C): the camera stands at -Y
    facing = np.array(armature.matrix_world.to_3x3()) @ np.array([0.0, -1.0, 0.0])
    facing = facing / (np.linalg.norm(facing) or 1.0)
    cam.location = tuple(centre + facing * distance)
    direction = centre - np.array(cam.location)
    from mathutils import Vector

    cam.rotation_euler = Vector(direction).to_track_quat("-Z", "Y").to_euler()
    return cam


def render_preview_in_scene(scene, armature, output: str, frame_start: int | None = None,
                            frame_end: int | None = None, progress=None, style: str = "SKELETON",
                            frame_step: int = DEFAULT_FRAME_STEP) -> dict:
    """Render the preview MP4 in *this* process; returns {"output", "frames", "fps", "audio", ...}.

    SKELETON only reads the scene (its current frame is put back); WORKBENCH changes render settings and
    adds objects: use it on a copy, headless, as the panel does.
    """
    check_smplx_armature(armature)
    take = playing_take(armature)
    first = frame_start if frame_start is not None else (take.frame_start if take else scene.frame_start)
    last = frame_end if frame_end is not None else (take.frame_end if take else scene.frame_end)
    if last < first:
        raise EchoMaskError(f"Nothing to render: frames {first}–{last}.")
    output = os.path.abspath(output)
    if not output.lower().endswith(".mp4"):
        output += ".mp4"
    if not os.path.isdir(os.path.dirname(output)):
        raise EchoMaskError(f"Cannot write {output}: its folder does not exist.")
    style = style.upper()
    if style == "SKELETON":
        return preview_skeleton.render_skeleton_preview(scene, armature, output, int(first), int(last),
                                                        frame_step, progress)
    if style != "WORKBENCH":
        raise EchoMaskError(f"Unknown preview style '{style}' (known: skeleton, workbench).")
    reason = preview_skeleton.ffmpeg_missing_reason()
    if reason:
        raise EchoMaskError(reason)
    return _render_workbench(scene, armature, output, int(first), int(last), progress)


def _render_workbench(scene, armature, output: str, first: int, last: int, progress=None) -> dict:
    """The shaded 3D render of every frame (changes the scene's render settings: a copy only)."""
    has_mesh = any(child.type == "MESH" for child in armature.children)
    if not has_mesh:
        _stick_figure(armature)
    if scene.camera is None:
        scene.camera = _framing_camera(scene, armature, first, last)
    render = scene.render
    render.engine = "BLENDER_WORKBENCH"
    render.resolution_x, render.resolution_y = PREVIEW_SIZE
    render.resolution_percentage = 100
    # The sequencer must stay on, or the video has no sound; muting its picture strips makes Blender render
    # the 3D scene instead of the edit (this runs on a copy of the file).
    render.use_sequencer = True
    editor = scene.sequence_editor
    if editor is not None:
        for strip in (editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all):
            if strip.type != "SOUND":
                strip.mute = True
    preview_skeleton.set_h264_output(render, audio=compat.HAS_AUDASPACE, mixrate=48000)
    render.filepath = output
    scene.frame_start, scene.frame_end = int(first), int(last)
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    if progress is not None:
        def on_frame(scn, *args):
            progress((scn.frame_current - first + 1) / (last - first + 1), f"Rendering frame {scn.frame_current}")

        bpy.app.handlers.render_post.append(on_frame)
    try:
        with bpy.context.temp_override(scene=scene):
            result = bpy.ops.render.render(animation=True, scene=scene.name)
    finally:
        if progress is not None:
            bpy.app.handlers.render_post.remove(on_frame)
    if "FINISHED" not in result or not os.path.isfile(output):
        raise EchoMaskError("The preview render did not produce a video (is this Blender built with FFmpeg?).")
    return {"output": output, "frames": last - first + 1, "fps": scene.render.fps / scene.render.fps_base,
            "audio": compat.HAS_AUDASPACE and bool(compat.all_sound_strips(scene))}


def task_render_preview(request: dict) -> dict:
    """Headless task (echomask_blender/headless.py): {"blend", "output", "armature"?, "frame_start"?, ...}."""
    path = request["blend"]
    if not os.path.isfile(path):
        raise EchoMaskError(f".blend file not found: {path}")
    bpy.ops.wm.open_mainfile(filepath=path)
    scene = bpy.context.scene
    name = request.get("armature")
    armatures = [o for o in scene.objects if o.type == "ARMATURE"]
    # A rig playing an EchoMask take first; else one animated by an imported take (`generate`/`import-take`).
    armature = bpy.data.objects.get(name) if name else next(
        (o for o in armatures if playing_take(o) is not None),
        next((o for o in armatures if o.animation_data and o.animation_data.action), None))
    if armature is None:
        raise EchoMaskError("No animated rig in this file (give --armature NAME).")

    def progress(fraction, message):
        if request.get("events"):
            emit("progress", fraction=round(fraction, 4), message=message)

    return render_preview_in_scene(scene, armature, request["output"], request.get("frame_start"),
                                   request.get("frame_end"), progress, style=request.get("style") or "SKELETON",
                                   frame_step=request.get("frame_step") or DEFAULT_FRAME_STEP)


# ------------------------------------------------------------------------------------------ operators

class ECHOMASK_OT_speech_sync(bpy.types.Operator):
    """Make viewport playback follow the speech (Sync to Audio, audio scrubbing) for lip-synced previews"""

    bl_idname = "echomask.speech_sync"
    bl_label = "Lip-Synced Playback"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        count = ensure_speech_sync(context.scene)
        if count == 0:
            self.report({"WARNING"}, "Playback syncs to audio, but the scene has no sound strip: add the speech "
                                     "in the Video Sequencer (Generate from a file adds it).")
        else:
            self.report({"INFO"}, "Playback now follows the speech.")
        return {"FINISHED"}


def preview_command(blend: str, request_path: str) -> list[str]:
    """A background Blender (or, for the bpy module, this Python) running preview_job.py on `blend`."""
    binary = bpy.app.binary_path
    if binary and os.path.basename(binary).lower().startswith("blender"):
        return [binary, "--background", "--factory-startup", blend, "--python", SCRIPT, "--", request_path]
    return [sys.executable, SCRIPT, "--", request_path]


_PREVIEW: dict = {}


def start_preview(context, output: str, style: str = "SKELETON", frame_step: int = DEFAULT_FRAME_STEP) -> WorkerJob:
    reason = preview_skeleton.ffmpeg_missing_reason()
    if reason:
        raise EchoMaskError(reason)
    settings = context.scene.echomask
    rig = settings.target
    check_smplx_armature(rig)
    if playing_take(rig) is None:
        raise EchoMaskError("The rig has no playing take to preview: generate one first.")
    folder = tempfile.mkdtemp(prefix="echomask_preview_")
    blend = os.path.join(folder, "preview.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend, copy=True, check_existing=False)
    request = {"blend": blend, "output": os.path.abspath(bpy.path.abspath(output)), "armature": rig.name,
               "events": True, "style": style.upper(), "frame_step": int(frame_step)}
    request_path = os.path.join(folder, "request.json")
    with open(request_path, "w") as f:
        json.dump(request, f)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    job = WorkerJob(preview_command(blend, request_path), cwd=folder, env=env)
    job.start()
    _PREVIEW.update(job=job, folder=folder, output=request["output"])
    return job


def finish_preview() -> None:
    job = _PREVIEW.pop("job", None)
    if job is not None:
        job.close()
    shutil.rmtree(_PREVIEW.pop("folder", ""), ignore_errors=True)


class ECHOMASK_OT_render_preview(DisabledReasonPoll, TimerModal, bpy.types.Operator):
    """Render a small MP4 of the playing take with its speech in the background"""

    bl_idname = "echomask.render_preview"
    bl_label = "Render Preview"
    bl_options = {"REGISTER"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})
    style: bpy.props.EnumProperty(name="Style", items=STYLES, default="SKELETON")
    every_frame: bpy.props.BoolProperty(
        name="Every Frame", default=False,
        description="Skeleton style: draw every frame instead of every 2nd (30 fps for a 30 fps take: smoother, "
                    "about twice as long)")

    @classmethod
    def disabled_reason(cls, context):
        if _PREVIEW.get("job") is not None:
            return "A preview is rendering"
        return playing_take_reason(context)

    def invoke(self, context, event):
        take = playing_take(context.scene.echomask.target)
        folder = os.path.dirname(bpy.data.filepath) or tempfile.gettempdir()
        self.filepath = os.path.join(folder, bpy.path.clean_name(take.name) + "_preview.mp4")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            start_preview(context, self.filepath, style=self.style,
                          frame_step=1 if self.every_frame or self.style == "WORKBENCH" else DEFAULT_FRAME_STEP)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        return self._start_timer_modal(context, 0.25)

    def modal(self, context, event):
        job = _PREVIEW.get("job")
        if job is None:
            return self._end(context, {"CANCELLED"})
        if event is not None and event.type == "ESC":
            job.cancel()
        status = job.tick()
        if context.workspace is not None:
            context.workspace.status_text_set(f"EchoMask preview: {status.message} {int(status.fraction * 100)}%"
                                              if not status.state.finished else None)
        if not status.state.finished:
            return {"PASS_THROUGH"}
        output = _PREVIEW.get("output")
        if status.state == JobState.DONE:
            self.report({"INFO"}, f"Preview written: {output}")
        elif status.state == JobState.ERROR:
            self.report({"ERROR"}, status.error)
        finish_preview()
        return self._end(context, {"FINISHED"} if status.state == JobState.DONE else {"CANCELLED"})

    def cancel(self, context):
        job = _PREVIEW.get("job")
        if job is not None:
            job.cancel()
        finish_preview()
        self._end(context, None)



CLASSES = (ECHOMASK_OT_speech_sync, ECHOMASK_OT_render_preview)
