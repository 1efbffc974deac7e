"""Installing the generator runtime: a venv with the pinned requirements, made beside the one in use and
swapped in only when it is complete. No bpy.

Blender never waits on pip (blender-notes §1.6): the steps (venv, pip) run one after the other in
subprocesses, a reader thread collects their output and `tick()` (called from a modal timer, or by hand in
tests) never blocks. Nothing runs during register().

- **New folder, swap on success.** Each install goes into a fresh `rt-XXXXXXXX/` inside the runtime
  folder, with pip's temporary files (TMPDIR) and cache pointed inside it too. Only when every step has
  succeeded is the stamp (runtime.STAMP_NAME) replaced, in one step, to name the new folder; then the old
  runtime is removed. A cancelled or failed install removes its own folder, temp files included, and leaves
  the runtime in use exactly as it was. Leftovers of an install that Blender did not live to clean up
  (a crash, a quit) are removed when the next install starts.
- **Wheels only.** pip runs with `--only-binary=:all:` and the pins for the Python version at hand
  (runtime_requirements/python3.X.txt): nothing is compiled, so no compiler is needed. A package that has no
  wheel for this Python and computer ends the install with a message naming it and saying what to do.
- **Progress.** pip says little while it works (nothing while it downloads a 900 MB torch with the progress
  bar off, nothing while it unpacks it), so the bar follows what pip does on disk as well as what it prints:
  'Collecting' lines while it resolves, the bytes arriving in its temp folder while it downloads, the bytes
  written into the venv while it installs (PipProgress). The whole output goes to install.log in the runtime
  folder, which survives a failed install.
- ECHOMASK_WHEELHOUSE names a folder of wheels to install from instead of the internet (a studio's offline
  mirror; the tests' local packages).
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
import platform
import queue
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

from ...core.jobs.client import JobState
from .runtime import (LEGACY_VENV, RuntimeInstallError, pins_digest, python_tag, read_stamp, requirements_file,
                      venv_python, write_stamp)

ENV_WHEELHOUSE = "ECHOMASK_WHEELHOUSE"
FOLDER_PREFIX = "rt-"   # short: Windows paths inside torch are long already
LOG_NAME = "install.log"
# pip options per install variant. DEFAULT: PyPI's own torch (CUDA on Linux/Windows, Apple GPU on macOS).
# CPU: PyTorch's CPU-only wheels (about 200 MB instead of several GB), everything else from PyPI.
VARIANTS = {
    "DEFAULT": [],
    "CPU": ["--index-url", "https://download.pytorch.org/whl/cpu", "--extra-index-url", "https://pypi.org/simple"],
}
KILL_GRACE = 5.0   # seconds between terminate and kill on cancel


# ------------------------------------------------------------------------------------------ small helpers

def platform_label() -> str:
    """'Linux x86_64', 'macOS arm64', 'Windows x64': the computer, as the wheel names see it."""
    machine = platform.machine().lower() or "unknown"
    machine = {"amd64": "x64", "x86_64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    system = {"linux": "Linux", "darwin": "macOS", "win32": "Windows"}.get(sys.platform, sys.platform)
    return f"{system} {machine}"


def format_bytes(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.0f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.0f} kB"
    return f"{int(n)} bytes"


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def wrap_text(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters holding all of `text` (long paths and URLs are split too)."""
    width = max(10, int(width))
    out = []
    for paragraph in str(text).splitlines() or [""]:
        out.extend(textwrap.wrap(paragraph, width, break_long_words=True, break_on_hyphens=False,
                                 replace_whitespace=False, drop_whitespace=True) or [""])
    return out


def tree_size(path: str) -> int:
    """Bytes in the files under `path` (0 when it does not exist); never raises."""
    total = 0
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        pass
        except OSError:
            pass
    return total


