"""The main job: speech file -> OUT/take.npz + OUT/take.blend (rig, animation, sound strip) + OUT/take.fbx.

Everything is written into a temporary folder inside OUT's parent first and moved into place only when all
files exist, so a failure or a cancel never leaves half a result.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile
import time

from ..errors import EchoMaskError


def generate_files(speech: str, out_dir: str, options=None, weights: str | None = None, blend: bool = True,
                   progress=None, **overrides) -> dict:
    """speech -> OUT/take.npz (+ .blend, .fbx); options: core.generation.options.GenerationOptions (with
    keyword overrides of its fields)."""
    from ..speech.audio import check_has_speech, load_speech
    from ..generation.inference import generate
    from ..motion.take import save_take

    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EchoMaskError(f"{out} exists and is not a folder; choose an output folder.")
    audio = load_speech(speech)
    check_has_speech(audio, os.path.basename(speech))
    take = generate(audio, options, model=weights, progress=progress, **overrides)
    take.meta["audio"] = os.path.abspath(speech)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".echomask_", dir=out.parent) as tmp:
        tmp = pathlib.Path(tmp)
        files = {"take": tmp / "take.npz"}
        save_take(take, files["take"])
        if blend:
            from .blender_bridge import run_blender_task

            files["blend"], files["fbx"] = tmp / "take.blend", tmp / "take.fbx"
            run_blender_task("import_take", take=str(files["take"]), audio=os.path.abspath(speech),
                             blend=str(files["blend"]), fbx=str(files["fbx"]))
            missing = [str(p.name) for p in files.values() if not p.is_file()]
            if missing:
                raise EchoMaskError(f"Blender did not write {', '.join(missing)}; nothing was saved.")
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        for key, path in files.items():
            dest = out / path.name
            shutil.move(str(path), dest)
            written[key] = str(dest)
    return {"take": take, "files": written}


def run_cli(args) -> int:
    started = time.perf_counter()
    last = [-1.0]

    def progress(fraction, message):
        if fraction - last[0] >= 0.1 or fraction >= 1.0:
            last[0] = fraction
            print(f"[{fraction * 100:3.0f}%] {message}", file=sys.stderr)

    from ..generation.options import generation_options

    res = generate_files(args.speech, args.out, generation_options(args), weights=args.weights,
                         blend=not args.no_blend, progress=progress)
    take = res["take"]
    print(f"Generated {take.num_frames} frames ({take.duration:.1f} s at {take.fps:g} fps) in "
          f"{time.perf_counter() - started:.1f} s.")
    for key, path in res["files"].items():
        print(f"  wrote {path}")
    return 0
