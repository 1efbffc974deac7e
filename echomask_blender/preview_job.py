"""Background preview render, speaking the worker's JSON-lines protocol (started/progress/done/error).

    blender --background FILE.blend --python preview_job.py -- REQUEST.json     (from Blender's UI)
    python preview_job.py -- REQUEST.json                                       (a Python with the bpy module)
REQUEST: {"blend", "output", "armature"?, "frame_start"?, "frame_end"?, "style"?, "frame_step"?}. See preview.py.
"""
import importlib.util
import json
import pathlib
import sys
import traceback


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    here = pathlib.Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location("echomask_headless", here / "headless.py")
    headless = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(headless)
    headless.bootstrap_package()
    from echomask.core.errors import EchoMaskError
    from echomask.core.jobs.protocol import emit
    from echomask.echomask_blender.preview import render_preview as preview

    try:
        request = json.loads(pathlib.Path(argv[0]).read_text())
        request["events"] = True
        emit("started")
        result = preview.task_render_preview(request)
        emit("done", result=result["output"], frames=result["frames"], fps=result["fps"], audio=result["audio"],
             timings=result.get("timings", {}))
        return 0
    except EchoMaskError as err:
        emit("error", message=str(err), kind=type(err).__name__)
        return 2
    except Exception as exc:
        traceback.print_exc()
        emit("error", message=f"The preview render failed ({type(exc).__name__}: {exc}).", kind="InternalError")
        return 1


if __name__ == "__main__":
    sys.exit(main())
