"""Helpers shared by the bench scripts (not a bench itself: `make bench` runs bench/bench_*.py)."""
from __future__ import annotations

import importlib.util
import pathlib
import sys
import wave

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def import_repo_as_package(name: str = "echomask"):
    """The repository root imported as the package `name` (as Blender imports the extension), so `core` and
    `echomask_blender` import relatively, exactly as they do inside Blender."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_wav(path: str, x: np.ndarray, rate: int = 16000) -> str:
    """Mono float audio in [-1, 1] as a 16-bit WAV (standard library only, as in Blender's Python)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    return str(path)


def registered_empty_scene(seconds: float, fps: int = 30):
    """The extension registered into an empty Blender scene at `fps` whose frame range holds `seconds`:
    (the package, bpy.context, the scene). For the benches that drive the panel's operators."""
    import bpy

    echomask = import_repo_as_package()
    echomask.register()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    context = bpy.context
    scene = context.scene
    scene.render.fps, scene.render.fps_base = fps, 1.0
    scene.frame_start, scene.frame_end = 1, int(round(seconds * fps))
    return echomask, context, scene


def training_capture():
    """The ground-truth takes of the shared data without their held-out tails (the training capture), and
    their manifest entries. Needs ../shared/data and the repository imported as `echomask`."""
    from echomask.core.motion.take import load_take
    from echomask.core.training.data import shared_training_manifest

    entries = [e for e in shared_training_manifest() if e.kind == "gt"]
    takes = []
    for e in entries:
        take = load_take(e.npz)
        takes.append(take.slice(0, take.num_frames - int(round(take.num_frames * e.holdout))))
    return takes, entries


def speed_and_jerk(takes):
    """Mean joint speed (m/s) and jerk (m/s³) of joint positions without translation, over `takes`."""
    from echomask.core.metrics.kinematics import take_positions

    speed, jerk = [], []
    for t in takes:
        pos = take_positions(t, with_translation=False)
        speed.append(np.linalg.norm(np.diff(pos, axis=0), axis=-1).mean() * t.fps)
        jerk.append(np.linalg.norm(np.diff(pos, 3, axis=0), axis=-1).mean() * t.fps ** 3)
    return float(np.mean(speed)), float(np.mean(jerk))


def add_decoding_experiment_args(ap) -> None:
    """The flags of the decoding experiments that patch the product in-process and score it with
    `score_decoding_in_process`: --seeds, --tails, --options."""
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--tails", action="store_true", help="also score the held-out tails (report only)")
    ap.add_argument("--options", default="", help='generation options "name=value ..." for both sets')


def score_decoding_in_process(weights: str, args) -> None:
    """The speech-only clips (bench/select_checkpoint.py, the choice) and with args.tails the held-out tails
    (bench/eval_tails_seeds.py, the report) for `weights`, generated in this process, so a patch applies."""
    import eval_tails_seeds
    import select_checkpoint

    opts = [x for item in args.options.split() for x in ("--option", item)]
    select_checkpoint.main([weights, "--seeds", ",".join(map(str, args.seeds)), *opts])
    if args.tails:
        eval_tails_seeds.main(["--weights", weights, "--seeds", *map(str, args.seeds), "--options", args.options])


def bundled_model_and_capture():
    """(path of the bundled weights, the loaded model, the training capture's manifest entries): the set-up of
    the decoding experiments. Needs ../shared/data and the repository imported as `echomask`."""
    from echomask.core.model.checkpoint import load_model

    weights = str(ROOT / "weights" / "echomask_small.safetensors")
    _, entries = training_capture()
    return weights, load_model(weights), entries
