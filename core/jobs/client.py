"""Worker processes seen from Blender: start them, poll them, cancel them. Plain Python, no bpy.

Blender's main thread must never wait on a worker, so:
- the process is started with subprocess.Popen (stdout = JSON-line events, protocol.py);
- one reader thread per pipe turns lines into events on a queue (stderr lines are kept as a short tail for
  error messages);
- `tick()` drains the queue without blocking and returns a `JobStatus` snapshot. A modal operator calls it
  on a timer; tests call it by hand (headless bpy has no timers).
Two kinds of job share that state machine:
- `WorkerJob`: one process per job (`--request`, `--probe`, the preview render). Cancel is terminate (the
  worker stops between windows on SIGTERM), then kill after a grace period.
- `WarmWorkerJob`: one request to a `WarmWorker` (`--serve`), a process that stays up with torch imported
  and the model loaded, so the second Generate skips start-up. Cancel kills the worker's process group at
  once (nothing of a half-done job can linger in it, and "stopped" means stopped); a worker that was
  cancelled, died, hung or was killed is replaced by a fresh one on the next job, which says so.
Timeouts: no first event within `start_timeout`, or no event for `stall_timeout` while running, ends the
job with an error (a hung worker must not keep Blender "busy" forever).
A worker that exits without a final event (a crash, an out-of-memory kill) becomes an error message in an
animator's words, built from its exit code and the tail of its console output.
"""
from __future__ import annotations

import atexit
import collections
import dataclasses
import enum
import json
import os
import queue
import signal
import subprocess
import threading
import time
import uuid

from .protocol import FINAL_EVENTS, parse_event, request_line

WORKER_MODULE = "core.jobs.worker"


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



def collect_console_lines(stream, lines) -> None:
    """A reader thread's body: a worker's non-empty console lines into `lines` until the stream closes."""
    try:
        for line in stream:
            line = line.rstrip()
            if line:
                lines.append(line)
    except (OSError, ValueError):
        pass

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
        elif kind in FINAL_EVENTS:
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
                event = parse_event(line)
                if event is not None:
                    self._events.put(event)
                elif line.strip():  # print() output from a library: kept apart from the error stream
                    self._stdout_text.append(line.strip())
        except (OSError, ValueError):
            pass
        finally:
            self._stdout_closed.set()

    def _read_stderr(self, stream) -> None:
        collect_console_lines(stream, self._stderr)

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
    """argv for a worker: `python -m core.jobs.worker ARGS`, or a development script instead of it."""
    if worker_script:
        return [python, worker_script, *worker_args]
    return [python, "-m", WORKER_MODULE, *worker_args]


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


# ---------------------------------------------------------------------------------------------- warm worker

WARM_IDLE_TIMEOUT = 900.0    # seconds without a request before a warm worker exits by itself
WARM_ANSWER_TIMEOUT = 20.0   # seconds for a running warm worker to answer a request ('started'): it has
                             # nothing to import, so silence means it is stuck
FRESH_WORKER_NOTE = "A fresh generator starts with the next Generate."


def serve_args(idle_timeout: float = WARM_IDLE_TIMEOUT) -> list[str]:
    """The worker arguments of a warm worker."""
    return ["--serve", "--idle-timeout", f"{idle_timeout:g}"]


