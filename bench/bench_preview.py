"""Time Render Preview of a 62 s take, as the panel runs it (a background Blender on a saved copy).

    python bench/bench_preview.py [--seconds 62] [--style skeleton|workbench] [--frame-step N] [--keep OUT.mp4]

The scene is built here: an EchoMask SMPL-X rig (bones only) with a synthetic take (every joint turns
smoothly, the jaw opens and closes, the root travels) of seconds x 30 frames and a sound strip of the same
length (tone bursts, so the MP4's audio can be checked). Building and saving the scene is not timed; the
figure is from pressing Render Preview (saving the copy, starting the background Blender) to the MP4 being
written, and the ratio to the take's own duration (target: <= 1.0, i.e. no slower than real time).
Prints one line per phase and the MP4's measured video/audio durations.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
from common import import_repo_as_package, write_wav

ROOT = pathlib.Path(__file__).resolve().parent.parent
FPS = 30


def speech_like_wav(path: str, seconds: float, rate: int = 16000) -> str:
    """Tone bursts at about 3 Hz (syllable rate), so the audio is audibly not silence."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * 190 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return write_wav(path, x, rate)


def synthetic_take(n: int):
    from echomask.core.motion.take import Take

    rng = np.random.default_rng(0)
    t = np.arange(n)[:, None] / FPS
    poses = 0.4 * rng.uniform(0.3, 1.0, (1, 165)) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5, (1, 165)) * t
                                                          + rng.uniform(0, 2 * np.pi, (1, 165)))
    poses[:, 66] = 0.25 + 0.2 * np.sin(2 * np.pi * 3 * t[:, 0])       # jaw (joint 22, x): talking
    trans = np.stack([0.3 * np.sin(0.2 * t[:, 0]), 0.9 + 0.02 * np.cos(t[:, 0]), 0.05 * t[:, 0]], -1)
    expressions = np.sin(2 * np.pi * rng.uniform(0.5, 2, (1, 100)) * t)
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=expressions.astype(np.float32), fps=float(FPS))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=62.0)
    parser.add_argument("--style", default="skeleton", choices=("skeleton", "workbench"))
    parser.add_argument("--frame-step", type=int, default=None,
                        help="skeleton style: draw every n-th frame (default: the panel's default)")
    parser.add_argument("--keep", default=None, help="copy the MP4 here")
    args = parser.parse_args(argv)

    extension = import_repo_as_package()
    extension.register()
    try:
        return run(args)
    finally:
        extension.unregister()   # the 4.5 module hung at exit with the add-on still registered


def run(args) -> int:
    import bpy

    from echomask.echomask_blender import compat
    from echomask.echomask_blender.preview import render_preview as preview, mp4 as preview_mp4
    from echomask.echomask_blender.rigs import rig
    from echomask.echomask_blender.takes import nla as takes

    frames = int(round(args.seconds * FPS))
    tmp = tempfile.mkdtemp(prefix="bench_preview_")
    t0 = time.perf_counter()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    context = bpy.context
    scene = context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    scene.frame_start, scene.frame_end = 1, frames
    arm = rig.create_smplx_armature(context)
    takes.write_new_take(arm, synthetic_take(frames), name="bench", frame_start=1)
    if compat.HAS_AUDASPACE:
        compat.new_sound_strip(scene, "speech", speech_like_wav(os.path.join(tmp, "speech.wav"), args.seconds), 1)
    scene.echomask.target = arm
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(tmp, "scene.blend"))
    print(f"scene: {frames} frames ({args.seconds:g} s at {FPS} fps), audio: {compat.HAS_AUDASPACE}, "
          f"Blender {bpy.app.version_string}; built in {time.perf_counter() - t0:.1f} s (not timed)")

    output = os.path.join(tmp, "preview.mp4")
    t0 = time.perf_counter()
    step = args.frame_step or preview.DEFAULT_FRAME_STEP
    job = preview.start_preview(context, output, style=args.style, frame_step=step)
    status = job.wait(3600)
    elapsed = time.perf_counter() - t0
    console = list(job.console_tail)
    preview.finish_preview()
    if status.state.name != "DONE":
        print(f"preview failed: {status.error}\n" + "\n".join(console[-10:]))
        return 1
    report = preview_mp4.read_mp4_tracks(output)
    print(f"preview ({args.style}, {status.result['fps']:g} fps): {elapsed:.1f} s for {args.seconds:g} s of animation = "
          f"{elapsed / args.seconds:.2f} x real time; {os.path.getsize(output) / 1e6:.1f} MB")
    for track in report:
        print(f"  {track['kind']} track: {track['duration']:.3f} s" +
              (f", {track['frames']} frames" if track.get("frames") else ""))
    if status.result and status.result.get("timings"):
        print("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in status.result["timings"].items()))
    if args.keep:
        shutil.copy(output, args.keep)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
