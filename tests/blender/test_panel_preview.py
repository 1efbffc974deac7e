"""Preview: lip-synced playback settings, and the small MP4 with the speech (in-process and in the background).

The default (skeleton) style is checked by reading its MP4 back: the tracks' durations from the MP4 boxes
(preview_mp4, every Blender version), the first picture decoded by Blender's own movie loading, the sound
with Audaspace where the build has it (not the PyPI 4.2 wheel: video only there).
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from blender_helpers import ctx, registered, synthetic_take  # noqa: F401
from conftest import requires_bpy
from studio_helpers import ROOT, add_sound_strip, data_snapshot, make_rig, settings_for, write_wav

pytestmark = requires_bpy


def _scene_with_take(ctx, tmp_path, frames=12):
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.takes import nla as takes

    ctx.scene.render.fps = 30
    ctx.scene.frame_start, ctx.scene.frame_end = 1, frames
    rig = make_rig(ctx, with_face=False)
    takes.write_new_take(rig, synthetic_take(n=frames, scale=0.5), name="talk", frame_start=1)
    if compat.HAS_AUDASPACE:
        add_sound_strip(ctx.scene, write_wav(tmp_path / "talk.wav", seconds=frames / 30.0), 1)
    settings_for(ctx, rig)
    return rig


def _audio_peak(path):
    import aud

    samples = aud.Sound(str(path)).data()
    return float(np.abs(samples).max()) if samples.size else 0.0


def test_speech_sync_sets_audio_sync_playback(ctx):
    import bpy

    ctx.scene.sync_mode = "NONE"
    assert bpy.ops.echomask.speech_sync() == {"FINISHED"}
    assert ctx.scene.sync_mode == "AUDIO_SYNC" and ctx.scene.use_audio_scrub


def _tracks(path):
    from echomask.echomask_blender.preview import mp4 as preview_mp4

    return {t["kind"]: t for t in preview_mp4.read_mp4_tracks(str(path))}


def _first_picture(path):
    """(H, W, 3) of the MP4's first frame, decoded by Blender (an Image of source MOVIE)."""
    import bpy

    image = bpy.data.images.load(str(path))
    try:
        pixels = np.empty(image.size[0] * image.size[1] * 4, np.float32)
        image.pixels.foreach_get(pixels)
        return pixels.reshape(image.size[1], image.size[0], 4)[..., :3]
    finally:
        bpy.data.images.remove(image)


def _figure_pixels(picture):
    """How many pixels are not the flat background (the background is the most common colour)."""
    flat = picture.reshape(-1, 3)
    background = np.median(flat, axis=0)
    return int((np.abs(flat - background).max(1) > 0.1).sum())


@pytest.mark.parametrize("style,frames,fps", [("SKELETON", 45, 15.0), ("WORKBENCH", 6, 30.0)])
def test_render_preview_writes_a_small_mp4_with_the_speech(ctx, tmp_path, style, frames, fps):
    """The skeleton style by default draws every 2nd frame (15 fps), the sound whole; Workbench every frame."""
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.preview import render_preview as preview

    rig = _scene_with_take(ctx, tmp_path, frames=frames)
    result = preview.render_preview_in_scene(ctx.scene, rig, str(tmp_path / "preview"), style=style)
    out = result["output"]
    assert result["fps"] == fps and result["frames"] == int(np.ceil(frames * fps / 30.0))
    assert out.endswith("preview.mp4") and os.path.getsize(out) > 1000
    data = open(out, "rb").read()
    assert b"ftyp" in data[:32] and b"avc1" in data            # an MP4 with H.264 video
    tracks = _tracks(out)
    take_seconds = frames / 30.0
    assert abs(tracks["video"]["duration"] - take_seconds) <= 2 / 30.0
    if compat.HAS_AUDASPACE:
        assert result["audio"] and tracks["audio"]["codec"] == "mp4a"
        assert abs(tracks["audio"]["duration"] - take_seconds) <= 2 / 30.0   # the whole speech, no more
        assert _audio_peak(out) > 0.05                           # the speech is in it, not silence
    else:
        assert "audio" not in tracks and b"mp4a" not in data      # no Audaspace: video only, said in the docs


