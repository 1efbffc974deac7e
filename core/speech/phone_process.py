"""Phone recognition on the other core: PocketSphinx runs in a helper process, ahead of the generator.

Why: recognition is about half of a generation's time on 2 cores and holds Python's GIL (a thread cannot
overlap it), while the generator runs on one torch thread. The helper decodes a clip's ~30 s pieces in order
with `core.speech.phones.recognise_phone_pieces` (the same decoder and calls as an in-process run, so the
phones are identical) and sends each piece's phones as soon as it is decoded; the generation loop waits only
for the piece its next windows need, and the next chunk of a long clip is recognised while the model works.

Lifetime: one helper per process, started on first use and kept (a warm worker keeps it between jobs). It
exits when its stdin closes, i.e. when this process exits or is killed, and it is in this process's process
group (a cancel that kills the worker's group kills it too). If it cannot start, or dies, recognition runs in
this process instead: the same phones, only without the overlap. `ECHOMASK_PHONE_PROCESS=0` turns it off.

Protocol (pickles over the helper's stdin/stdout; the helper's own stdout is moved to stderr so that nothing
else can write into the stream): request (job_id, audio float32, RecogniserConfig as a dict); replies
("piece", job_id, piece_end_s, segments) per piece, then ("done", job_id) or ("error", job_id, message).
"""
from __future__ import annotations

import atexit
import dataclasses
import os
import pickle
import queue
import subprocess
import sys
import threading

import numpy as np

ENV_SWITCH = "ECHOMASK_PHONE_PROCESS"
_CORE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The helper imports this package as the top-level `core` from the extension root: it needs numpy and
# pocketsphinx only (core's relative imports make that name work wherever the package lives).
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from core.speech.phone_process import serve; serve()")


def helper_wanted() -> bool:
    """The helper pays off with a second core to run on; the switch turns it off."""
    try:
        cores = len(os.sched_getaffinity(0))   # the cores this process may use (containers, taskset)
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return os.environ.get(ENV_SWITCH, "1") != "0" and cores >= 2


class PhoneJob:
    """Phones of one clip as the helper decodes them. `wait_until(t)` blocks until the phones before t seconds
    are known (or all are); `covered_s` is how far they reach; `segments` the phones so far, in order."""

    def __init__(self, helper: "PhoneHelper | None", job_id: int, audio: np.ndarray, config):
        self.helper, self.id, self.audio, self.config = helper, job_id, audio, config
        self.segments: list[tuple[float, float, str]] = []
        self.covered_s = 0.0
        self.done = False

    def _recognise_here(self):
        """The helper failed: decode the whole clip in this process (the same phones, from the start)."""
        from .phones import recognise_phones

        self.segments = recognise_phones(self.audio, self.config)
        self.covered_s, self.done, self.helper = float("inf"), True, None

    def wait_until(self, t_s: float) -> None:
        while not self.done and self.covered_s < t_s:
            if self.helper is None or not self.helper.pump():
                self._recognise_here()

    def finish(self) -> list[tuple[float, float, str]]:
        self.wait_until(float("inf"))
        self.audio = None
        return self.segments


class PhoneHelper:
    """The helper process and the jobs sent to it (see the module doc)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, _CORE_PARENT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        self.jobs: dict[int, PhoneJob] = {}
        self.broken = False
        self._next_id = 0
        # Requests go through a thread: a request is MBs of audio, more than a pipe holds, and the helper
        # reads it only once it has finished the job before; the generation loop must not wait for that.
        self._outbox: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write_requests, daemon=True, name="echomask-phones")
        self._writer.start()

    def _write_requests(self):
        while True:
            request = self._outbox.get()
            if request is None:
                return
            try:
                pickle.dump(request, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.proc.stdin.flush()
            except (OSError, ValueError):   # the helper died or was closed: the jobs fall back
                self.broken = True
                return

    def submit(self, audio: np.ndarray, config) -> PhoneJob:
        job = PhoneJob(self, self._next_id, audio, config)
        self._next_id += 1
        self.jobs[job.id] = job
        # The settings as a dict: this package's name differs between here (the extension's sub-package) and
        # the helper (`core`), so its classes do not unpickle there.
        self._outbox.put((job.id, np.ascontiguousarray(audio, np.float32), dataclasses.asdict(config)))
        return job

    def pump(self) -> bool:
        """Read one reply and file it under its job; False when the helper is gone (its jobs then fall back)."""
        if self.broken:
            return False
        try:
            reply = pickle.load(self.proc.stdout)
        except Exception:   # EOF (it died), or a torn stream: stop using it
            self._break()
            return False
        kind, job_id = reply[0], reply[1]
        job = self.jobs.get(job_id)
        if job is None:      # a job that was abandoned (a cancelled generation)
            return True
        if kind == "piece":
            job.segments.extend(reply[3])
            job.covered_s = float(reply[2])
        else:
            del self.jobs[job_id]
            if kind == "error":   # the job decodes again in this process when waited on: its error reaches
                job.helper = None  # the user there, from the job that has it
            else:
                job.done, job.covered_s = True, float("inf")
        return True

    def abandon(self, job: PhoneJob) -> None:
        """The caller no longer needs this job (a cancelled or failed generation)."""
        if self.jobs.pop(job.id, None) is not None and self.jobs == {}:
            # It is still decoding what nobody will read: replace it rather than make the next job wait.
            self._break()

    def _break(self):
        global _HELPER
        self.broken = True
        self._outbox.put(None)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        with _LOCK:
            if _HELPER is self:
                _HELPER = None

    def close(self):
        self._break()


_HELPER: PhoneHelper | None = None
_LOCK = threading.Lock()


@atexit.register
def _close_helper():
    if _HELPER is not None:
        _HELPER.close()


def submit_phones(audio: np.ndarray, config) -> PhoneJob:
    """Start recognising `audio` on the helper (started on first use); without one, the job decodes in this
    process when it is first waited on."""
    global _HELPER
    if not helper_wanted():
        return PhoneJob(None, -1, audio, config)
    with _LOCK:
        if _HELPER is None or _HELPER.broken:
            try:
                _HELPER = PhoneHelper()
            except OSError:   # no way to start a process here: recognise in this one
                _HELPER = None
        helper = _HELPER
    if helper is None:
        return PhoneJob(None, -1, audio, config)
    return helper.submit(audio, config)


def serve() -> None:
    """The helper's main loop (started by PhoneHelper; exits when its stdin closes)."""
    from .phones import RecogniserConfig, recognise_phone_pieces

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)   # anything printed from now on goes to stderr, not into the replies
    requests = sys.stdin.buffer
    while True:
        try:
            job_id, audio, settings = pickle.load(requests)
        except Exception:   # EOF: the parent is gone (or a torn stream: the parent falls back)
            return
        try:
            try:
                for piece_end, segments in recognise_phone_pieces(audio, RecogniserConfig(**settings)):
                    pickle.dump(("piece", job_id, piece_end, segments), replies)
                    replies.flush()
                reply = ("done", job_id)
            except Exception as exc:  # noqa: BLE001 - the parent decodes again and reports it properly
                reply = ("error", job_id, f"{type(exc).__name__}: {exc}")
            pickle.dump(reply, replies)
            replies.flush()
        except (BrokenPipeError, OSError):   # the parent is gone
            return
