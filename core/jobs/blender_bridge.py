"""Run Blender work (scene building, FBX export) headless from the core CLI, without importing bpy here.

The request goes as JSON to `echomask_blender/headless.py`, run by the same Python (which must have the
`bpy` module, e.g. the project's .venv). That keeps `core` free of bpy while the CLI can still write
.blend and .fbx files.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from ..errors import EchoMaskError
from ..paths import EXTENSION_ROOT

HEADLESS_SCRIPT = EXTENSION_ROOT / "echomask_blender" / "headless.py"


def run_blender_task(task: str, python: str | None = None, **kwargs) -> dict:
    """Run one task of echomask_blender/headless.py in a subprocess; returns its JSON result.

    Raises EchoMaskError with Blender's own message when the task fails.
    """
    python = python or sys.executable
    if python == sys.executable and importlib.util.find_spec("bpy") is None:
        raise EchoMaskError("This Python has no Blender module (bpy), which writing .blend/.fbx needs. "
                            "Use the project's environment (`make demo` creates it), or run inside Blender.")
    with tempfile.TemporaryDirectory(prefix="echomask_job_") as tmp:
        request = pathlib.Path(tmp) / "request.json"
        result = pathlib.Path(tmp) / "result.json"
        request.write_text(json.dumps({"task": task, **kwargs}))
        proc = subprocess.run([python, str(HEADLESS_SCRIPT), str(request), str(result)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if result.exists():
            out = json.loads(result.read_text())
            if out.get("error"):
                raise EchoMaskError(out["error"])
            return out
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
        raise EchoMaskError(f"Blender task '{task}' failed (exit code {proc.returncode}):\n" + "\n".join(tail))
