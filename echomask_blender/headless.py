"""Run EchoMask's Blender work without a Blender window: `python echomask_blender/headless.py REQUEST RESULT`.

core/jobs/blender_bridge.py starts this script with a Python that has the `bpy` module. REQUEST is a JSON
object {"task": name, ...keys}; RESULT receives the task's JSON result, or {"error": message} (a clear,
user-facing message for bad input; the traceback goes to stderr for bugs).

The repository root is imported as the package `echomask` (as Blender does with the extension), so the
bpy layer runs exactly as inside Blender. Add a task by writing `def task_<name>(request) -> dict` and
registering it in TASKS.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pathlib
import sys
import traceback

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
PACKAGE = "echomask"


def bootstrap_package(name: str = PACKAGE):
    """Import the repository root as a package, so `core` and `echomask_blender` resolve relatively."""
    if name in sys.modules:
        return sys.modules[name]
    # Run as a script, this folder is sys.path[0]; its modules must only be reachable through the package.
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _fresh_scene():
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context


def _output_path(path: str | None, suffix: str) -> str | None:
    if not path:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    if not path.lower().endswith(suffix):
        path += suffix
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        from echomask.core.errors import EchoMaskError

        raise EchoMaskError(f"Cannot write {path}: the folder {folder} does not exist.")
    return path


def _save_outputs(context, armature_name: str, blend: str | None, fbx: str | None) -> dict:
    import bpy

    from echomask.echomask_blender.exchange import scene_io

    out = {}
    if fbx:
        out["fbx"] = scene_io.export_take_fbx(context, bpy.data.objects[armature_name], fbx)
    if blend:
        bpy.ops.wm.save_as_mainfile(filepath=blend, check_existing=False)
        out["blend"] = blend
    return out


def task_import_take(request: dict) -> dict:
    """A take .npz (+ speech) onto a new SMPL-X rig in a fresh scene; writes .blend and/or .fbx.

    Keys: take (path), audio (path or null), blend, fbx (output paths or null), fps (scene rate or null =
    the take's), smplx_model (the user's SMPL-X .npz or null: also build the mesh).
    """
    from echomask.core.errors import EchoMaskError
    from echomask.echomask_blender.exchange import scene_io

    blend = _output_path(request.get("blend"), ".blend")
    fbx = _output_path(request.get("fbx"), ".fbx")
    if not (blend or fbx):
        raise EchoMaskError("Nothing to write: give a .blend and/or an .fbx output path.")
    context = _fresh_scene()
    options = scene_io.ImportOptions(audio_path=request.get("audio") or None, fps_mode="TAKE",
                                     fps=request.get("fps"), smplx_model_path=request.get("smplx_model") or "")
    result = scene_io.import_take(context, request["take"], options)
    out = {"armature": result.armature, "mesh": result.mesh, "action": result.action,
           "frames": result.frames, "fps": result.fps, "sound_strip": result.sound_strip,
           "frame_start": result.frame_start, "frame_end": result.frame_end}
    out.update(_save_outputs(context, result.armature, blend, fbx))
    return out


def task_render_preview(request: dict) -> dict:
    """A small MP4 of the playing EchoMask take of a .blend (echomask_blender/preview/render_preview.py)."""
    from echomask.echomask_blender.preview import render_preview as preview

    return preview.task_render_preview(request)


def task_retarget(request: dict) -> dict:
    """A take onto a character's own rig (.fbx/.bvh/.blend) through a bone map (echomask_blender/retarget_job.py)."""
    from echomask.echomask_blender import retarget_job

    return retarget_job.task_retarget(request)


TASKS = {
    "import_take": task_import_take,
    "render_preview": task_render_preview,
    "retarget": task_retarget,
}


def run(request: dict) -> dict:
    """Run one request; EchoMaskError becomes {"error": message}."""
    bootstrap_package()
    from echomask.core.errors import EchoMaskError

    task = TASKS.get(request.get("task"))
    if task is None:
        return {"error": f"Unknown Blender task '{request.get('task')}'; known: {', '.join(sorted(TASKS))}."}
    try:
        return task(request)
    except EchoMaskError as err:
        return {"error": str(err)}
    except KeyError as err:
        return {"error": f"The request for '{request.get('task')}' lacks the key {err}."}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python echomask_blender/headless.py REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request_path, result_path = argv
    try:
        request = json.loads(pathlib.Path(request_path).read_text())
        result = run(request)
    except Exception as exc:  # a bug, not bad input: keep the traceback for the developer
        traceback.print_exc()
        result = {"error": f"Internal error in the Blender task ({type(exc).__name__}: {exc}). "
                           f"Please report it with the log above."}
    pathlib.Path(result_path).write_text(json.dumps(result))
    return 1 if result.get("error") else 0


if __name__ == "__main__":
    raise SystemExit(main())
