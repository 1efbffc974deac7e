"""`python -m core import-take` end to end (a subprocess that runs echomask_blender/headless.py in turn)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from blender_helpers import ctx, fk_blender, registered, synthetic_take, world_heads, write_take  # noqa: F401
from studio_helpers import write_wav
from conftest import ROOT, requires_bpy, shared_path

pytestmark = requires_bpy


def _has_audaspace():
    from echomask.echomask_blender import compat

    return compat.HAS_AUDASPACE


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core", "import-take", *map(str, args)], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=300)


def _wav(path, seconds=1.0, rate=16000):
    return write_wav(path, seconds=seconds, rate=rate)  # stdlib wave: Blender has no soundfile


def _open(path):
    import bpy

    bpy.ops.wm.open_mainfile(filepath=str(path))
    return bpy.context


def test_cli_writes_blend_and_fbx_with_speech(ctx, tmp_path):
    from echomask.echomask_blender import compat

    take = synthetic_take(n=40, seed=4)
    take_path = write_take(tmp_path / "cli_take.npz", take)
    wav = _wav(tmp_path / "cli_take.wav")
    blend, fbx = tmp_path / "out.blend", tmp_path / "out.fbx"
    proc = _cli(take_path, "--audio", wav, "--blend", blend, "--fbx", fbx)
    if not _has_audaspace():  # the PyPI 4.2 wheel: a clear message, nothing written; then without speech
        assert proc.returncode == 2 and "no audio support" in proc.stderr, proc.stderr
        assert not blend.exists() and not fbx.exists()
        proc = _cli(take_path, "--blend", blend, "--fbx", fbx)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Imported 40 frames" in proc.stdout and str(blend) in proc.stdout and str(fbx) in proc.stdout
    assert fbx.stat().st_size > 10_000

    context = _open(blend)
    scene = context.scene
    rig = scene.objects["SMPLX"]
    assert rig.animation_data.action.name == "cli_take"
    assert (scene.frame_start, scene.frame_end, scene.render.fps) == (1, 40, 30)
    strips = compat.all_sound_strips(scene)
    if _has_audaspace():
        assert [compat.strip_content_start(s) for s in strips] == [1] and scene.sync_mode == "AUDIO_SYNC"
    pos, _ = fk_blender(take)
    scene.frame_set(21)
    np.testing.assert_allclose(world_heads(rig), pos[20], atol=1e-4)


def test_cli_resamples_to_a_requested_rate(ctx, tmp_path):
    take_path = write_take(tmp_path / "t.npz", synthetic_take(n=31))
    blend = tmp_path / "t24.blend"
    proc = _cli(take_path, "--fps", "24", "--blend", blend)
    assert proc.returncode == 0, proc.stderr
    scene = _open(blend).scene
    assert scene.render.fps == 24 and (scene.frame_start, scene.frame_end) == (1, 25)


def test_cli_bad_input_is_one_clear_line_and_writes_nothing(ctx, tmp_path):
    take = synthetic_take(n=10)
    take.poses[3, 5] = np.nan
    np.savez(tmp_path / "nan.npz", poses=take.poses, trans=take.trans, expressions=take.expressions)
    blend = tmp_path / "x.blend"
    proc = _cli(tmp_path / "nan.npz", "--blend", blend)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "NaN" in proc.stderr
    assert "Traceback" not in proc.stderr and not blend.exists()
    good = write_take(tmp_path / "good.npz", synthetic_take(n=10))
    proc = _cli(good, "--blend", tmp_path / "no_such_folder" / "x.blend")
    assert proc.returncode == 2 and "does not exist" in proc.stderr, proc.stderr


def test_headless_reports_unknown_tasks_and_missing_keys(tmp_path):
    request, result = tmp_path / "req.json", tmp_path / "res.json"
    for payload, words in (({"task": "nope"}, "Unknown Blender task 'nope'"),
                           ({"task": "import_take", "blend": str(tmp_path / "a.blend")}, "lacks the key 'take'")):
        request.write_text(json.dumps(payload))
        proc = subprocess.run([sys.executable, str(ROOT / "echomask_blender" / "headless.py"), str(request),
                               str(result)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1
        assert words in json.loads(result.read_text())["error"]


def test_cli_on_a_real_beat2_take_with_its_speech(ctx, tmp_path):
    take_path = shared_path("beat2_samples", "smplxflame_30", "2_scott_0_2_2.npz")
    wav = shared_path("beat2_samples", "wave16k", "2_scott_0_2_2.wav")
    blend, fbx = tmp_path / "beat2.blend", tmp_path / "beat2.fbx"
    args = [take_path, "--blend", blend, "--fbx", fbx] + (["--audio", wav] if _has_audaspace() else [])
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Imported 1804 frames (60.1 s)" in proc.stdout
    scene = _open(blend).scene
    assert scene.frame_end == 1804
    if not _has_audaspace():
        pytest.skip("speech part skipped: the PyPI bpy 4.2 wheel has no Audaspace (motion part passed)")
    from echomask.echomask_blender import compat

    (strip,) = compat.all_sound_strips(scene)
    assert compat.strip_content_start(strip) == 1 and abs(compat.strip_duration(strip) - 62.0 * 30) <= 1