def remove_tree(path: str, attempts: int = 5) -> bool:
    """Delete a folder completely (read-only files too; retried, as Windows may hold files a moment after a
    process ends). True when it is gone."""
    def make_writable_and_retry(func, target, _exc):
        try:
            os.chmod(target, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
            func(target)
        except OSError:
            pass

    for attempt in range(attempts):
        if not os.path.lexists(path):
            return True
        try:
            if os.path.islink(path) or not os.path.isdir(path):
                os.remove(path)
            elif sys.version_info >= (3, 12):
                shutil.rmtree(path, onexc=make_writable_and_retry)
            else:
                shutil.rmtree(path, onerror=make_writable_and_retry)
        except OSError:
            pass
        if not os.path.lexists(path):
            return True
        time.sleep(0.2 * (attempt + 1))
    return not os.path.lexists(path)


def stale_folders(runtime_dir: str) -> list[str]:
    """Runtime folders that are not the installed runtime: unfinished installs, replaced runtimes, and the
    venv of an older EchoMask once a newer install is in use (or when it never finished)."""
    stamp = read_stamp(runtime_dir)
    keep = None
    if stamp and stamp.get("folder"):
        keep = os.path.join(runtime_dir, os.path.basename(stamp["folder"]))
    elif stamp:
        keep = os.path.join(runtime_dir, LEGACY_VENV)
    try:
        names = sorted(os.listdir(runtime_dir))
    except OSError:
        return []
    out = []
    for name in names:
        path = os.path.join(runtime_dir, name)
        if not (name.startswith(FOLDER_PREFIX) or name == LEGACY_VENV) or not os.path.isdir(path):
            continue
        if keep is None or os.path.normpath(path) != os.path.normpath(keep):
            out.append(path)
    return out


# ------------------------------------------------------------------------------------------ steps

@dataclasses.dataclass
class InstallStep:
    label: str
    argv: list[str]
    weight: float = 1.0
    pip: bool = False        # a pip run: its progress is followed (PipProgress)
    expect_bytes: float = 0  # otherwise: about how much it writes into the venv (the bar follows it)


def install_steps(target: str, base_python: str | None = None, variant: str = "DEFAULT",
                  requirements: str | None = None, wheelhouse: str | None = None) -> list[InstallStep]:
    """venv + pip install of the pins, all inside the new runtime folder `target`.

    `base_python` defaults to Blender's own Python; `requirements` to its version's pin list; `wheelhouse`
    (a folder of wheels) replaces the internet."""
    if variant not in VARIANTS:
        raise RuntimeInstallError(f"Unknown runtime variant '{variant}' (use {', '.join(VARIANTS)}).")
    base = base_python or sys.executable
    requirements = requirements or requirements_file()
    venv_dir = os.path.join(target, "venv")
    index = ["--no-index", "--find-links", wheelhouse] if wheelhouse else VARIANTS[variant]
    return [
        InstallStep("Creating the runtime folder", [base, "-m", "venv", venv_dir], 1.0, expect_bytes=15e6),
        InstallStep("Downloading and installing torch and the other packages",
                    [venv_python(venv_dir), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                     "--progress-bar", "off", "--no-cache-dir", "--only-binary=:all:", *index,
                     "-r", requirements], 20.0, pip=True),
    ]


def step_environment(target: str, base: dict | None = None) -> dict:
    """The environment of every install step: pip's and Python's temp files and pip's cache inside the new
    runtime folder (so removing it removes everything), and none of Blender's own Python settings."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PIP_REQUIRE_VIRTUALENV",
                "PIP_USER", "PIP_TARGET", "PIP_PREFIX"):
        env.pop(key, None)
    tmp = os.path.join(target, "tmp")
    for key in ("TMPDIR", "TEMP", "TMP"):
        env[key] = tmp
    env["PIP_CACHE_DIR"] = os.path.join(target, "cache")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


# ------------------------------------------------------------------------------------------ progress

_SIZE = re.compile(r"\((\d+(?:\.\d+)?)\s*(bytes|kB|MB|GB)\)\s*$")
_UNITS = {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def _file_label(target: str) -> str:
    """'torch 2.13.0' for a wheel's file name or URL."""
    name = target.rstrip("/").rsplit("/", 1)[-1].split("#", 1)[0]
    if name.endswith(".whl"):
        parts = name[:-4].split("-")
        if len(parts) >= 2:
            return f"{parts[0]} {parts[1]}"
    return name


class PipProgress:
    """How far a `pip install` is, from its output lines and from bytes on disk. Plain Python.

    Three phases share the bar: resolving (each 'Collecting' or 'Processing' line), downloading (bytes in
    pip's temp folder against the sizes pip announces) and installing (bytes written into the venv against
    about three times the bytes of the wheels). Sizes not known yet are estimated, so each measurement moves
    the bar by its share of what is left in the phase: the bar never goes back, and moves whenever bytes move.
    """

    RESOLVE_END = 0.12
    DOWNLOAD_END = 0.72
    INSTALL_END = 0.99
    GUESS_FILE_BYTES = 8e6        # a package whose size pip has not announced yet
    UNPACKED_RATIO = 3.0          # bytes written into the venv per byte of wheels (measured: about 4 for the
                                  # CPU runtime, 361 MB of wheels -> 1.44 GB; CUDA libraries compress less)

    def __init__(self):
        self.phase = "starting"       # starting, resolving, downloading, installing, done
        self.value = 0.0
        self.collected: list[str] = []
        self.files: list[tuple[str, float]] = []   # announced downloads: (label, bytes)
        self.local_bytes = 0.0                      # wheels pip reads from disk (a wheelhouse)
        self.downloaded = 0.0                        # bytes in pip's temp folder
        self.written = 0.0                           # bytes written into the venv since installing began
        self.installing: list[str] = []
        self._venv_base: float | None = None
        self._venv_now = 0.0

    # --------------------------------------------------------------- input

    def feed(self, line: str) -> None:
        text = line.strip()
        if text.startswith(("Collecting ", "Processing ")):   # Processing: a wheel read from a local folder
            what = text.split(" ", 1)[1].split(" (from ", 1)[0].strip()
            if text.startswith("Processing "):
                try:
                    self.local_bytes += os.path.getsize(what)
                except OSError:
                    pass
                what = _file_label(what)
            if self.phase in ("starting", "resolving"):
                self.phase = "resolving"
                self.value += (self.RESOLVE_END - self.value) * 0.06
            self.collected.append(what)
        elif text.startswith("Downloading "):
            what = text[len("Downloading "):].rsplit(" (", 1)[0]
            match = _SIZE.search(text)
            if match and not what.endswith(".metadata"):   # a wheel, not just its metadata (PEP 658)
                self._enter("downloading", self.RESOLVE_END)
                self.files.append((_file_label(what), float(match.group(1)) * _UNITS[match.group(2)]))
        elif text.startswith("Installing collected packages:"):
            self._enter("installing", self.DOWNLOAD_END)
            self.installing = [p.strip() for p in text.split(":", 1)[1].split(",") if p.strip()]
            self._venv_base = self._venv_now
        elif text.startswith("Successfully installed"):
            self.phase = "done"
            self.value = 1.0

    def measure(self, tmp_bytes: float | None = None, venv_bytes: float | None = None) -> None:
        """New sizes of pip's temp folder and of the venv (from a background thread's walk)."""
        if venv_bytes is not None:
            self._venv_now = float(venv_bytes)
        if tmp_bytes is not None and self.phase in ("resolving", "downloading"):
            tmp_bytes = float(tmp_bytes)
            if tmp_bytes > self.downloaded:
                if self.phase == "downloading":
                    left = max(self._download_left(), 0.2 * self.downloaded, 1.0)   # an estimate can be low
                    self.value += (self.DOWNLOAD_END - self.value) * min(0.5, (tmp_bytes - self.downloaded) / left)
                self.downloaded = tmp_bytes
        if self.phase == "installing" and self._venv_base is not None:
            written = max(0.0, self._venv_now - self._venv_base)
            if written > self.written:
                left = max(self._install_expected() - self.written, 0.35 * self.written, 1.0)  # may be low
                self.value += (self.INSTALL_END - self.value) * min(0.5, (written - self.written) / left)
                self.written = written

    def _enter(self, phase: str, floor: float) -> None:
        order = ("starting", "resolving", "downloading", "installing", "done")
        if order.index(phase) > order.index(self.phase):
            self.phase = phase
            self.value = max(self.value, floor)

    def _download_expected(self) -> float:
        announced = sum(size for _, size in self.files)
        unannounced = max(0, len(self.collected) - len(self.files)) * self.GUESS_FILE_BYTES
        return announced + unannounced

    def _download_left(self) -> float:
        return self._download_expected() - self.downloaded

    def _install_expected(self) -> float:
        source = max(self.downloaded, sum(size for _, size in self.files)) + self.local_bytes
        return max(source * self.UNPACKED_RATIO, 1.0)

    # --------------------------------------------------------------- output

    @property
    def fraction(self) -> float:
        return min(1.0, max(0.0, self.value))

    def describe(self) -> str:
        """One short line: what pip is doing now, with sizes."""
        if self.phase == "resolving":
            last = f" (now {self.collected[-1]})" if self.collected else ""
            return f"Finding the packages: {len(self.collected)} so far{last}"
        if self.phase == "downloading" and self.files:
            label, size = self.files[-1]
            before = sum(s for _, s in self.files[:-1])
            done = min(size, max(0.0, self.downloaded - before))
            count = max(len(self.collected), len(self.files))
            return (f"Downloading {label}: {format_bytes(done)} of {format_bytes(size)} (file {len(self.files)} "
                    f"of {count}, {format_bytes(self.downloaded)} in all)")
        if self.phase == "installing":
            return (f"Installing {len(self.installing)} packages: {format_bytes(self.written)} of about "
                    f"{format_bytes(self._install_expected())} written")
        if self.phase == "done":
            return "Packages installed"
        return "Starting pip"


# ------------------------------------------------------------------------------------------ failures

_NO_WHEEL = re.compile(r"No matching distribution found for (\S+)")
_VERSIONS = re.compile(r"Could not find a version that satisfies the requirement (\S+) \(from versions: ([^)]*)\)")
_NETWORK = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
            "Name or service not known", "getaddrinfo failed", "Max retries exceeded", "ReadTimeoutError",
            "ConnectTimeoutError", "Connection reset", "Network is unreachable", "SSLError",
            "ProxyError", "nodename nor servname")


