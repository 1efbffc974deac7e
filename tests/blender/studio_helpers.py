"""Helpers for the panel / job / takes / re-key / export tests (bpy 4.2 / 4.5 / 5.0).

The worker is tests/fake_worker.py (fast, no torch) run by ECHOMASK_PYTHON (the v50 env when present, as
the real worker needs it, else this Python); each test gets its own runtime folder. Headless bpy never
fires timers or calls modal(), so tests drive `GenerationRun.step()` by hand.
"""
from __future__ import annotations

import os
import pathlib
import sys
import wave

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAKE_WORKER = str(ROOT / "tests" / "fake_worker.py")
V50_PYTHON = "/tmp/envs/v50/bin/python"


def torch_python() -> str | None:
    """A Python with the core runtime (torch) for the real worker: ECHOMASK_REAL_WORKER_PYTHON, this
    workplace's v50 env, or the project's .venv (make test creates it)."""
    for candidate in (os.environ.get("ECHOMASK_REAL_WORKER_PYTHON"), V50_PYTHON, str(ROOT / ".venv" / "bin" / "python")):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def worker_python() -> str:
    """The Python that runs the fake worker (it needs numpy only)."""
    return os.environ.get("ECHOMASK_TEST_WORKER_PYTHON") or torch_python() or sys.executable


@pytest.fixture
def studio(ctx, tmp_path, monkeypatch):
    """An empty scene, the fake worker as the runtime, a private runtime folder."""
    monkeypatch.setenv("ECHOMASK_PYTHON", worker_python())
    monkeypatch.setenv("ECHOMASK_WORKER_SCRIPT", FAKE_WORKER)
    monkeypatch.setenv("ECHOMASK_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("ECHOMASK_FAKE_DELAY", "0.005")
    monkeypatch.delenv("ECHOMASK_FAKE_MODE", raising=False)
    ctx.scene.render.fps = 30
    ctx.scene.render.fps_base = 1.0
    yield ctx
    from echomask.echomask_blender.run import generate_op

    run = generate_op.current_run()
    if run is not None:  # a failed test must not leave a worker behind
        run.abort(ctx)


def write_wav(path, seconds=2.0, rate=16000, silent_head=0.0, channels=1, amplitude=0.4) -> str:
    """Speech-like test audio: bursts of a tone (so loudness, hence the fake jaw, goes up and down);
    `amplitude` 0 writes digital silence."""
    t = np.arange(int(seconds * rate)) / rate
    x = amplitude * np.sin(2 * np.pi * 190 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    x[t < silent_head] = 0.0
    pcm = (x * 32767).astype(np.int16)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, 1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return str(path)


def make_rig(ctx, with_face=True, n_expressions=4):
    """An EchoMask SMPL-X rig; with a tiny child mesh carrying Exp000.. shape keys (a stand-in face)."""
    import bpy

    from echomask.echomask_blender.rigs import rig

    arm = rig.create_smplx_armature(ctx)
    if with_face:
        me = bpy.data.meshes.new("face")
        me.from_pydata([(0, 0, 1.5), (0.1, 0, 1.5), (0, 0.1, 1.5)], [], [(0, 1, 2)])
        face = bpy.data.objects.new("face", me)
        ctx.scene.collection.objects.link(face)
        face.parent = arm
        face.shape_key_add(name="Basis")
        for i in range(n_expressions):
            face.shape_key_add(name=f"Exp{i:03d}")
    return arm


def add_sound_strip(scene, path, frame_start=1, name=None):
    from echomask.echomask_blender import compat

    return compat.new_sound_strip(scene, name or os.path.basename(path), str(path), frame_start)


def needs_audaspace():
    from echomask.echomask_blender import compat

    if not compat.HAS_AUDASPACE:
        pytest.skip("this bpy build (the PyPI 4.2 wheel) has no Audaspace: no sound strips or mixdown; "
                    "the file-source tests cover generation on it")


def settings_for(ctx, rig, **values):
    s = ctx.scene.echomask
    s.target = rig
    for key, value in values.items():
        setattr(s, key, value)
    return s


def data_snapshot(scene) -> dict:
    """Everything a failed or cancelled generation must leave exactly as it was."""
    import bpy

    from echomask.echomask_blender import compat

    snap = {
        "objects": sorted(bpy.data.objects.keys()),
        "actions": sorted(bpy.data.actions.keys()),
        "sounds": sorted(bpy.data.sounds.keys()),
        "range": (scene.frame_start, scene.frame_end),
        "sync": scene.sync_mode,
        "strips": sorted(s.name for s in compat.all_sound_strips(scene)),
    }
    for obj in bpy.data.objects:
        anim = obj.animation_data
        snap[f"anim:{obj.name}"] = None if anim is None else (
            anim.action.name if anim.action else None, [(t.name, t.mute) for t in anim.nla_tracks])
        if obj.type == "MESH" and obj.data.shape_keys is not None:
            kanim = obj.data.shape_keys.animation_data
            snap[f"keys:{obj.name}"] = None if kanim is None else [(t.name, t.mute) for t in kanim.nla_tracks]
    return snap


def all_keys(action, slot=None) -> dict:
    """{(path, index): dict of every per-key attribute array} for bit-exact comparisons."""
    from echomask.echomask_blender import compat

    out = {}
    for fc in compat.action_fcurves(action, slot):
        kp = fc.keyframe_points
        n = len(kp)
        rec = {}
        for name, size, dtype in (("co", 2, np.float32), ("handle_left", 2, np.float32),
                                  ("handle_right", 2, np.float32), ("interpolation", 1, np.int32),
                                  ("handle_left_type", 1, np.int32), ("handle_right_type", 1, np.int32),
                                  ("easing", 1, np.int32), ("type", 1, np.int32)):
            arr = np.empty(n * size, dtype)
            kp.foreach_get(name, arr)
            rec[name] = arr.reshape(n, size) if size > 1 else arr
        out[(fc.data_path, fc.array_index)] = rec
    return out


def undo_context():
    """Context in which ed.undo works headless (a window, an area and a region)."""
    import bpy

    window = bpy.context.window_manager.windows[0]
    area = next(a for a in window.screen.areas if a.type == "VIEW_3D")
    region = next(r for r in area.regions if r.type == "WINDOW")
    return bpy.context.temp_override(window=window, area=area, region=region)
