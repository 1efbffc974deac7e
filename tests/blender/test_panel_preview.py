"""Preview: lip-synced playback settings, and the small MP4 with the speech (in-process and in the background)."""
import os
import subprocess
import sys

import numpy as np

from blender_helpers import ctx, registered, synthetic_take  # noqa: F401
from conftest import requires_bpy
from studio_helpers import ROOT, add_sound_strip, data_snapshot, make_rig, settings_for, write_wav

pytestmark = requires_bpy


def _scene_with_take(ctx, tmp_path, frames=12):
    from echomask.echomask_blender import compat, takes

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


def test_render_preview_writes_a_small_mp4_with_the_speech(ctx, tmp_path):
    from echomask.echomask_blender import compat, preview

    rig = _scene_with_take(ctx, tmp_path)
    out = preview.render_preview_in_scene(ctx.scene, rig, str(tmp_path / "preview"))
    assert out.endswith("preview.mp4") and os.path.getsize(out) > 1000
    data = open(out, "rb").read()
    assert b"ftyp" in data[:32] and b"avc1" in data            # an MP4 with H.264 video
    if compat.HAS_AUDASPACE:
        assert _audio_peak(out) > 0.05                           # the speech is in it, not silence
    else:
        assert b"mp4a" not in data                               # no Audaspace: video only, said in the docs


def test_background_preview_leaves_the_scene_untouched(ctx, tmp_path):
    """The panel's Render Preview: a saved copy is rendered by another process speaking the job protocol."""
    from echomask.echomask_blender import preview

    _scene_with_take(ctx, tmp_path, frames=6)
    render_before = (ctx.scene.render.engine, ctx.scene.render.filepath, ctx.scene.render.resolution_x)
    snap = data_snapshot(ctx.scene)
    job = preview.start_preview(ctx, str(tmp_path / "bg.mp4"))
    status = job.wait(240)
    preview.finish_preview()
    assert status.state.name == "DONE", status.error
    assert os.path.getsize(tmp_path / "bg.mp4") > 1000
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
