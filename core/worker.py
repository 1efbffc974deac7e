"""The generation worker: a separate process that Blender starts and polls.

    python -m core.worker --request REQUEST.json     (run from the extension root)
    python -m core.worker --probe                     (what this Python can run on: torch, CUDA, Apple GPU)

Blender never imports torch: it writes a request, starts this process and reads JSON lines from its stdout,
one event per line:
    {"event": "progress", "fraction": 0.42, "message": "Generating gestures (3/8)"}
    {"event": "warning", "message": "..."}
    {"event": "done", "result": "/path/take.npz", "frames": 1800, "seconds": 5.1}
    {"event": "error", "message": "...", "kind": "AudioError"}
The request names the speech for messages (`audio_label`, e.g. "the sound strip 'line_04'"): silence is
refused with that name before the model runs.
Cancel = Blender kills the process (and it stops between windows on SIGTERM/SIGINT). A crash in torch ends
only this process. The result is written to a temp name and renamed, so Blender never reads half a file.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import time
import traceback
import warnings

from .errors import EchoMaskError

PROTOCOL_VERSION = 1


class _Cancelled(Exception):
    pass


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def warnings_as_events():
    """Warnings from EchoMask's own code ("This audio looks like music...") become 'warning' events, so
    Blender shows them with the take; every warning from this package is sent (once per message), however
    often it ran before in this process. Other libraries' warnings go to stderr as usual."""
    package = __package__ or "core"
    sent: set[str] = set()
    with warnings.catch_warnings():
        warnings.filterwarnings("always", module=re.escape(package) + r"(\.|$)")
        to_stderr = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if os.path.abspath(filename).startswith(os.path.dirname(os.path.abspath(__file__)) + os.sep):
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
    from .audio import check_has_speech, load_speech
    from .generation.options import GenerationOptions
    from .inference import generate
    from .take import resample_take, save_take

    started = time.perf_counter()
    output = request["output"]

    def progress(fraction: float, message: str) -> None:
        if cancelled():
            raise _Cancelled()
        emit("progress", fraction=round(float(fraction), 4), message=message)

    progress(0.0, "Reading the speech")
    audio = load_speech(request["audio"])
    check_has_speech(audio, request.get("audio_label") or os.path.basename(request["audio"]))
    options = GenerationOptions.from_dict(request)
    known_take, known_mask = request.get("known_take"), request.get("known_mask")
    if isinstance(known_take, str):  # re-key: files from Blender -> Take at 30 fps + frame mask
        from .take_parts import load_known

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.worker")
    parser.add_argument("--request", help="JSON request file")
    parser.add_argument("--probe", action="store_true", help="print what this runtime can use, then exit")
    args = parser.parse_args(argv)
    if args.probe:
        emit("probe", **probe())
        return 0
    if not args.request:
        parser.error("--request or --probe is required")

    cancel_flag = {"set": False}

    def on_signal(signum, frame):  # stop cleanly between windows; Blender may also kill us outright
        cancel_flag["set"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with open(args.request) as f:
            request = json.load(f)
        emit("started", pid=os.getpid(), protocol=PROTOCOL_VERSION)
        emit("done", **run_request(request, cancelled=lambda: cancel_flag["set"]))
        return 0
    except _Cancelled:
        emit("cancelled", message="Generation cancelled.")
        return 130
    except EchoMaskError as err:
        emit("error", message=str(err), kind=type(err).__name__)
        return 2
    except MemoryError:
        emit("error", message="Ran out of memory. Try a shorter frame range or the CPU device.", kind="MemoryError")
        return 3
    except Exception as exc:  # a bug: say so plainly, keep the traceback for the console
        emit("error", message=f"Internal error in the generator: {exc!r}. See the system console for details.",
             kind="InternalError", traceback=traceback.format_exc())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