class WarmWorker:
    """One `--serve` process, kept between jobs; no bpy, nothing here blocks for long.

    A reader thread routes each event that names a job to that job's queue and keeps the worker's own
    state (ready, the models it holds, idle) on this object, so a panel can show it without polling.
    `ensure_started()` starts a process when there is none, or when the last one died, was killed, or is
    about to leave on its idle timeout; `processes_started` counts them."""

    def __init__(self, command: list[str], *, cwd: str | None = None, env: dict | None = None,
                 idle_timeout: float = WARM_IDLE_TIMEOUT, clock=time.monotonic):
        self.command = [os.fspath(c) for c in command]
        self.cwd = cwd
        self.env = env
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._jobs: dict[str, queue.SimpleQueue] = {}
        self._stderr = collections.deque(maxlen=_STDERR_TAIL)
        self._stdout_text = collections.deque(maxlen=_STDERR_TAIL)
        self._stdout_closed = threading.Event()
        self.ready = False                  # imports done ('ready' seen)
        self.models: list[str] = []         # models the process holds ('path @ device')
        self.busy_with: str | None = None   # the job id being worked on
        self.processes_started = 0
        self.exit_note = ""                 # why the last process ended, when it was not asked to
        self._last_used = 0.0
        self._stopping = False

    # -------------------------------------------------------------------- state
    @property
    def process(self) -> subprocess.Popen | None:
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def matches(self, command: list[str], cwd: str | None, env: dict | None) -> bool:
        return self.command == [os.fspath(c) for c in command] and self.cwd == cwd and self.env == env

    @property
    def state(self) -> str:
        """'off', 'starting', 'loading', 'busy' or 'warm'."""
        if not self.alive:
            return "off"
        if not self.ready:
            return "starting"
        if self.busy_with is not None:
            return "loading" if self.busy_with.startswith("load-") else "busy"
        return "warm"

    def _note_unexpected_exit(self) -> None:
        """A process that ended without being asked to (killed, crashed) while nobody was watching."""
        proc = self._proc
        if proc is None or proc.poll() is None or self._stopping or self.exit_note:
            return
        code = proc.returncode
        if code is not None and code < 0:
            try:
                how = signal.Signals(-code).name
            except ValueError:
                how = f"signal {-code}"
            self.exit_note = f"was stopped by the system ({how})"
        elif code:
            self.exit_note = f"stopped unexpectedly (exit code {code})"

    def describe(self) -> str:
        """The worker's state in the panel's words."""
        self._note_unexpected_exit()
        state = self.state
        if state == "warm":
            return "Worker: warm (model loaded)" if self.models else "Worker: warm"
        if state == "loading":
            return "Worker: loading the model"
        if state == "busy":
            return "Worker: generating"
        if state == "starting":
            return "Worker: starting"
        return "Worker: off" + (f" ({self.exit_note})" if self.exit_note else "")

    # -------------------------------------------------------------------- lifecycle
    def ensure_started(self) -> bool:
        """Make sure a process is up; True when this call started a fresh one. Raises OSError
        (FileNotFoundError for a missing Python) when it cannot start."""
        if self.alive and self.idle_timeout > 0 and self._clock() - self._last_used > self.idle_timeout - 5.0:
            self.stop()          # about to exit on its idle timeout: a job sent now could be lost
        if self.alive:
            self._last_used = self._clock()
            return False
        self._note_unexpected_exit()
        self._release_process()
        self._stderr.clear()
        self._stdout_text.clear()
        self._stdout_closed = threading.Event()
        self.ready, self.models, self.busy_with, self._stopping = False, [], None, False
        self._proc = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1,
            **_new_process_group())
        self.processes_started += 1
        self._last_used = self._clock()
        closed = self._stdout_closed
        for target, stream in ((self._read_stdout, self._proc.stdout), (self._read_stderr, self._proc.stderr)):
            thread = threading.Thread(target=target, args=(stream, closed), daemon=True,
                                      name="echomask-warm-reader")
            thread.start()
            self._threads.append(thread)
        return True

    def send(self, op: str, **fields) -> bool:
        """Write one request line; False when the process is gone (the job then sees it exited)."""
        if not self.alive:
            return False
        if op in ("generate", "load"):
            self.busy_with = fields.get("job")
        self._last_used = self._clock()
        try:
            self._proc.stdin.write(request_line(op, **fields))
            self._proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def register(self, job_id: str) -> queue.SimpleQueue:
        events: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            self._jobs[job_id] = events
        return events

    def unregister(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def load(self, weights: str | None, device: str) -> None:
        """Start the worker if needed and have it load a model now (the panel's Start Worker)."""
        self.ensure_started()
        self.send("load", job=f"load-{uuid.uuid4().hex[:8]}", weights=weights, device=device)

    def kill(self, note: str = "") -> None:
        """End the process group at once (cancel that did not stop, a hung or stuck worker)."""
        if note:
            self.exit_note = note
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)   # torch may have spawned helpers: end them too
            else:
                proc.kill()
        except OSError:
            try:
                proc.kill()
            except OSError:
                pass
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the process to quit, kill it when it does not within `timeout` (Stop Worker, quit, unregister)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._stopping = True
            self.send("quit")
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.exit_note = ""
        self._release_process()

    def _release_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            self._proc = proc
            self.kill()
            self._proc = None
        for thread in self._threads:
            thread.join(1.0)
        self._threads = []
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        self.ready, self.busy_with = False, None

    # -------------------------------------------------------------------- readers
    def _read_stdout(self, stream, closed: threading.Event) -> None:
        try:
            for line in stream:
                event = parse_event(line)
                if event is None:
                    if line.strip():
                        self._stdout_text.append(line.strip())
                    continue
                kind = event.get("event")
                if kind == "ready":
                    self.ready = True
                    self.models = list(event.get("models") or [])
                elif kind in ("idle", "loaded"):
                    self.models = list(event.get("models") or [])
                    if kind == "idle" and self.busy_with == event.get("job"):   # not a late one from before
                        self.busy_with = None
                elif kind == "exiting" and not self._stopping:
                    reason = event.get("reason", "")
                    self.exit_note = "stopped after being idle" if reason == "idle" else ""
                job = event.get("job")
                if job is not None:
                    with self._lock:
                        target = self._jobs.get(job)
                    if target is not None:
                        target.put(event)
        except (OSError, ValueError):
            pass
        finally:
            closed.set()

    def _read_stderr(self, stream, closed: threading.Event) -> None:
        collect_console_lines(stream, self._stderr)


