"""Benchmark: click Generate -> the take plays, for 60 s of speech, with the warm worker and without it.

    python bench/bench_warm_worker.py [--seconds 60] [--runs 3] [--one-shot-runs 2] [--weights PATH] [--python PY]
                                      [--new-speech-runs 1]

Runs headless with the bpy module (the project's .venv: Blender 5.0 + torch) and the REAL worker
(`python -m core.jobs.worker`, weights/echomask_small.safetensors by default). The speech is
examples/example_speech.wav looped to --seconds, on a sound strip (the scene mixdown, as the panel's default
source) or as a file on Blender builds without audio. Blender's timer is simulated as in
bench_blender_job.py: `step()` every 0.1 s while the worker runs, every 0.01 s while keys are written.

Printed per run: click -> playing take, the click itself (checks, the speech mixdown, sending the request),
the worker's part (start-up included) and the generation as the worker measured it. Run 1 of the warm series
is the cold start (Python, torch, model); runs 2+ reuse the warm worker with the same line and a new seed
(the animator's loop: its speech features are remembered), then --new-speech-runs with other speech (the
features computed again). The one-shot series (warm worker off) starts a process every time.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time
import wave

import numpy as np
from common import registered_empty_scene

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "example_speech.wav"


def looped_speech(path: str, seconds: float, offset: float = 0.0) -> str:
    """examples/example_speech.wav repeated (and cut) to `seconds`, same format, from `offset` seconds in."""
    with wave.open(str(EXAMPLE), "rb") as w:
        params = w.getparams()
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, params.nchannels)
    n = int(round(seconds * params.framerate))
    start = int(round(offset * params.framerate)) % len(samples)
    looped = np.concatenate([samples] * (n // len(samples) + 2))[start:start + n]
    with wave.open(path, "wb") as w:
        w.setnchannels(params.nchannels)
        w.setsampwidth(params.sampwidth)
        w.setframerate(params.framerate)
        w.writeframes(looped.astype(np.int16).tobytes())
    return path


def click_to_take(context, generate_op) -> dict:
    """One Generate, stepped as the modal timer does; seconds from the click to the take playing."""
    t_click = time.perf_counter()
    run = generate_op.start_generation(context)
    click = time.perf_counter() - t_click
    t_job_end = None
    while not run.finished:
        phase = run.phase
        time.sleep(0.1 if phase == "JOB" else 0.01)
        run.step(context)
        if phase == "JOB" and run.phase != "JOB":
            t_job_end = time.perf_counter()
    total = time.perf_counter() - t_click
    if run.phase != "FINISHED":
        raise SystemExit(f"error: generation ended in {run.phase}: {run.error}")
    done = run.job.status().result or {}
    return {"total": total, "click": click, "worker": (t_job_end or t_click) - t_click - click,
            "generation": done.get("seconds"),
            "fresh": getattr(run.job, "fresh_worker", True), "take": run.result}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3, help="Generates with the warm worker (the first is cold)")
    parser.add_argument("--one-shot-runs", type=int, default=2, help="Generates with the warm worker off")
    parser.add_argument("--new-speech-runs", type=int, default=1,
                        help="warm Generates of other speech after the warm runs (features not remembered)")
    parser.add_argument("--weights", default=str(ROOT / "weights" / "echomask_small.safetensors"))
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="the worker's Python (needs torch; default: the project's .venv)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.weights):
        print(f"error: no model weights at {args.weights}", file=sys.stderr)
        return 2
    python = args.python if os.path.isfile(args.python) else sys.executable
    tmp = tempfile.mkdtemp(prefix="echomask_bench_warm_")
    os.environ["ECHOMASK_RUNTIME_DIR"] = os.path.join(tmp, "runtime")
    os.environ["ECHOMASK_PYTHON"] = python
    os.environ.pop("ECHOMASK_WORKER_SCRIPT", None)
    os.environ["ECHOMASK_WEIGHTS"] = args.weights

    import bpy

    echomask, context, scene = registered_empty_scene(args.seconds)
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.rigs import rig
    from echomask.echomask_blender.run import generate_op, worker_service
    from echomask.echomask_blender.takes import nla as takes
    arm = rig.create_smplx_armature(context)
    speech = looped_speech(os.path.join(tmp, "speech.wav"), args.seconds)
    settings = scene.echomask
    settings.target = arm
    def use_speech(path):
        if compat.HAS_AUDASPACE:
            for strip in compat.all_sound_strips(scene):
                strip.mute = True                    # the mixdown hears only the new line
            compat.new_sound_strip(scene, os.path.basename(path), path, 1)
            settings.audio_source = "MIX"
        else:
            settings.audio_source = "FILE"
            settings.audio_file = path

    use_speech(speech)
    settings.device = "CPU"

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"Blender {bpy.app.version_string}, {os.cpu_count()} CPU cores"
          + (f", load average {load[0]:.1f} at start" if load else "") + f"; worker Python {python}")
    print(f"speech: {EXAMPLE.name} looped to {args.seconds:.0f} s; model {args.weights}; device CPU")
    print("run                                 click -> take   click    worker   generation (worker's own)")
    series = []
    os.environ["ECHOMASK_WARM_WORKER"] = "1"
    worker_service.stop()
    for i in range(args.runs):
        settings.seed = i
        r = click_to_take(context, generate_op)
        series.append(("cold start" if r["fresh"] else "warm, same line, new seed", r))
    for i in range(args.new_speech_runs):
        use_speech(looped_speech(os.path.join(tmp, f"speech_{i + 1}.wav"), args.seconds, offset=7.3 * (i + 1)))
        r = click_to_take(context, generate_op)
        series.append(("cold start" if r["fresh"] else "warm, new speech", r))
    worker_service.stop()
    os.environ["ECHOMASK_WARM_WORKER"] = "0"
    for i in range(args.one_shot_runs):
        settings.seed = 100 + i
        series.append(("warm worker off (one-shot)", click_to_take(context, generate_op)))
    for n, (kind, r) in enumerate(series, 1):
        gen = f"{r['generation']:7.2f} s" if r["generation"] is not None else "      ?"
        print(f"#{n} {kind:<32} {r['total']:7.2f} s {r['click']:6.2f} s {r['worker']:7.2f} s   {gen}")
    for kind in dict.fromkeys(k for k, _ in series):
        values = [r["total"] for k, r in series if k == kind]
        print(f"{kind}: mean {np.mean(values):.2f} s over {len(values)} run(s)")
    print("target: <= 3 s click -> take for the second and later Generates on 2 cores")
    print(f"playing: '{takes.playing_take(arm).name}'")
    echomask.unregister()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