def explain_pip_failure(code: int | None, lines: list[str], python_version, log_path: str) -> str:
    """Why pip failed, in an animator's words, with what to do."""
    text = "\n".join(lines)
    unchanged = "Your previous runtime (if you had one) is unchanged."
    see_log = f"The full log is in {log_path}."
    if "No space left on device" in text or "Errno 28" in text or "There is not enough space" in text:
        return (f"The install stopped because the disk is full. Free some space (the GPU runtime needs about "
                f"8 GB while installing, the CPU one about 2 GB) on the drive with {os.path.dirname(log_path)}, "
                f"then press Install Runtime again. {unchanged} {see_log}")
    if "Long Path support" in text or "LongPathsEnabled" in text:
        return ("Windows refused a file path longer than 260 characters while installing torch. Turn on long "
                "paths (search the web for 'Windows enable long paths', or ask your IT department), then press "
                f"Install Runtime again. {unchanged} {see_log}")
    missing = _NO_WHEEL.findall(text)
    network = any(marker in text for marker in _NETWORK)
    if network:
        return ("The install could not download its packages: the internet could not be reached (or a proxy or "
                "firewall blocked it). Check your connection, then press Install Runtime again. "
                f"{unchanged} {see_log}")
    if missing:
        package = missing[-1]
        found = dict(_VERSIONS.findall(text))
        versions = [v.strip() for v in found.get(package, "").split(",") if v.strip() and v.strip() != "none"]
        exists = (f" (versions with one: {', '.join(versions[-4:])})" if versions else
                  " (no version of it has one)")
        return (f"No ready-made package (wheel) of {package} exists for Python {python_tag(python_version)} on "
                f"{platform_label()}{exists}. EchoMask installs ready-made packages only, because building one "
                "from source needs a compiler that most computers do not have. Update the EchoMask extension (a "
                "newer version may pin one that exists), or choose 'Existing Python' and pick a Python that "
                f"already has torch. {unchanged} {see_log}")
    last = next((line.strip() for line in reversed(lines) if line.strip().startswith("ERROR")), "") or \
        next((line.strip() for line in reversed(lines) if line.strip()), "")
    detail = f" pip said: {last}" if last else ""
    return (f"Installing the packages failed (exit code {code}).{detail} Check your internet connection and "
            f"free disk space, then press Install Runtime again. {unchanged} {see_log}")