class WarmWorkerJob(WorkerJob):
    """One generation sent to a WarmWorker; the same tick()/cancel()/close() as a one-shot WorkerJob."""

    def __init__(self, worker: WarmWorker, request: dict, *, timeouts: JobTimeouts | None = None,
                 clock=time.monotonic):
        super().__init__(worker.command, cwd=worker.cwd, env=worker.env, timeouts=timeouts, clock=clock)
        self.worker = worker
        self.request = request
        self.job_id = uuid.uuid4().hex
        self.fresh_worker: bool | None = None    # True when this job had to start the process
        self.replaced_note = ""                  # why the previous worker was gone, when it died

    def start(self) -> JobStatus:
        if self._proc is not None:
            raise RuntimeError("job already started")
        self._events = self.worker.register(self.job_id)
        try:
            self.fresh_worker = self.worker.ensure_started()
        except FileNotFoundError:
            self.worker.unregister(self.job_id)
            return self._fail(f"The Python that runs EchoMask's generator was not found ({self.command[0]}). "
                              "Choose it again, or reinstall the runtime, in Preferences > Add-ons > EchoMask.",
                              "RuntimeMissing")
        except OSError as exc:
            self.worker.unregister(self.job_id)
            return self._fail(f"EchoMask's generator could not be started ({exc}). Check the Python chosen "
                              "in Preferences > Add-ons > EchoMask.", "RuntimeMissing")
        previous_note = self.worker.exit_note if self.fresh_worker and self.worker.processes_started > 1 else ""
        if previous_note:
            self.replaced_note = f"The previous generator {previous_note}; started a fresh one."
        self.worker.exit_note = ""
        self._proc = self.worker.process
        self._stdout_closed = self.worker._stdout_closed
        self._stderr = self.worker._stderr
        self._stdout_text = self.worker._stdout_text
        now = self._clock()
        self._started_at = self._last_event_at = now
        if not self.fresh_worker:
            self.timeouts = dataclasses.replace(
                self.timeouts, start_timeout=min(self.timeouts.start_timeout, WARM_ANSWER_TIMEOUT))
        if self.fresh_worker:
            message = f"Starting a fresh generator: the previous one {previous_note}" if self.replaced_note \
                else "Starting the generator"
        else:
            message = "Generating (warm generator)"
        self._status = JobStatus(JobState.RUNNING, message=message)
        self.worker.send("generate", job=self.job_id, request=self.request)
        return self.status()

    def _terminate(self) -> None:
        """Cancel: kill at once. The warm process is only worth keeping between finished jobs."""
        if self._proc is None or self._proc.poll() is not None:
            return
        if self._terminated_at is None:
            self._terminated_at = self._clock()
        self.worker.kill("was stopped by Cancel")

    def _kill(self) -> None:
        self.worker.kill("was stopped by Cancel")

    def _fail_and_stop(self, message: str, kind: str) -> None:
        """A hung worker: kill it now (it holds nothing the next job needs) and say a fresh one comes next."""
        self.worker.kill("had stopped responding")
        self._status.state = JobState.ERROR
        self._status.error = f"{message} {FRESH_WORKER_NOTE}"
        self._status.error_kind = kind
        self._status.message = "Failed"

    def _died_status(self) -> JobStatus:
        status = super()._died_status()
        self.worker.exit_note = "had stopped unexpectedly"
        setup_problem = any("No module named" in line for line in self.console_tail)   # a fresh one fails too
        if not setup_problem:
            status.error = f"{status.error} {FRESH_WORKER_NOTE}"
        return status

    def close(self, timeout: float = 2.0) -> None:
        """Leave the warm worker running when the job has ended; a job still running (Blender loads a file or
        quits) is not waited for: the worker is killed and the next job starts a fresh one."""
        if self._proc is not None and not self._status.state.finished and self.worker.alive:
            self.worker.kill("was stopped with its job")
        self.worker.unregister(self.job_id)


_SHARED: dict = {}


def shared_warm_worker(command: list[str], *, cwd: str | None = None, env: dict | None = None,
                       idle_timeout: float = WARM_IDLE_TIMEOUT) -> WarmWorker:
    """The process-wide warm worker for this command and environment; one started with other settings
    (another Python, another script, other environment) is stopped and replaced."""
    worker = _SHARED.get("worker")
    if worker is not None and not worker.matches(command, cwd, env):
        worker.stop()
        worker = None
    if worker is None:
        worker = WarmWorker(command, cwd=cwd, env=env, idle_timeout=idle_timeout)
        _SHARED["worker"] = worker
    return worker


def current_warm_worker() -> WarmWorker | None:
    return _SHARED.get("worker")


def stop_warm_worker() -> None:
    """Stop the shared warm worker (Stop Worker, extension unregister, interpreter exit)."""
    worker = _SHARED.pop("worker", None)
    if worker is not None:
        worker.stop()


atexit.register(stop_warm_worker)