@pytest.mark.parametrize("frame_step,fps,video_frames", [(2, 15.0, 31), (1, 30.0, 61)])
def test_skipped_frames_keep_the_whole_speech(ctx, tmp_path, frame_step, fps, video_frames):
    """An odd frame count at 15 fps, and every frame: the picture ends with the sound, within a frame."""
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.preview import render_preview as preview

    rig = _scene_with_take(ctx, tmp_path, frames=61)
    result = preview.render_preview_in_scene(ctx.scene, rig, str(tmp_path / "rate.mp4"), frame_step=frame_step)
    tracks = _tracks(result["output"])
    assert result["fps"] == fps and result["frames"] == tracks["video"]["frames"] == video_frames
    assert abs(tracks["video"]["duration"] - 61 / 30.0) <= 1 / 30.0 + 1e-6
    if compat.HAS_AUDASPACE:
        assert abs(tracks["audio"]["duration"] - 61 / 30.0) <= 2 / 30.0


def test_preview_pictures_show_the_rig_and_follow_its_pose(ctx, tmp_path):
    """The decoded first picture shows a figure; a preview starting at another pose pictures another one."""
    from echomask.echomask_blender.preview import render_preview as preview

    rig = _scene_with_take(ctx, tmp_path, frames=40)
    first = preview.render_preview_in_scene(ctx.scene, rig, str(tmp_path / "a.mp4"), frame_start=1, frame_end=4)
    later = preview.render_preview_in_scene(ctx.scene, rig, str(tmp_path / "b.mp4"), frame_start=36, frame_end=40)
    picture_a, picture_b = _first_picture(first["output"]), _first_picture(later["output"])
    assert _figure_pixels(picture_a) > 2000 and _figure_pixels(picture_b) > 2000
    assert np.abs(picture_a - picture_b).max(-1).__gt__(0.2).sum() > 500


def test_face_close_up_shows_the_jaw_opening(ctx):
    """The face views change when only the jaw turns: the mouth is readable, not just the body."""
    from echomask.echomask_blender.preview import draw as preview_draw, poses as preview_skeleton

    rig = make_rig(ctx, with_face=False)
    ctx.view_layer.update()
    reader = preview_skeleton.PoseReader(rig)
    closed = reader.read()
    jaw = rig.pose.bones["jaw"]
    jaw.rotation_mode = "XYZ"
    jaw.rotation_euler = (0.35, 0.0, 0.0)
    ctx.view_layer.update()
    opened = reader.read()
    assert np.linalg.norm(opened.chin - closed.chin) > 0.02               # the chin drops by centimetres
    assert np.allclose(opened.upper_lip, closed.upper_lip)                 # the upper lip rides the head
    views = preview_draw.views_for_take(np.stack([closed.joints]), *reader.axes_world(), scale=reader.scale)
    drawer = preview_draw.Drawer(views)
    a, b = drawer.draw(closed), drawer.draw(opened)
    x, y, w, h = preview_draw.PANELS["face_side"]
    changed = np.abs(a - b).max(-1) > 0.05
    assert changed[y:y + h, x:x + w].sum() > 100                           # visible in the close-up


def test_skeleton_preview_leaves_the_scene_as_it_was(ctx, tmp_path):
    """Rendered in this process: frame, render settings, scenes, selection, mesh visibility all kept."""
    import bpy

    from echomask.echomask_blender.preview import render_preview as preview, poses as preview_skeleton

    rig = _scene_with_take(ctx, tmp_path, frames=20)
    face = make_rig(ctx, with_face=True)   # a second rig with a mesh: meshes are left out while reading poses
    face_mesh = next(o for o in face.children if o.type == "MESH")
    ctx.scene.frame_set(7)
    rig.select_set(True)
    ctx.view_layer.objects.active = face
    render = ctx.scene.render
    before = (render.engine, render.filepath, render.resolution_x, render.image_settings.file_format,
              ctx.scene.frame_current, ctx.scene.frame_start, ctx.scene.frame_end, face_mesh.hide_viewport,
              sorted(bpy.data.scenes.keys()), sorted(bpy.data.cameras.keys()), sorted(bpy.data.sounds.keys()),
              ctx.view_layer.objects.active.name, sorted(o.name for o in ctx.selected_objects))
    snap = data_snapshot(ctx.scene)
    preview.render_preview_in_scene(ctx.scene, rig, str(tmp_path / "kept.mp4"))
    after = (render.engine, render.filepath, render.resolution_x, render.image_settings.file_format,
             ctx.scene.frame_current, ctx.scene.frame_start, ctx.scene.frame_end, face_mesh.hide_viewport,
             sorted(bpy.data.scenes.keys()), sorted(bpy.data.cameras.keys()), sorted(bpy.data.sounds.keys()),
             ctx.view_layer.objects.active.name, sorted(o.name for o in ctx.selected_objects))
    assert after == before
    assert data_snapshot(ctx.scene) == snap
    assert not preview_skeleton.PreviewSketchEngine.is_registered      # the preview's engine is gone again


