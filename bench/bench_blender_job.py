"""Benchmark: Generate -> keys in the scene for 60 s of speech, and the longest main-thread block.

    python bench/bench_blender_job.py [--seconds 60] [--worker auto|fake|real] [--weights PATH]

Runs headless with the bpy module. Blender's timer is simulated: the run's `step()` is called every
0.1 s while the worker runs and every 0.01 s while keys are written, exactly what the modal operator does.
Every main-thread piece is timed: the Generate click (checks, speech mixdown, starting the worker), each
step (polling, loading the take, writing a few F-curves) and the one undoable Apply step.
--worker real uses `python -m core.jobs.worker` (weights/echomask_small.safetensors, or --weights); auto picks
real when the generator and its weights exist, else the fake worker (tests/fake_worker.py: the Blender-side
figures are then real, the generation time is not).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
from common import registered_empty_scene, write_wav

ROOT = pathlib.Path(__file__).resolve().parent.parent
V50_PYTHON = "/tmp/envs/v50/bin/python"


def _speech(path: str, seconds: float, rate: int = 16000) -> str:
    """Speech-like audio: syllable-rate bursts of a voiced tone with pauses."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * (np.sin(2 * np.pi * 0.3 * t) > -0.6)
    x = 0.3 * envelope * np.sin(2 * np.pi * (140 + 30 * np.sin(2 * np.pi * 0.5 * t)) * t)
    return write_wav(path, x, rate)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--worker", choices=("auto", "fake", "real"), default="auto")
    parser.add_argument("--weights", default=None, help="model bundle for --worker real (default: weights/...)")
    parser.add_argument("--python", default=None, help="the worker's Python (default: /tmp/envs/v50 or this one)")
    args = parser.parse_args(argv)

    weights = args.weights or str(ROOT / "weights" / "echomask_small.safetensors")
    real_ok = (ROOT / "core" / "inference.py").exists() and os.path.isfile(weights)
    worker = args.worker if args.worker != "auto" else ("real" if real_ok else "fake")
    if worker == "real" and not real_ok:
        print(f"error: the real worker needs core/generation/inference.py and {weights}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="echomask_bench_")
    os.environ["ECHOMASK_RUNTIME_DIR"] = os.path.join(tmp, "runtime")
    os.environ["ECHOMASK_PYTHON"] = args.python or (V50_PYTHON if os.path.isfile(V50_PYTHON) else sys.executable)
    if worker == "fake":
        os.environ["ECHOMASK_WORKER_SCRIPT"] = str(ROOT / "tests" / "fake_worker.py")
        os.environ.setdefault("ECHOMASK_FAKE_STEPS", "20")
        os.environ.setdefault("ECHOMASK_FAKE_DELAY", "0.05")
    else:
        os.environ.pop("ECHOMASK_WORKER_SCRIPT", None)
        os.environ["ECHOMASK_WEIGHTS"] = weights

    import bpy

    echomask, context, scene = registered_empty_scene(args.seconds)
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.rigs import rig
    from echomask.echomask_blender.run import generate_op
    from echomask.echomask_blender.takes import nla as takes

    frames = scene.frame_end
    arm = rig.create_smplx_armature(context)
    face = bpy.data.objects.new("face", bpy.data.meshes.new("face"))
    face.data.from_pydata([(0, 0, 1.5), (0.1, 0, 1.5), (0, 0.1, 1.5)], [], [(0, 1, 2)])
    scene.collection.objects.link(face)
    face.parent = arm
    face.shape_key_add(name="Basis")
    for i in range(100):
        face.shape_key_add(name=f"Exp{i:03d}")
    speech = _speech(os.path.join(tmp, "speech.wav"), args.seconds)
    settings = scene.echomask
    settings.target = arm
    if compat.HAS_AUDASPACE:
        compat.new_sound_strip(scene, "speech.wav", speech, 1)
        settings.audio_source = "MIX"
    else:
        settings.audio_source = "FILE"
        settings.audio_file = speech
    settings.device = "CPU"

    t_click = time.perf_counter()
    run = generate_op.start_generation(context)
    click = time.perf_counter() - t_click
    phases: dict[str, list[float]] = {}
    t_job_end = None
    while not run.finished:
        phase = run.phase
        time.sleep(0.1 if phase == "JOB" else 0.01)   # the modal timer's interval in each phase
        run.step(context)
        phases.setdefault(phase, []).append(run.step_seconds[-1])
        if phase == "JOB" and run.phase != "JOB":
            t_job_end = time.perf_counter()
    total = time.perf_counter() - t_click
    if run.phase != "FINISHED":
        print(f"error: generation ended in {run.phase}: {run.error}", file=sys.stderr)
        return 1
    info = takes.playing_take(arm)
    all_steps = run.step_seconds
    worst = max(max(all_steps), click)
    print(f"Blender {bpy.app.version_string}, {os.cpu_count()} CPU cores, worker: {worker}"
          + (" (tests/fake_worker.py: generation time is NOT the model's)" if worker == "fake" else f" ({weights})"))
    print(f"speech {args.seconds:.0f} s -> take '{info.name}', frames {info.frame_start}-{info.frame_end}, "
          f"{55 * 4 + 3} bone curves + 100 expression curves")
    print(f"Generate -> keys in the scene:           {total:7.2f} s")
    print(f"  worker (generation, off the main thread): {(t_job_end or t_click) - t_click - click:7.2f} s")
    print(f"  load + write keys + apply (main thread):  {sum(all_steps[len(phases.get('JOB', [])):]):7.3f} s in "
          f"{len(all_steps) - len(phases.get('JOB', []))} steps")
    print("Main-thread blocks (ms):")
    print(f"  Generate click (checks, mixdown, start):  {click * 1000:7.1f}")
    for phase in ("JOB", "LOAD", "STAGE", "APPLY"):
        values = phases.get(phase, [])
        if values:
            print(f"  {phase:<6} steps: {len(values):4d}   max {max(values) * 1000:7.1f}   "
                  f"mean {np.mean(values) * 1000:6.1f}")
    link = getattr(run.staged, "link_seconds", None)
    if link is not None and phases.get("APPLY"):
        print(f"  APPLY = linking the take {link * 1000:.1f} ms + Blender's undo snapshot and operator overhead "
              f"{(phases['APPLY'][0] - link) * 1000:.1f} ms")
    print(f"Longest main-thread block: {worst * 1000:.1f} ms (target < 100 ms) -> "
          f"{'OK' if worst < 0.1 else 'OVER TARGET'}")
    echomask.unregister()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
