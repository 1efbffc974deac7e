"""The warm generator as Blender sees it: whether jobs use it, the one shared process, its state for the
panel, and the Start/Stop Worker buttons. Thin on purpose: starting, routing events, cancelling and
replacing a dead or stuck process all live in core/jobs/client.py (no bpy), and nothing here waits on it.

With the warm worker on (the default; Preferences > EchoMask > Keep Generator Warm, or ECHOMASK_WARM_WORKER
=0/1 for scripts and tests), Generate and Re-key send their request to `python -m core.jobs.worker --serve`,
which keeps torch imported and the model loaded between takes; off, each job runs its own `--request`
process as before. The process exits by itself after core.jobs.client.WARM_IDLE_TIMEOUT seconds unused,
when Blender quits (its stdin closes, and an atexit hook stops it) and when the extension is unregistered.
"""
from __future__ import annotations

import os

import bpy

from ...core.errors import EchoMaskError
from ...core.jobs import client
from . import runtime, runtime_ops

ENV_WARM_WORKER = "ECHOMASK_WARM_WORKER"


def warm_enabled(context=None) -> bool:
    """ECHOMASK_WARM_WORKER when set (0/off/false = off), else the preference, else on."""
    value = os.environ.get(ENV_WARM_WORKER)
    if value is not None:
        return value.strip().lower() not in ("0", "off", "false", "no", "")
    prefs = runtime_ops.preferences(context)
    return bool(getattr(prefs, "warm_worker", True)) if prefs is not None else True


def warm_worker_for(choice: runtime.RuntimeChoice) -> client.WarmWorker:
    """The shared warm worker for this runtime (one for another Python or script is replaced)."""
    return client.shared_warm_worker(choice.command(client.serve_args()), cwd=runtime.EXTENSION_ROOT,
                                     env=client.worker_environment(runtime.EXTENSION_ROOT))


def make_job(context, choice: runtime.RuntimeChoice | None, one_shot_command: list[str], request: dict,
             job_dir: str):
    """The job for one generation: a request to the warm worker, or a one-shot `--request` process."""
    if choice is not None and warm_enabled(context):
        return client.WarmWorkerJob(warm_worker_for(choice), request)
    client.write_request(job_dir, request)
    return client.WorkerJob(one_shot_command, cwd=job_dir, env=client.worker_environment(runtime.EXTENSION_ROOT))


def state_text(context=None) -> str:
    """'Worker: warm (model loaded)', 'Worker: starting', 'Worker: off', ... for the panel."""
    worker = client.current_warm_worker()
    text = worker.describe() if worker is not None else "Worker: off"
    if text != "Worker: off":
        return text
    return "Worker: off" if warm_enabled(context) else "Worker: off (one process per take)"


def worker_alive() -> bool:
    worker = client.current_warm_worker()
    return worker is not None and worker.alive


def stop() -> None:
    client.stop_warm_worker()


def _generation_running() -> bool:
    from .generate_op import current_run

    return current_run() is not None


class ECHOMASK_OT_start_worker(bpy.types.Operator):
    """Start the generator now and load the panel's model, so the first Generate is as quick as the next"""

    bl_idname = "echomask.start_worker"
    bl_label = "Start Worker"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return warm_enabled(context) and not worker_alive()

    def execute(self, context):
        try:
            choice = runtime_ops.choose_python(context)
            settings = getattr(context.scene, "echomask", None)
            device = runtime.worker_device(settings.device) if settings is not None else "auto"
            warm_worker_for(choice).load(runtime_ops.weights_path(context), device)
        except (EchoMaskError, OSError) as err:
            self.report({"ERROR"}, f"The generator could not be started: {err}")
            return {"CANCELLED"}
        return {"FINISHED"}


class ECHOMASK_OT_stop_worker(bpy.types.Operator):
    """Stop the warm generator and free its memory; the next Generate starts a fresh one"""

    bl_idname = "echomask.stop_worker"
    bl_label = "Stop Worker"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        if _generation_running():
            cls.poll_message_set("A generation is running: cancel it first.")
            return False
        return worker_alive()

    def execute(self, context):
        stop()
        return {"FINISHED"}


def on_warm_preference(prefs, context) -> None:
    """Turning the warm worker off frees it at once."""
    if not prefs.warm_worker and not _generation_running():
        stop()


CLASSES = (ECHOMASK_OT_start_worker, ECHOMASK_OT_stop_worker)