# ------------------------------------------------------------------------------------------ installer

def _popen_group() -> dict:
    if os.name == "posix":
        return {"start_new_session": True}   # one signal reaches ensurepip's or pip's children too
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
            | getattr(subprocess, "CREATE_NO_WINDOW", 0)}


def _signal_tree(proc: subprocess.Popen, kill: bool) -> None:
    """Stop a step and its children (ensurepip under venv) without waiting for them."""
    if proc.poll() is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        else:  # the whole tree, at once (nothing of it is kept); taskkill runs in the background
            threading.Thread(target=subprocess.run, args=(["taskkill", "/F", "/T", "/PID", str(proc.pid)],),
                             kwargs={"capture_output": True, "timeout": 30,
                                     "creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)},
                             daemon=True).start()
            if kill:
                proc.kill()
    except (OSError, subprocess.SubprocessError):
        try:
            proc.kill()
        except OSError:
            pass


class RuntimeInstaller:
    """Installs a runtime into a new folder of `runtime_dir` and swaps it in on success; `tick()` never blocks.

    States: RUNNING -> DONE | ERROR, or RUNNING -> CANCELLING (stopping pip, removing the new folder) ->
    CANCELLED. The runtime in use is never touched until the new one is complete.
    """

    def __init__(self, runtime_dir: str, variant: str = "DEFAULT", *, base_python: str | None = None,
                 python_version=None, requirements: str | None = None, wheelhouse: str | None = None,
                 steps=None, log_lines: int = 200, monitor_interval: float = 0.5, clock=time.monotonic):
        self.runtime_dir = runtime_dir
        self.variant = variant
        self.base_python = base_python or sys.executable
        self.python_version = tuple(python_version or sys.version_info[:2])[:2]
        # raises RuntimeInstallError (no pins for this Python) before anything is created
        self.requirements = requirements or requirements_file(self.python_version)
        self.wheelhouse = wheelhouse if wheelhouse is not None else (os.environ.get(ENV_WHEELHOUSE) or None)
        self._steps_for = steps or (lambda target: install_steps(target, self.base_python, self.variant,
                                                                 self.requirements, self.wheelhouse))
        self.steps: list[InstallStep] = []
        self.log = collections.deque(maxlen=log_lines)
        self.log_path = os.path.join(runtime_dir, LOG_NAME)
        self.state = JobState.NOT_STARTED
        self.error: str | None = None
        self.target: str | None = None
        self.progress = PipProgress()
        self.monitor_interval = monitor_interval
        self.cleanup_done = threading.Event()
        self._clock = clock
        self._had_runtime = False
        self._index = -1
        self._proc: subprocess.Popen | None = None
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._monitor_stop = threading.Event()
        self._measured: dict = {}   # {"sizes": (bytes in pip's temp folder, bytes in the venv)}
        self._value = 0.0
        self._started_at = 0.0
        self._ended_at: float | None = None
        self._terminated_at: float | None = None
        self._logfile = None
        self._cleanup_thread: threading.Thread | None = None

    # --------------------------------------------------------------- what the UI shows

    @property
    def fraction(self) -> float:
        """0..1 over all steps, by their weights; never goes back."""
        if self.state == JobState.DONE:
            return 1.0
        if 0 <= self._index < len(self.steps):
            total = sum(s.weight for s in self.steps) or 1.0
            done = sum(s.weight for s in self.steps[:self._index])
            step = self.steps[self._index]
            if step.pip:
                within = self.progress.fraction
            elif step.expect_bytes and "sizes" in self._measured:   # ensurepip filling the new venv
                within = 0.95 * (1.0 - math.exp(-self._measured["sizes"][1] / step.expect_bytes))
            else:
                within = 0.0
            self._value = max(self._value, min(1.0, (done + step.weight * within) / total))
        return self._value

    @property
    def elapsed(self) -> float:
        if not self._started_at:
            return 0.0
        return (self._ended_at or self._clock()) - self._started_at

    @property
    def message(self) -> str:
        """A short line for the progress bar (the details and the error are in `detail`)."""
        if self.state == JobState.DONE:
            return f"Runtime installed in {format_duration(self.elapsed)}. Press Check to see its torch and GPU."
        if self.state == JobState.ERROR:
            return "Install failed (see below). " + ("Your previous runtime is unchanged." if self._had_runtime
                                                      else "Nothing was installed.")
        if self.state == JobState.CANCELLING:
            return "Cancelling: stopping pip and removing the unfinished runtime"
        if self.state == JobState.CANCELLED:
            return "Install cancelled. " + ("Your previous runtime is unchanged." if self._had_runtime else
                                            "Nothing was installed.")
        if 0 <= self._index < len(self.steps):
            step = self.steps[self._index]
            what = self.progress.describe() if step.pip else step.label
            return f"Step {self._index + 1} of {len(self.steps)}: {what} ({format_duration(self.elapsed)})"
        return "Starting"

    @property
    def detail(self) -> str:
        """The full text under the bar: the error, or pip's current line (never cut)."""
        if self.state == JobState.ERROR:
            return self.error or ""
        if self.state in (JobState.RUNNING, JobState.CANCELLING):
            return next((line for line in reversed(self.log) if line.strip()), "")
        return ""

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        os.makedirs(self.runtime_dir, exist_ok=True)
        self._had_runtime = read_stamp(self.runtime_dir) is not None
        for stale in stale_folders(self.runtime_dir):   # leftovers of earlier installs (quit, crash)
            self._remove_later(stale)
        self.target = tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=self.runtime_dir)
        for sub in ("tmp", "cache"):
            os.makedirs(os.path.join(self.target, sub), exist_ok=True)
        try:
            self._logfile = open(self.log_path, "w", encoding="utf-8", errors="replace")
        except OSError:
            self._logfile = None
        self._log(f"EchoMask runtime install, {time.strftime('%Y-%m-%d %H:%M:%S')}: Python "
                  f"{python_tag(self.python_version)} on {platform_label()}, variant {self.variant}, pins "
                  f"{os.path.basename(self.requirements)}, into {self.target}")
        self.steps = self._steps_for(self.target)
        self._started_at = self._clock()
        self.state = JobState.RUNNING
        self._next_step()

    def tick(self) -> JobState:
        if self.state not in (JobState.RUNNING, JobState.CANCELLING):
            return self.state
        self._drain()
        sizes = self._measured.get("sizes")
        if sizes is not None and 0 <= self._index < len(self.steps) and self.steps[self._index].pip:
            self.progress.measure(*sizes)
        if self.state == JobState.CANCELLING:
            return self._tick_cancelling()
        if self._proc is None:
            return self.state
        code = self._proc.poll()
        if code is None:
            return self.state
        if self._reader is not None:
            self._reader.join(1.0)
        self._drain()
        self._monitor_stop.set()
        if code != 0:
            step = self.steps[self._index]
            if step.pip:
                message = explain_pip_failure(code, list(self.log), self.python_version, self.log_path)
            else:
                tail = next((line for line in reversed(self.log) if line.strip()), "")
                message = (f"{step.label} failed (exit code {code}). {tail} Check free disk space, then press "
                           f"Install Runtime again. The full log is in {self.log_path}.")
            self._fail(message)
            return self.state
        self._next_step()
        return self.state

    def cancel(self) -> None:
        """Stop the install: pip is stopped, the new folder removed; the runtime in use stays. Never blocks."""
        if self.state == JobState.NOT_STARTED:
            self.state = JobState.CANCELLED
            self.cleanup_done.set()
            return
        if self.state != JobState.RUNNING:
            return
        self.state = JobState.CANCELLING
        self._log("Cancelled by the user.")
        self._monitor_stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._terminated_at = self._clock()
            _signal_tree(self._proc, kill=False)
        self._tick_cancelling()

    def wait(self, timeout: float) -> JobState:
        """Tick to the end (scripts and tests; never the UI thread)."""
        end = time.monotonic() + timeout
        while self.tick() in (JobState.RUNNING, JobState.CANCELLING) and time.monotonic() < end:
            time.sleep(0.05)
        return self.state

    # --------------------------------------------------------------- internals

    def _tick_cancelling(self) -> JobState:
        if self._proc is not None and self._proc.poll() is None:
            if self._terminated_at is not None and self._clock() - self._terminated_at > KILL_GRACE:
                _signal_tree(self._proc, kill=True)
            return self.state
        if self._cleanup_thread is None:
            self._start_cleanup()
        if self.cleanup_done.is_set():
            self.state = JobState.CANCELLED
            self._ended_at = self._clock()
            self._close_log()
        return self.state

    def _next_step(self) -> None:
        self._index += 1
        if self._index >= len(self.steps):
            self._finish()
            return
        step = self.steps[self._index]
        self._log(f"$ {' '.join(step.argv)}")
        try:
            self._proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                          errors="replace", bufsize=1, env=step_environment(self.target),
                                          cwd=self.target, **_popen_group())
        except OSError as exc:
            self._fail(f"{step.label} could not start ({exc}). Check that Blender's Python is intact "
                       "(reinstall Blender), or choose 'Existing Python' instead.")
            return
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True,
                                        name="echomask-install-reader")
        self._reader.start()
        self._monitor_stop.set()
        self._measured = {}    # this step's own: a slow walk of the last step cannot write into it
        if step.pip or step.expect_bytes:
            self._monitor_stop = threading.Event()
            threading.Thread(target=self._monitor, args=(self._monitor_stop, self._measured), daemon=True,
                             name="echomask-install-monitor").start()

    def _monitor(self, stop: threading.Event, measured: dict) -> None:
        """Measure pip's temp folder and the venv in the background (a big venv takes a while to walk)."""
        tmp = os.path.join(self.target, "tmp")
        venv = os.path.join(self.target, "venv")
        while not stop.is_set():
            began = time.monotonic()
            measured["sizes"] = (float(tree_size(tmp)), float(tree_size(venv)))
            spent = time.monotonic() - began
            stop.wait(max(self.monitor_interval, 10.0 * spent))   # at most a tenth of a core

    def _read(self, stream) -> None:
        try:
            for line in stream:
                self._lines.put(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass

    def _drain(self) -> None:
        step = self.steps[self._index] if 0 <= self._index < len(self.steps) else None
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if not line.strip():
                continue
            self._log(line)
            if step is not None and step.pip:
                self.progress.feed(line)

    def _log(self, line: str) -> None:
        self.log.append(line)
        if self._logfile is not None:
            try:
                self._logfile.write(line + "\n")
                self._logfile.flush()
            except (OSError, ValueError):
                pass

    def _close_log(self) -> None:
        if self._logfile is not None:
            try:
                self._logfile.close()
            except OSError:
                pass
            self._logfile = None

    def _finish(self) -> None:
        """Every step succeeded: drop the temp files, point the stamp at the new folder, remove the old one."""
        self._monitor_stop.set()
        for sub in ("tmp", "cache"):
            remove_tree(os.path.join(self.target, sub), attempts=2)
        write_stamp(self.runtime_dir, {
            "folder": os.path.basename(self.target), "variant": self.variant,
            "python": python_tag(self.python_version), "requirements": os.path.basename(self.requirements),
            "pins_sha256": pins_digest(self.requirements), "platform": sys.platform,
            "installed_at": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(self.elapsed, 1)})
        for path in stale_folders(self.runtime_dir):   # now the replaced runtime is one of them
            self._remove_later(path)
        self._ended_at = self._clock()
        self._log(f"Installed in {format_duration(self.elapsed)}.")
        self._close_log()
        self.cleanup_done.set()
        self.state = JobState.DONE

    def _fail(self, message: str) -> None:
        self.error = message
        self._ended_at = self._clock()
        self._log(f"FAILED: {message}")
        self.state = JobState.ERROR
        self._start_cleanup()
        self._close_log()

    def _start_cleanup(self) -> None:
        """Remove the unfinished runtime folder (and pip's temp files in it) in the background."""
        target = self.target

        def run():
            try:
                if target:
                    remove_tree(target)
            finally:
                self.cleanup_done.set()

        self._cleanup_thread = threading.Thread(target=run, daemon=True, name="echomask-install-cleanup")
        self._cleanup_thread.start()

    @staticmethod
    def _remove_later(path: str) -> None:
        threading.Thread(target=remove_tree, args=(path,), daemon=True, name="echomask-install-sweep").start()