def test_preview_without_ffmpeg_says_so(ctx, tmp_path, monkeypatch):
    from echomask.core.errors import EchoMaskError
    from echomask.echomask_blender.preview import render_preview as preview, poses as preview_skeleton

    rig = _scene_with_take(ctx, tmp_path, frames=4)
    monkeypatch.setattr(preview_skeleton, "HAS_FFMPEG", False)
    for style in ("SKELETON", "WORKBENCH"):
        with pytest.raises(EchoMaskError, match="no FFmpeg"):
            preview.render_preview_in_scene(ctx.scene, rig, str(tmp_path / "x.mp4"), style=style)
    with pytest.raises(EchoMaskError, match="no FFmpeg"):
        preview.start_preview(ctx, str(tmp_path / "x.mp4"))
    assert not os.path.exists(tmp_path / "x.mp4")


def test_background_preview_can_be_cancelled(ctx, tmp_path):
    """Cancel stops the background Blender; no video (not even a partial one) is left at the destination."""
    from echomask.echomask_blender.preview import render_preview as preview

    _scene_with_take(ctx, tmp_path, frames=900)
    job = preview.start_preview(ctx, str(tmp_path / "cancelled.mp4"))
    folder = preview._PREVIEW["folder"]
    deadline = time.monotonic() + 120
    status = job.tick()
    while status.fraction <= 0.0 and not status.state.finished and time.monotonic() < deadline:
        time.sleep(0.05)
        status = job.tick()
    assert not status.state.finished, status.error
    job.cancel()
    status = job.wait(30)
    preview.finish_preview()
    assert status.state.name == "CANCELLED"
    assert not os.path.exists(tmp_path / "cancelled.mp4") and not os.path.exists(folder)
    assert list(tmp_path.glob("*.mp4")) == []


def test_background_preview_leaves_the_scene_untouched(ctx, tmp_path):
    """The panel's Render Preview: a saved copy is rendered by another process speaking the job protocol."""
    from echomask.echomask_blender.preview import render_preview as preview

    _scene_with_take(ctx, tmp_path, frames=6)
    render_before = (ctx.scene.render.engine, ctx.scene.render.filepath, ctx.scene.render.resolution_x)
    snap = data_snapshot(ctx.scene)
    job = preview.start_preview(ctx, str(tmp_path / "bg.mp4"))
    status = job.wait(240)
    preview.finish_preview()
    assert status.state.name == "DONE", status.error
    assert os.path.getsize(tmp_path / "bg.mp4") > 1000
    assert status.result["fps"] == 15.0 and status.result["frames"] == 3 and "poses" in status.result["timings"]
    assert (ctx.scene.render.engine, ctx.scene.render.filepath, ctx.scene.render.resolution_x) == render_before
    assert data_snapshot(ctx.scene) == snap


def test_headless_render_preview_from_the_command_line(ctx, tmp_path):
    import bpy

    _scene_with_take(ctx, tmp_path, frames=6)
    blend = str(tmp_path / "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    proc = subprocess.run([sys.executable, "-m", "core", "render-preview", blend, "-o", str(tmp_path / "cli.mp4")],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.path.getsize(tmp_path / "cli.mp4") > 1000
    bad = subprocess.run([sys.executable, "-m", "core", "render-preview", str(tmp_path / "none.blend"), "-o",
                          str(tmp_path / "x.mp4")], cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and ".blend file not found" in bad.stderr


def test_skeleton_preview_of_a_character_rig_through_its_bone_map(ctx, tmp_path):
    """A character's own rig (UE5 bone names, an applied bone map) is drawn through its map."""
    from echomask.core.retarget import solve
    from echomask.core.retarget.bone_map import load_bone_map, preset_path
    from echomask.echomask_blender.preview import render_preview as preview, poses as preview_skeleton
    from echomask.echomask_blender.rigs import bone_mapping

    import retarget_rigs

    obj = retarget_rigs.build_ue5_rig(ctx)
    bone_mapping.apply_bone_map(ctx, obj, load_bone_map(preset_path("ue5")), solve.RetargetOptions(),
                                synthetic_take(n=10, scale=0.3), name="ue", frame_start=1)
    ctx.view_layer.update()
    pose = preview_skeleton.PoseReader(obj).read()
    assert np.isfinite(pose.joints[[0, 15, 20, 21]]).all() and np.isfinite(pose.head_centre).all()
    result = preview.render_preview_in_scene(ctx.scene, obj, str(tmp_path / "ue5.mp4"), frame_start=1, frame_end=10)
    assert result["frames"] == 5 and _figure_pixels(_first_picture(result["output"])) > 1000
