"""The generation worker: a separate process that Blender starts and polls.

    python -m core.jobs.worker --request REQUEST.json   one job, then exit     (run from the extension root)
    python -m core.jobs.worker --serve [--idle-timeout S]  a warm worker: one request per stdin line
    python -m core.jobs.worker --probe                   what this Python can run on: torch, CUDA, Apple GPU

Blender never imports torch: it starts this process and reads JSON-line events from its stdout (the schema
and the one emitter are in protocol.py), e.g.
    {"event": "progress", "fraction": 0.42, "message": "Generating gestures (3/8)"}
    {"event": "done", "result": "/path/take.npz", "frames": 1800, "seconds": 5.1}
The request names the speech for messages (`audio_label`, e.g. "the sound strip 'line_04'"): silence is
refused with that name before the model runs.
Serve mode keeps torch imported and the loaded model cached (core.generation.inference caches by weights path,
modification time and device), so the second Generate skips the ~2.4 s of start-up and loading. It reads
requests on stdin (a reader thread, so a "cancel" arrives while a job runs), exits after `--idle-timeout`
seconds without a request, and exits when stdin closes (Blender quit or crashed).
Cancel: one-shot = Blender terminates the process (it stops between windows on SIGTERM/SIGINT); serve =
Blender kills the process group at once and the next job starts a fresh worker (a "cancel" request, for
clients that would rather keep the process, stops the job between windows). A crash in torch ends only this process. The result is written to a temp name and
renamed, so Blender never reads half a file.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import signal
import sys
import threading
import time
import traceback
import warnings

from ..errors import EchoMaskError
from .protocol import PROTOCOL_VERSION, emit, tagged

DEFAULT_IDLE_TIMEOUT = 900.0   # seconds: a warm worker nobody uses exits by itself
CORE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class JobCancelled(Exception):
    """Raised inside a job when it has been asked to stop (checked between windows)."""


@contextlib.contextmanager
def warnings_as_events():
    """Warnings from EchoMask's own code ("This audio looks like music...") become 'warning' events, so
    Blender shows them with the take; every warning from this package is sent (once per message), however
    often it ran before in this process. Other libraries' warnings go to stderr as usual."""
    package = (__package__ or "core.jobs").rpartition(".")[0] or "core"
    sent: set[str] = set()
    with warnings.catch_warnings():
        warnings.filterwarnings("always", module=re.escape(package) + r"(\.|$)")
        to_stderr = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if os.path.abspath(filename).startswith(CORE_DIR + os.sep):
                text = str(message)
                if text not in sent:
                    sent.add(text)
                    emit("warning", message=text)
            else:
                to_stderr(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def probe() -> dict:
    """Describe the runtime: torch version and the devices it can use."""
    info = {"python": sys.version.split()[0], "protocol": PROTOCOL_VERSION, "torch": None,
            "cuda": False, "cuda_name": None, "mps": False}
    try:
        import torch
    except ImportError as exc:
        info["error"] = f"torch is not installed in this Python ({exc})."
        return info
    info["torch"] = torch.__version__
    info["cuda"] = bool(torch.cuda.is_available())
    if info["cuda"]:
        info["cuda_name"] = torch.cuda.get_device_name(0)
    info["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return info


def run_request(request: dict, cancelled=lambda: False) -> dict:
    """Generate the take a request asks for; returns the 'done' event's fields."""
    from ..speech.audio import check_has_speech, load_speech
    from ..generation.options import GenerationOptions
    from ..generation.inference import generate
    from ..motion.take import resample_take, save_take

    started = time.perf_counter()
    output = request["output"]

    def progress(fraction: float, message: str) -> None:
        if cancelled():
            raise JobCancelled()
        emit("progress", fraction=round(float(fraction), 4), message=message)

    progress(0.0, "Reading the speech")
    audio = load_speech(request["audio"])
    check_has_speech(audio, request.get("audio_label") or os.path.basename(request["audio"]))
    options = GenerationOptions.from_dict(request)
    known_take, known_mask = request.get("known_take"), request.get("known_mask")
    if isinstance(known_take, str):  # re-key: files from Blender -> Take at 30 fps + frame mask
        from ..motion.take_parts import load_known

        known_take, known_mask = load_known(known_take, known_mask)
    with warnings_as_events():
        take = generate(audio, options, model=request.get("weights") or None, known_take=known_take,
                        known_mask=known_mask, progress=progress, cancel=cancelled)
    fps = request.get("fps")
    if fps and abs(float(fps) - take.fps) > 1e-6:
        take = resample_take(take, float(fps))
    take.meta.update({"audio": request["audio"], "seed": request.get("seed", 0)})
    save_take(take, output)
    return {"result": output, "frames": take.num_frames, "fps": take.fps,
            "seconds": round(time.perf_counter() - started, 3)}


def run_and_report(run, request: dict, cancelled) -> int:
    """Run one job and turn its ending into the final event (shared by one-shot and serve mode, and by the
    tests' fake worker); returns the one-shot exit code."""
    try:
        emit("done", **run(request, cancelled=cancelled))
        return 0
    except JobCancelled:
        emit("cancelled", message="Generation cancelled.")
        return 130
    except EchoMaskError as err:
        if cancelled() and type(err).__name__ == "GenerationCancelled":
            emit("cancelled", message="Generation cancelled.")
            return 130
        emit("error", message=str(err), kind=type(err).__name__)
        return 2
    except MemoryError:
        emit("error", message="Ran out of memory. Try a shorter frame range or the CPU device.", kind="MemoryError")
        return 3
    except Exception as exc:  # a bug: say so plainly, keep the traceback for the console
        emit("error", message=f"Internal error in the generator: {exc!r}. See the system console for details.",
             kind="InternalError", traceback=traceback.format_exc())
        return 1


def load_model_now(weights: str | None, device: str) -> None:
    """Load (and cache) a model before the first request, so that Generate finds it warm."""
    from ..generation.inference import resolve_model

    resolve_model(weights or None, device or "auto")


def loaded_models() -> list[str]:
    """The models this process holds, as 'path @ device' (for the panel's worker state)."""
    from ..generation import inference

    return [f"{key[0]} @ {key[2]}" for key in getattr(inference, "_MODEL_CACHE", {})]


def preload() -> None:
    """What every request needs, imported before 'ready' (torch, the model code, the speech features), so a
    worker started ahead of the first Generate (the panel's Start Worker) has paid for them already."""
    import torch  # noqa: F401

    from ..generation import inference  # noqa: F401
    from ..model import checkpoint  # noqa: F401
    from ..speech.audio import load_speech  # noqa: F401
    from ..generation import loop  # noqa: F401
    from ..speech import get_backend

    get_backend("builtin")


def serve(run, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT, load=load_model_now, models=loaded_models,
          stdin=None) -> int:
    """The warm worker's loop: one request per stdin line, one job at a time.

    A reader thread takes the lines, so a 'cancel' for the running job is seen while it runs (the job checks
    `cancelled()` between windows). Without a request for `idle_timeout` seconds, or when stdin closes
    (Blender quit or crashed), the worker exits: it never outlives its user for long."""
    stdin = stdin or sys.stdin
    pending: queue.SimpleQueue = queue.SimpleQueue()
    cancel = {"job": None}
    lock = threading.Lock()
    running = {"job": None}

    def read_requests():
        for line in stdin:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("op") == "cancel":
                with lock:
                    cancel["job"] = message.get("job")
                continue
            pending.put(message)
        pending.put({"op": "quit", "reason": "stdin closed"})

    threading.Thread(target=read_requests, daemon=True, name="echomask-requests").start()
    emit("ready", pid=os.getpid(), protocol=PROTOCOL_VERSION, models=models())
    while True:
        try:
            message = pending.get(timeout=idle_timeout) if idle_timeout > 0 else pending.get()
        except queue.Empty:
            emit("exiting", reason="idle")
            return 0
        op = message.get("op")
        if op == "quit":
            emit("exiting", reason=message.get("reason", "quit"))
            return 0
        job = message.get("job")
        with lock:
            running["job"] = job
            if cancel["job"] != job:
                cancel["job"] = None
        with tagged(job):
            if op == "generate":
                emit("started", pid=os.getpid(), protocol=PROTOCOL_VERSION)
                run_and_report(run, message.get("request") or {}, lambda: cancel["job"] == job)
            elif op == "load":
                try:
                    load(message.get("weights"), message.get("device") or "auto")
                    emit("loaded", models=models())
                except EchoMaskError as err:
                    emit("error", message=str(err), kind=type(err).__name__)
                except Exception as exc:
                    emit("error", message=f"The model could not be loaded: {exc!r}.", kind="InternalError",
                         traceback=traceback.format_exc())
            else:
                emit("error", message=f"Unknown request {op!r}.", kind="ProtocolError")
            emit("idle", models=models())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.jobs.worker")
    parser.add_argument("--request", help="JSON request file: run one job, then exit")
    parser.add_argument("--serve", action="store_true", help="stay warm: one JSON request per stdin line")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT,
                        help=f"serve: exit after this many seconds without a request (default {DEFAULT_IDLE_TIMEOUT:g})")
    parser.add_argument("--probe", action="store_true", help="print what this runtime can use, then exit")
    args = parser.parse_args(argv)
    if args.probe:
        emit("probe", **probe())
        return 0
    if args.serve:
        try:
            preload()
        except ImportError as exc:   # no torch: the client explains it from stderr, as for one-shot jobs
            traceback.print_exc()
            sys.stderr.write(f"{exc}\n")
            return 1
        return serve(run_request, idle_timeout=args.idle_timeout)
    if not args.request:
        parser.error("--request, --serve or --probe is required")

    cancel_flag = {"set": False}

    def on_signal(signum, frame):  # stop cleanly between windows; Blender may also kill us outright
        cancel_flag["set"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with open(args.request) as f:
            request = json.load(f)
    except (OSError, ValueError) as exc:
        emit("error", message=f"The request could not be read ({exc}).", kind="InternalError")
        return 1
    emit("started", pid=os.getpid(), protocol=PROTOCOL_VERSION)
    return run_and_report(run_request, request, lambda: cancel_flag["set"])


if __name__ == "__main__":
    raise SystemExit(main())
