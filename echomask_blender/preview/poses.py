"""The fast Render Preview: the posed skeleton drawn with numpy, encoded by Blender's own FFmpeg.

No 3D render and no GL, so it runs the same in a real Blender, headless, and on a machine without a GPU:
1. poses: the scene is stepped through the take (`frame_set`, with meshes left out of the evaluation), and
   each frame's bone matrices are read in one `foreach_get`; face landmarks (lips, chin, nose) ride on the
   head and jaw bones;
2. sound: the scene's sound over the take's frames is mixed down to a WAV (offsets, trims, volume and
   mutes as Blender plays them);
3. video: a temporary scene holds only that WAV as a sound strip and a camera; a tiny Python render engine
   hands Blender each frame's picture (preview_draw.py), and Blender's FFmpeg writes H.264 + AAC.
Frames can be skipped (`frame_step` 2: 15 fps for a 30 fps take); the sound stays whole, so the picture
keeps time with it. The animator's scene is only read: its current frame and the meshes' viewport
visibility are put back, and the temporary scene, camera, sound and engine are removed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time

import bpy
import numpy as np

from ...core.motion import skeleton
from ...core.errors import EchoMaskError
from . import draw as preview_draw, mp4 as preview_mp4
from .. import compat
from ..rigs.rig import rig_frames

ENGINE_ID = "ECHOMASK_PREVIEW_SKETCH"
AUDIO_RATE = 48000


HAS_FFMPEG = bool(getattr(bpy.app.build_options, "codec_ffmpeg", True))


def ffmpeg_missing_reason() -> str | None:
    """Why this Blender cannot write the MP4, or None."""
    if not HAS_FFMPEG:
        return ("This Blender build has no FFmpeg, so it cannot write MP4 videos. Use an official Blender "
                "download (they all include FFmpeg).")
    return None


# ----------------------------------------------------------------------------------------------- poses

def _joint_bones(armature) -> dict[str, str]:
    """SMPL-X joint -> the rig's bone: the bones' own names, or a character rig's applied bone map."""
    from ..rigs import retarget

    bones = armature.pose.bones
    if retarget.is_mapped(armature):
        bone_map = retarget.stored_map(armature)
        return {row.joint: row.bone for row in bone_map.rows if row.enabled and row.bone and row.bone in bones}
    return {name: name for name in skeleton.JOINT_NAMES if name in bones}


