"""The worker protocol: JSON lines, one event per line on the worker's stdout; in serve mode one request per
line on its stdin. Standard library only: Blender's own Python (the preview render) emits with it too.

Events (every event has "event"; in serve mode events about a request also carry its "job" id):
    started    {"pid", "protocol"}                         a job began (one-shot: the process started)
    progress   {"fraction": 0..1, "message"}
    warning    {"message"}                                 something the animator should know about the take
    done       {"result", "frames", "fps", "seconds"}      final
    error      {"message", "kind", "traceback"?}           final; kind names the error class
    cancelled  {"message"}                                 final
    probe      {"python", "protocol", "torch", "cuda", "cuda_name", "mps", "error"?}   (--probe)
  serve mode only:
    ready      {"pid", "protocol", "models"}               imports done, waiting for requests
    idle       {"models"}                                  a request finished; models = loaded model keys
    loaded     {"models"}                                  answer to a "load" request
    exiting    {"reason": "idle" | "quit" | "stdin closed"}
Requests (serve mode, stdin):
    {"op": "generate", "job": ID, "request": {...the --request file's fields...}}
    {"op": "load", "job": ID, "weights": PATH | null, "device": "cpu"}   load (and cache) a model now
    {"op": "cancel", "job": ID}                            stop that job between windows
    {"op": "quit"}
"""
from __future__ import annotations

import contextlib
import json
import sys
import threading

PROTOCOL_VERSION = 2    # 2: serve mode (ready/idle/loaded/exiting events, job ids)

FINAL_EVENTS = ("done", "error", "cancelled")

_write_lock = threading.Lock()
_job_tag = threading.local()


def emit(event: str, stream=None, **fields) -> None:
    """Write one event line and flush it (Blender reads it at once). Inside `tagged(job)` the job id is
    added, so a serving worker's events can be matched to the request they answer."""
    job = getattr(_job_tag, "job", None)
    if job is not None and "job" not in fields:
        fields["job"] = job
    line = json.dumps({"event": event, **fields}) + "\n"
    out = stream or sys.stdout
    with _write_lock:   # a line is written whole even when two threads emit
        out.write(line)
        out.flush()


@contextlib.contextmanager
def tagged(job):
    """Events emitted by this thread inside the block carry `job`."""
    previous = getattr(_job_tag, "job", None)
    _job_tag.job = job
    try:
        yield
    finally:
        _job_tag.job = previous


def parse_event(line: str) -> dict | None:
    """One stdout line -> the event dict, or None when the line is not an event (a library's print())."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def request_line(op: str, **fields) -> str:
    """One serve-mode request as the line to write to the worker's stdin."""
    return json.dumps({"op": op, **fields}) + "\n"
