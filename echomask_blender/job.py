"""A worker process seen from Blender: start it, poll it, cancel it. Plain Python, no bpy.

Blender's main thread must never wait on the worker, so:
- the process is started with subprocess.Popen (stdout = JSON lines, one event each, see core/worker.py);
- one reader thread per pipe turns lines into events on a queue (stderr lines are kept as a short tail for
  error messages);
- `tick()` drains the queue without blocking and returns a `JobStatus` snapshot. A modal operator calls it
  on a timer; tests call it by hand (headless bpy has no timers).
Cancel is terminate (the worker stops between windows on SIGTERM), then kill after a grace period.
Timeouts: no first event within `start_timeout`, or no event for `stall_timeout` while running, ends the
job with an error (a hung worker must not keep Blender "busy" forever).
A worker that exits without a final event (a crash, an out-of-memory kill) becomes an error message in an
animator's words, built from its exit code and the tail of its console output.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time


class JobState(str, enum.Enum):
    NOT_STARTED = "NOT_STARTED"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    DONE = "DONE"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.ERROR, JobState.CANCELLED)


@dataclasses.dataclass
class JobTimeouts:
    start_timeout: float = 300.0   # seconds to the first event (importing torch can take a minute cold)
    stall_timeout: float = 600.0   # seconds without any event while running
    kill_grace: float = 3.0        # seconds between terminate() and kill() on cancel


@dataclasses.dataclass
class JobStatus:
    state: JobState
    fraction: float = 0.0
    message: str = ""
    result: dict | None = None        # the 'done' event's fields
    error: str | None = None          # user-facing text when state == ERROR
    error_kind: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    events: list[dict] = dataclasses.field(default_factory=list)  # the events drained by this tick


_STDERR_TAIL = 40


class WorkerJob:
    """One worker process. `command` is the argv to run; `tick()` never blocks."""

    def __init__(self, command: list[str], *, cwd: str | None = None, env: dict | None = None,
                 timeouts: JobTimeouts | None = None, clock=time.monotonic):
        self.command = [os.fspath(c) for c in command]
        self.cwd = cwd
        self.env = env
        self.timeouts = timeouts or JobTimeouts()
        self._clock = clock
        self._proc: subprocess.Popen | None = None
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._stderr = collections.deque(maxlen=_STDERR_TAIL)
        self._stdout_text = collections.deque(maxlen=_STDERR_TAIL)  # non-JSON lines on stdout (print() noise)
        self._threads: list[threading.Thread] = []
        self._status = JobStatus(JobState.NOT_STARTED)
        self._started_at = 0.0
        self._last_event_at = 0.0
        self._got_event = False
        self._terminated_at: float | None = None
        self._stdout_closed = threading.Event()
        self._final_event: dict | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def state(self) -> JobState:
        return self._status.state

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> JobStatus:
        if self._proc is not None:
            raise RuntimeError("job already started")
        try:
            self._proc = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                bufsize=1, **_new_process_group())
        except FileNotFoundError:
            return self._fail(f"The Python that runs EchoMask's generator was not found ({self.command[0]}). "
                              "Choose it again, or reinstall the runtime, in Preferences > Add-ons > EchoMask.",
                              "RuntimeMissing")
        except OSError as exc:
            return self._fail(f"EchoMask's generator could not be started ({exc}). Check the Python chosen "
                              "in Preferences > Add-ons > EchoMask.", "RuntimeMissing")
        now = self._clock()
        self._started_at = self._last_event_at = now
        self._status = JobStatus(JobState.RUNNING, message="Starting the generator")
        for stream, handler in ((self._proc.stdout, self._read_stdout), (self._proc.stderr, self._read_stderr)):
            thread = threading.Thread(target=handler, args=(stream,), daemon=True, name="echomask-job-reader")
            thread.start()
            self._threads.append(thread)
        return self.status()

    def status(self) -> JobStatus:
        return dataclasses.replace(self._status, warnings=list(self._status.warnings), events=[])

    def cancel(self) -> None:
        """Ask the worker to stop; `tick()` kills it if it has not exited after `kill_grace` seconds."""
        if self._status.state in (JobState.RUNNING, JobState.NOT_STARTED):
            if self._proc is None:
                self._status = JobStatus(JobState.CANCELLED, message="Cancelled")
                return
            self._status.state = JobState.CANCELLING
            self._status.message = "Cancelling"
            self._terminate()

    def close(self, timeout: float = 2.0) -> None:
        """Make sure the process is gone and the reader threads ended (call when done with the job)."""
        if self._proc is not None and self._proc.poll() is None:
            self._terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                self._proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        if self._proc is not None:
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream:
                    stream.close()

    def wait(self, timeout: float, interval: float = 0.02) -> JobStatus:
        """Tick until finished or `timeout` seconds passed (for scripts and tests, never the UI thread)."""
        end = time.monotonic() + timeout
        status = self.tick()
        while not status.state.finished and time.monotonic() < end:
            time.sleep(interval)
            status = self.tick()
        return status

    # ------------------------------------------------------------------ polling

    def tick(self) -> JobStatus:
        """Drain new events and check the process; cheap and non-blocking."""
        status = self._status
        if status.state.finished or self._proc is None:
            return self.status()
        drained = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            drained.append(event)
            self._apply_event(event)
        now = self._clock()
        if drained:
            self._last_event_at = now
        exited = self._proc.poll() is not None
        state = self._status.state
        if state == JobState.CANCELLING:
            if exited:
                self._status.state = JobState.CANCELLED
                self._status.message = "Cancelled"
            elif self._terminated_at is not None and now - self._terminated_at > self.timeouts.kill_grace:
                self._kill()
        elif state == JobState.RUNNING:
            if self._final_event is not None:
                self._finish_from_event(self._final_event)
            elif exited and self._stdout_closed.is_set() and self._events.empty():
                self._status = self._died_status()
            elif not self._got_event and now - self._started_at > self.timeouts.start_timeout:
                self._fail_and_stop(f"The generator did not start within {self.timeouts.start_timeout:.0f} s. "
                                    "Your computer may be very busy; try again, or check the runtime in "
                                    "Preferences > Add-ons > EchoMask.", "Timeout")
            elif self._got_event and now - self._last_event_at > self.timeouts.stall_timeout:
                self._fail_and_stop(f"The generator stopped responding (no progress for "
                                    f"{self.timeouts.stall_timeout:.0f} s) and was stopped. Try again, or use a "
                                    "shorter frame range.", "Timeout")
        out = self.status()
        out.events = drained
        return out

    # ------------------------------------------------------------------ internals

    def _apply_event(self, event: dict) -> None:
        kind = event.get("event")
        self._got_event = True
        if kind == "progress":
            try:
                self._status.fraction = min(1.0, max(0.0, float(event.get("fraction", 0.0))))
            except (TypeError, ValueError):
                pass
            self._status.message = str(event.get("message", self._status.message))
        elif kind == "started":
            self._status.message = "Generator started"
        elif kind == "warning":
            self._status.warnings.append(str(event.get("message", "")))
        elif kind in ("done", "error", "cancelled"):
            self._final_event = event

    def _finish_from_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "done":
            result = {k: v for k, v in event.items() if k != "event"}
            self._status.state = JobState.DONE
            self._status.fraction = 1.0
            self._status.message = "Done"
            self._status.result = result
        elif kind == "error":
            self._status.state = JobState.ERROR
            self._status.error = str(event.get("message") or "The generator failed without saying why.")
            self._status.error_kind = event.get("kind")
            self._status.message = "Failed"
        else:
            self._status.state = JobState.CANCELLED
            self._status.message = "Cancelled"

    def _died_status(self) -> JobStatus:
        code = self._proc.returncode
        status = self.status()
        status.state = JobState.ERROR
        status.error_kind = "WorkerDied"
        status.message = "Failed"
        status.error = explain_exit(code, list(self._stderr) or list(self._stdout_text))
        return status

    def _fail(self, message: str, kind: str) -> JobStatus:
        self._status = JobStatus(JobState.ERROR, message="Failed", error=message, error_kind=kind)
        return self.status()

    def _fail_and_stop(self, message: str, kind: str) -> None:
        self._terminate()
        self._status.state = JobState.ERROR
        self._status.error = message
        self._status.error_kind = kind
        self._status.message = "Failed"
        # the process is killed in close(); reap it soon so nothing keeps running
        threading.Thread(target=self._reap_later, daemon=True).start()

    def _reap_later(self) -> None:
        try:
            self._proc.wait(self.timeouts.kill_grace)
        except subprocess.TimeoutExpired:
            self._kill()

    def _terminate(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        if self._terminated_at is None:
            self._terminated_at = self._clock()
        try:
            self._proc.terminate()
        except OSError:
            pass

    def _kill(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            if os.name == "posix":
                os.killpg(self._proc.pid, signal.SIGKILL)  # torch may have spawned helpers: end them too
            else:
                self._proc.kill()
        except OSError:
            try:
                self._proc.kill()
            except OSError:
                pass

    def _read_stdout(self, stream) -> None:
        try:
            for line in stream:
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict) and "event" in event:
                    self._events.put(event)
                else:  # print() output from a library: kept apart from the error stream
                    self._stdout_text.append(line)
        except (OSError, ValueError):
            pass
        finally:
            self._stdout_closed.set()

    def _read_stderr(self, stream) -> None:
        try:
            for line in stream:
                line = line.rstrip()
                if line:
                    self._stderr.append(line)
        except (OSError, ValueError):
            pass

    @property
    def console_tail(self) -> list[str]:
        return list(self._stdout_text) + list(self._stderr)


def _new_process_group() -> dict:
    """Start the worker in its own process group (POSIX) so a kill reaches its children too."""
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}


def explain_exit(code: int | None, console: list[str]) -> str:
    """Why the worker ended without a result, in an animator's words (with what to do).

    `console` is the end of its error output (or of its plain stdout when it wrote no errors)."""
    text = "\n".join(console[-_STDERR_TAIL:])
    hint = ""
    if "No module named 'torch'" in text:
        return ("The runtime has no torch installed, so it cannot generate. Install the runtime (or choose a "
                "Python that has torch) in Preferences > Add-ons > EchoMask.")
    if "No module named 'core" in text:
        return ("The generator's code could not be found next to the add-on. Reinstall the EchoMask extension.")
    if "out of memory" in text.lower() or "MemoryError" in text:
        return "The generator ran out of memory. Try a shorter frame range, the CPU device, or close other programs."
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == getattr(signal, "SIGKILL", 9):
            hint = " This usually means the computer ran out of memory: try a shorter frame range."
        return f"The generator was stopped by the system ({name}) before it finished.{hint}"
    last = next((line for line in reversed(console) if line.strip()), "")
    detail = f" Last message: {last[:300]}" if last else ""
    return (f"The generator stopped unexpectedly (exit code {code}) without a result.{detail} "
            "See the system console for details, and try again.")


def python_command(python: str, worker_args: list[str], worker_script: str | None = None) -> list[str]:
    """argv for a worker: `python -m core.worker ARGS`, or a development script instead of core.worker."""
    if worker_script:
        return [python, worker_script, *worker_args]
    return [python, "-m", "core.worker", *worker_args]


def worker_environment(extension_root: str, base: dict | None = None) -> dict:
    """Environment for the worker: the extension root on PYTHONPATH (so `core` imports), unbuffered output,
    and none of Blender's own Python settings (the worker is a different Python)."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):
        env.pop(key, None)
    env["PYTHONPATH"] = extension_root
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def write_request(job_dir: str, request: dict) -> str:
    os.makedirs(job_dir, exist_ok=True)
    path = os.path.join(job_dir, "request.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(request, f, indent=1)
    return path


if __name__ == "__main__":  # tiny manual check: python job.py -- cmd args...
    job = WorkerJob(sys.argv[2:] if sys.argv[1:2] == ["--"] else sys.argv[1:])
    job.start()
    print(job.wait(60))
    job.close()