class PoseReader:
    """Reads `PosedFrame`s from an armature at the scene's current frame."""

    def __init__(self, armature):
        self.armature = armature
        frames = rig_frames(armature)
        joint_bones = _joint_bones(armature)
        names = list(armature.pose.bones.keys())
        self.n_bones = len(names)
        # column j of the (55,) joint table: the pose bone index, or -1 (drawn as missing)
        self.bone_of_joint = np.array([names.index(joint_bones[j]) if j in joint_bones else -1
                                       for j in skeleton.JOINT_NAMES])
        bones = armature.data.bones
        rest = np.array([np.array(bones[n].matrix_local) for n in names], np.float64)
        self.rest_inverse = np.linalg.inv(rest)
        # model axes -> armature space (with the rig's units), for the face landmarks given in metres
        self.model_to_armature = frames.scale * frames.model_frame
        self.scale = frames.scale
        head, jaw = (self._rest_head(joint_bones, n) for n in ("head", "jaw"))
        self.head_points = self._anchor(head, [preview_draw.HEAD_CENTRE, preview_draw.NOSE, *preview_draw.UPPER_LIP])
        self.jaw_points = self._anchor(jaw, [*preview_draw.LOWER_LIP, preview_draw.CHIN])
        self._matrices = np.empty(self.n_bones * 16, np.float32)

    def _rest_head(self, joint_bones, joint) -> np.ndarray | None:
        bone = joint_bones.get(joint)
        return np.array(self.armature.data.bones[bone].head_local, np.float64) if bone else None

    def _anchor(self, rest_head, offsets) -> np.ndarray | None:
        if rest_head is None:
            return None
        return rest_head + np.asarray(offsets, np.float64) @ self.model_to_armature.T

    def axes_world(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The character's left, up and forward at rest, in world space."""
        world = np.array(self.armature.matrix_world)[:3, :3] @ self.model_to_armature
        return world[:, 0], world[:, 1], world[:, 2]

    def read(self) -> preview_draw.PosedFrame:
        self.armature.pose.bones.foreach_get("matrix", self._matrices)
        # foreach_get gives each matrix column by column
        posed = self._matrices.reshape(self.n_bones, 4, 4).transpose(0, 2, 1).astype(np.float64)
        world = np.array(self.armature.matrix_world, np.float64)
        joints = np.full((skeleton.NUM_JOINTS, 3), np.nan)
        have = self.bone_of_joint >= 0
        heads = posed[self.bone_of_joint[have], :3, 3]
        joints[have] = heads @ world[:3, :3].T + world[:3, 3]

        def ride(points, joint):
            """Rest points carried by the joint's bone (its pose relative to rest), in world space."""
            bone = self.bone_of_joint[skeleton.JOINT_INDEX[joint]]
            if points is None or bone < 0:
                return np.full((len(points) if points is not None else 5, 3), np.nan)
            moved = (posed[bone] @ self.rest_inverse[bone])[:3]
            local = points @ moved[:, :3].T + moved[:, 3]
            return local @ world[:3, :3].T + world[:3, 3]

        on_head, on_jaw = ride(self.head_points, "head"), ride(self.jaw_points, "jaw")
        return preview_draw.PosedFrame(joints=joints, head_centre=on_head[0], nose=on_head[1],
                                       upper_lip=on_head[2:6], lower_lip=on_jaw[0:4], chin=on_jaw[4])


@contextlib.contextmanager
def _meshes_left_out(scene, armature):
    """Leave meshes out of the scene's evaluation while stepping frames (the pose is all that is read; a
    skinned SMPL-X mesh with 100 shape keys costs far more than the bones). Put back afterwards."""
    keep = set()
    parent = armature
    while parent is not None:
        keep.add(parent.name)
        parent = parent.parent
    for bone in armature.pose.bones:
        for constraint in bone.constraints:
            target = getattr(constraint, "target", None)
            if target is not None:
                keep.add(target.name)
    hidden = [obj for obj in scene.objects if obj.type == "MESH" and obj.name not in keep and not obj.hide_viewport]
    for obj in hidden:
        obj.hide_viewport = True
    try:
        yield
    finally:
        for obj in hidden:
            obj.hide_viewport = False


def sample_poses(scene, armature, frames, progress=None) -> list[preview_draw.PosedFrame]:
    """The armature's pose at each of `frames` (scene frames); the scene's current frame is put back."""
    reader = PoseReader(armature)
    saved = scene.frame_current, scene.frame_subframe
    out = []
    try:
        with _meshes_left_out(scene, armature):
            for i, frame in enumerate(frames):
                scene.frame_set(int(frame))
                out.append(reader.read())
                if progress is not None and i % 50 == 0:
                    progress(i / len(frames), f"Reading poses {i}/{len(frames)}")
    finally:
        scene.frame_set(saved[0], subframe=saved[1])
    return out


def views_for(armature, poses) -> preview_draw.Views:
    """The take's projection axes (the rig's rest orientation) and height range (every sampled pose)."""
    reader = PoseReader(armature)
    left, up, forward = reader.axes_world()
    return preview_draw.views_for_take(np.stack([p.joints for p in poses]), left, up, forward, scale=reader.scale)


# ----------------------------------------------------------------------------------------------- sound

def set_h264_output(render, *, audio: bool, mixrate: int) -> None:
    """Render settings for a small H.264 MP4 (AAC stereo sound when `audio`), fast rather than small."""
    settings = render.image_settings
    if hasattr(settings, "media_type"):   # 5.0: pick video before the container
        settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    ffmpeg = render.ffmpeg
    ffmpeg.format = "MPEG4"
    ffmpeg.codec = "H264"
    ffmpeg.constant_rate_factor = "MEDIUM"
    ffmpeg.ffmpeg_preset = "REALTIME"
    ffmpeg.audio_codec = "AAC" if audio else "NONE"
    ffmpeg.audio_mixrate = mixrate
    ffmpeg.audio_channels = "STEREO"


def mix_speech(scene, first: int, last: int, path: str) -> str | None:
    """The scene's sound for frames first..last as a 48 kHz stereo WAV; None when there is none to mix."""
    from ..run.speech_source import mixdown_frames

    if not compat.HAS_AUDASPACE or not any(not s.mute for s in compat.all_sound_strips(scene)):
        return None
    return mixdown_frames(scene, first, last, path, rate=AUDIO_RATE, channels="STEREO",
                          failure=EchoMaskError("Blender could not mix the scene's sound for the preview "
                                                "(sound mixdown failed)."))


# ----------------------------------------------------------------------------------------------- video

class _Sketch:
    """What the render engine draws: frame i of the encode scene is poses[i - 1]."""

    def __init__(self, drawer, poses, progress):
        self.drawer, self.poses, self.progress = drawer, poses, progress
        self.drawn = 0
        self.seconds = 0.0

    def pixels(self, frame: int) -> np.ndarray:
        t = time.perf_counter()
        index = min(max(frame - 1, 0), len(self.poses) - 1)
        image = self.drawer.draw(self.poses[index], index / max(len(self.poses) - 1, 1))
        self.drawn += 1
        self.seconds += time.perf_counter() - t
        if self.progress is not None and (self.drawn % 25 == 0 or self.drawn == len(self.poses)):
            self.progress(self.drawn / len(self.poses), f"Drawing frame {self.drawn}/{len(self.poses)}")
        return image


_SKETCH: list[_Sketch] = []   # the engine class cannot be handed arguments: the sketch being rendered


class PreviewSketchEngine(bpy.types.RenderEngine):
    """Hands Blender's render pipeline (and so its FFmpeg writer) the numpy-drawn frames."""

    bl_idname = ENGINE_ID
    bl_label = "EchoMask Preview Sketch"

    def render(self, depsgraph):
        scene = depsgraph.scene
        width, height = preview_draw.SIZE
        image = _SKETCH[-1].pixels(scene.frame_current)
        result = self.begin_result(0, 0, width, height)
        result.layers[0].passes["Combined"].rect.foreach_set(image.reshape(-1))
        self.end_result(result)


@contextlib.contextmanager
def _engine_registered():
    """The engine exists only while a preview renders (it is no choice for the animator's own renders)."""
    registered_here = not PreviewSketchEngine.is_registered
    if registered_here:
        bpy.utils.register_class(PreviewSketchEngine)
    try:
        yield
    finally:
        if registered_here:
            bpy.utils.unregister_class(PreviewSketchEngine)


def _encode_scene(name: str, fps: int, fps_base: float, n_frames: int, wav: str | None, output: str):
    scene = bpy.data.scenes.new(name)
    camera = bpy.data.objects.new(name, bpy.data.cameras.new(name))   # the pipeline refuses to run without one
    scene.collection.objects.link(camera)
    scene.camera = camera
    render = scene.render
    render.engine = ENGINE_ID
    render.resolution_x, render.resolution_y = preview_draw.SIZE
    render.resolution_percentage = 100
    render.fps, render.fps_base = fps, fps_base
    render.use_sequencer = True       # the sound strip: FFmpeg mixes the scene's audio into the MP4
    render.use_compositing = False
    render.dither_intensity = 0.0     # flat colours compress far better undithered
    render.filepath = output
    scene.view_settings.view_transform = "Standard"   # the engine gives linear sRGB; show it as it is
    scene.view_settings.look = "None"
    scene.view_settings.exposure, scene.view_settings.gamma = 0.0, 1.0
    scene.frame_start, scene.frame_end = 1, n_frames
    set_h264_output(render, audio=bool(wav), mixrate=AUDIO_RATE)
    if wav:
        compat.new_sound_strip(scene, "speech", wav, 1, channel=1)
    return scene, camera


def _remove_encode_scene(scene, camera) -> None:
    sounds = [s.sound for s in compat.all_sound_strips(scene) if getattr(s, "sound", None) is not None]
    cam_data = camera.data
    bpy.data.objects.remove(camera)
    bpy.data.cameras.remove(cam_data)
    bpy.data.scenes.remove(scene)
    for sound in sounds:
        if sound.users == 0:
            bpy.data.sounds.remove(sound)


def render_skeleton_preview(scene, armature, output: str, first: int, last: int, frame_step: int = 2,
                            progress=None) -> dict:
    """Write the MP4 of frames first..last (every `frame_step`-th frame, the sound whole); returns
    {"output", "frames" (video frames), "fps" (video rate), "audio" (bool), "timings" {phase: s}}."""
    reason = ffmpeg_missing_reason()
    if reason:
        raise EchoMaskError(reason)
    frame_step = max(int(frame_step), 1)
    timings = {}
    report = progress or (lambda fraction, message: None)
    work = tempfile.mkdtemp(prefix="echomask_sketch_")
    try:
        t = time.perf_counter()
        frames = list(range(int(first), int(last) + 1, frame_step))
        poses = sample_poses(scene, armature, frames, lambda f, m: report(0.25 * f, m))
        timings["poses"] = time.perf_counter() - t
        t = time.perf_counter()
        wav = mix_speech(scene, int(first), int(last), os.path.join(work, "speech.wav"))
        timings["sound"] = time.perf_counter() - t

        t = time.perf_counter()
        drawer = preview_draw.Drawer(views_for(armature, poses))
        sketch = _Sketch(drawer, poses, lambda f, m: report(0.25 + 0.75 * f, m))
        video = os.path.join(work, "preview.mp4")
        with _engine_registered():
            encode, camera = _encode_scene("EchoMask preview", scene.render.fps,
                                           scene.render.fps_base * frame_step, len(poses), wav, video)
            _SKETCH.append(sketch)
            try:
                with bpy.context.temp_override(scene=encode):
                    result = bpy.ops.render.render(animation=True, scene=encode.name)
            finally:
                _SKETCH.pop()
                _remove_encode_scene(encode, camera)
        timings["draw+encode"] = time.perf_counter() - t
        timings["draw"] = sketch.seconds
        if "FINISHED" not in result or not os.path.isfile(video):
            raise EchoMaskError("Blender did not write the preview video (is this Blender built with FFmpeg?).")
        if wav is not None and not any(t["kind"] == "audio" for t in preview_mp4.read_mp4_tracks(video)):
            raise EchoMaskError("Blender wrote the preview without its sound (this build's FFmpeg has no AAC "
                                "encoder?). The video is not saved; use an official Blender download.")
        shutil.move(video, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fps = scene.render.fps / scene.render.fps_base / frame_step
    return {"output": output, "frames": len(poses), "fps": fps, "audio": wav is not None, "timings": timings}
