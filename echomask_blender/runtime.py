"""Which Python runs the generator, installing one, and what it can run on. No bpy at import time.

torch never goes into Blender (docs/BLENDER_NOTES.md §0.3/§0.4): the worker runs in a separate Python, found in
this order:
1. the environment variable ECHOMASK_PYTHON (development and tests);
2. the user's own Python, when the preferences say "Existing Python";
3. the runtime installed by the preferences' "Install Runtime" button: a venv in the extension's user
   folder (`bpy.utils.extension_path_user(__package__, path="runtime")`) with the pinned requirements.
ECHOMASK_WORKER_SCRIPT may name a script to run instead of `-m core.worker` (the tests' fake worker), and
ECHOMASK_RUNTIME_DIR overrides the runtime folder.

Installing is a list of subprocess steps (venv, pip) run one after the other and polled like a generation
job, so Blender never waits on pip and the log is visible (docs/BLENDER_NOTES.md §1.6). It never runs during
register(). The probe (`python -m core.worker --probe`: torch version, CUDA, Apple GPU) is cached in
the runtime folder next to the Python it describes.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import pathlib
import queue
import subprocess
import sys
import threading
import time

from ..core.errors import DeviceError, EchoMaskError
from .job import JobState, WorkerJob, python_command, worker_environment

ENV_PYTHON = "ECHOMASK_PYTHON"
ENV_WORKER_SCRIPT = "ECHOMASK_WORKER_SCRIPT"
ENV_RUNTIME_DIR = "ECHOMASK_RUNTIME_DIR"

EXTENSION_ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
REQUIREMENTS_FILE = str(pathlib.Path(__file__).resolve().parent / "runtime_requirements.txt")
STAMP_NAME = "echomask_runtime.json"
PROBE_NAME = "probe.json"
# pip options per install variant. DEFAULT: PyPI's own torch (CUDA on Linux/Windows, Apple GPU on macOS).
# CPU: PyTorch's CPU-only wheels (about 200 MB instead of several GB), everything else from PyPI.
VARIANTS = {
    "DEFAULT": [],
    "CPU": ["--index-url", "https://download.pytorch.org/whl/cpu", "--extra-index-url", "https://pypi.org/simple"],
}


class RuntimeMissingError(EchoMaskError):
    """No Python with the generator's requirements is set up."""


@dataclasses.dataclass
class RuntimeChoice:
    python: str
    source: str                       # 'env', 'custom' or 'installed'
    worker_script: str | None = None  # development: run this script instead of `-m core.worker`

    def command(self, worker_args: list[str]) -> list[str]:
        return python_command(self.python, worker_args, self.worker_script)


# ------------------------------------------------------------------------------------------ locating

def default_runtime_dir(package: str) -> str:
    """The runtime folder: ECHOMASK_RUNTIME_DIR, else the extension's user folder (Blender's config folder
    when registered outside the extension system, e.g. in tests)."""
    override = os.environ.get(ENV_RUNTIME_DIR)
    if override:
        return override
    import bpy

    try:
        return bpy.utils.extension_path_user(package, path="runtime", create=True)
    except ValueError:  # not installed as an extension ("package does not name an extension")
        return bpy.utils.user_resource("CONFIG", path=os.path.join("echomask", "runtime"), create=True)


def venv_python(runtime_dir: str) -> str:
    if os.name == "nt":
        return os.path.join(runtime_dir, "venv", "Scripts", "python.exe")
    return os.path.join(runtime_dir, "venv", "bin", "python")


def read_stamp(runtime_dir: str) -> dict | None:
    try:
        with open(os.path.join(runtime_dir, STAMP_NAME), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def installed_python(runtime_dir: str) -> str | None:
    """The installed runtime's Python, only when an install finished (its stamp is written last)."""
    python = venv_python(runtime_dir)
    if os.path.isfile(python) and read_stamp(runtime_dir):
        return python
    return None


def find_python(runtime_dir: str, mode: str = "INSTALLED", custom_python: str = "") -> RuntimeChoice:
    """The Python to run the worker with; raises RuntimeMissingError (what to do) when there is none."""
    script = os.environ.get(ENV_WORKER_SCRIPT) or None
    env_python = os.environ.get(ENV_PYTHON)
    if env_python:
        if not os.path.isfile(env_python):
            raise RuntimeMissingError(f"{ENV_PYTHON} points at {env_python}, which does not exist.")
        return RuntimeChoice(env_python, "env", script)
    if mode == "CUSTOM":
        path = os.path.abspath(os.path.expanduser(custom_python)) if custom_python else ""
        if not path:
            raise RuntimeMissingError("No Python is chosen for EchoMask's generator. Pick one in Preferences > "
                                      "Add-ons > EchoMask, or switch to the installed runtime.")
        if not os.path.isfile(path):
            raise RuntimeMissingError(f"The Python chosen for EchoMask ({path}) does not exist. Pick it again in "
                                      "Preferences > Add-ons > EchoMask.")
        return RuntimeChoice(path, "custom", script)
    python = installed_python(runtime_dir)
    if python is None:
        raise RuntimeMissingError("EchoMask's generator runtime is not installed. Open Preferences > Add-ons > "
                                  "EchoMask and press 'Install Runtime' (a one-time download), or choose an "
                                  "existing Python that has torch.")
    return RuntimeChoice(python, "installed", script)


# ------------------------------------------------------------------------------------------ probe

def start_probe(choice: RuntimeChoice) -> WorkerJob:
    """Run `--probe` in the background; `tick()` it, then pass its status to `probe_from_status`."""
    job = WorkerJob(choice.command(["--probe"]), cwd=EXTENSION_ROOT, env=worker_environment(EXTENSION_ROOT))
    job.start()
    return job


def probe_from_job(job: WorkerJob, events: list[dict]) -> dict:
    """The probe event's fields from the events a probe job produced (or an 'error' entry)."""
    for event in events:
        if event.get("event") == "probe":
            return {k: v for k, v in event.items() if k != "event"}
    status = job.status()
    if status.state == JobState.ERROR:
        return {"error": status.error}
    return {"error": "The runtime did not describe itself (no probe answer)."}


def run_probe(choice: RuntimeChoice, timeout: float = 120.0) -> dict:
    """Blocking probe (for scripts and tests; the UI polls start_probe instead)."""
    job = start_probe(choice)
    events = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = job.tick()
        events.extend(status.events)
        if any(e.get("event") == "probe" for e in events) or status.state.finished:
            break
        time.sleep(0.02)
    job.close()
    return probe_from_job(job, events)


def _python_identity(python: str) -> list:
    try:
        st = os.stat(python)
        return [os.path.abspath(python), st.st_size, int(st.st_mtime)]
    except OSError:
        return [os.path.abspath(python), None, None]


def save_probe(runtime_dir: str, python: str, info: dict) -> None:
    os.makedirs(runtime_dir, exist_ok=True)
    with open(os.path.join(runtime_dir, PROBE_NAME), "w", encoding="utf-8") as f:
        json.dump({"python": _python_identity(python), "info": info, "when": time.time()}, f)


def cached_probe(runtime_dir: str, python: str) -> dict | None:
    """The saved probe of this very Python (same path, size and time stamp), else None."""
    try:
        with open(os.path.join(runtime_dir, PROBE_NAME), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    return saved.get("info") if saved.get("python") == _python_identity(python) else None


def probe_summary(info: dict | None) -> str:
    """One line for the preferences: 'torch 2.13.0 - NVIDIA RTX 4090 (CUDA)' or what is wrong."""
    if not info:
        return "Not checked yet"
    if info.get("error") and not info.get("torch"):
        return info["error"]
    devices = []
    if info.get("cuda"):
        devices.append(f"{info.get('cuda_name') or 'NVIDIA GPU'} (CUDA)")
    if info.get("mps"):
        devices.append("Apple GPU (Metal)")
    devices.append("CPU")
    return f"Python {info.get('python', '?')}, torch {info.get('torch')}: " + ", ".join(devices)


DEVICES = ("AUTO", "CUDA", "CPU", "MPS")


def device_problem(device: str, info: dict | None) -> str | None:
    """Why `device` cannot be used with the probed runtime (None when it can or when not probed yet)."""
    if device not in DEVICES:
        return f"Unknown device '{device}'."
    if not info or device in ("AUTO", "CPU"):
        return None
    if not info.get("torch"):
        return None  # the runtime itself is the problem; that message comes from the job
    if device == "CUDA" and not info.get("cuda"):
        return ("CUDA is not available in this runtime (no NVIDIA GPU found, or a CPU-only torch). Choose "
                "Auto or CPU, or install the default (CUDA) runtime.")
    if device == "MPS" and not info.get("mps"):
        return "The Apple GPU (Metal) is not available on this computer. Choose Auto or CPU."
    return None


def worker_device(device: str) -> str:
    """The worker request's device name for a panel choice."""
    return {"AUTO": "auto", "CUDA": "cuda", "CPU": "cpu", "MPS": "mps"}[device]


def check_device(device: str, info: dict | None) -> None:
    problem = device_problem(device, info)
    if problem:
        raise DeviceError(problem)


# ------------------------------------------------------------------------------------------ install

def requirements_lines(path: str = REQUIREMENTS_FILE) -> list[str]:
    """The pins (comments and blanks dropped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return out


@dataclasses.dataclass
class InstallStep:
    label: str
    argv: list[str]
    weight: float = 1.0


def install_steps(runtime_dir: str, base_python: str | None = None, variant: str = "DEFAULT",
                  requirements: str = REQUIREMENTS_FILE) -> list[InstallStep]:
    """venv + pip install of the pinned requirements; `base_python` defaults to Blender's own Python."""
    if variant not in VARIANTS:
        raise EchoMaskError(f"Unknown runtime variant '{variant}' (use {', '.join(VARIANTS)}).")
    base = base_python or sys.executable
    venv_dir = os.path.join(runtime_dir, "venv")
    py = venv_python(runtime_dir)
    return [
        InstallStep("Creating the runtime folder", [base, "-m", "venv", "--clear", venv_dir], 1.0),
        InstallStep("Downloading and installing torch and the other requirements (this takes a while)",
                    [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar",
                     "off", *VARIANTS[variant], "-r", requirements], 20.0),
    ]


class RuntimeInstaller:
    """Runs install steps one after another in subprocesses; `tick()` never blocks.

    The stamp file is written only after every step succeeded, so a cancelled or failed install never
    counts as installed.
    """

    def __init__(self, runtime_dir: str, steps: list[InstallStep], variant: str = "DEFAULT",
                 requirements: str = REQUIREMENTS_FILE, log_lines: int = 200):
        self.runtime_dir = runtime_dir
        self.steps = steps
        self.variant = variant
        self.requirements = requirements
        self.log = collections.deque(maxlen=log_lines)
        self.state = JobState.NOT_STARTED
        self.error: str | None = None
        self._index = -1
        self._proc: subprocess.Popen | None = None
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._within = 0.0

    @property
    def fraction(self) -> float:
        total = sum(s.weight for s in self.steps) or 1.0
        if self.state == JobState.DONE:
            return 1.0
        done = sum(s.weight for s in self.steps[:max(self._index, 0)])
        current = self.steps[self._index].weight if 0 <= self._index < len(self.steps) else 0.0
        return min(1.0, (done + current * self._within) / total)

    @property
    def message(self) -> str:
        if self.state == JobState.DONE:
            return "Runtime installed"
        if self.state == JobState.ERROR:
            return self.error or "Install failed"
        if self.state == JobState.CANCELLED:
            return "Install cancelled"
        if 0 <= self._index < len(self.steps):
            last = self.log[-1] if self.log else ""
            return f"{self.steps[self._index].label}: {last[:120]}" if last else self.steps[self._index].label
        return "Starting"

    def start(self) -> None:
        os.makedirs(self.runtime_dir, exist_ok=True)
        stamp = os.path.join(self.runtime_dir, STAMP_NAME)
        if os.path.exists(stamp):
            os.remove(stamp)  # an interrupted reinstall must not look installed
        self.state = JobState.RUNNING
        self._next_step()

    def _next_step(self) -> None:
        self._index += 1
        self._within = 0.0
        if self._index >= len(self.steps):
            self._write_stamp()
            self.state = JobState.DONE
            return
        step = self.steps[self._index]
        self.log.append(f"$ {' '.join(step.argv)}")
        try:
            self._proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, text=True, encoding="utf-8",
                                          errors="replace", bufsize=1, env=self._env())
        except OSError as exc:
            self._fail(f"{step.label} could not start: {exc}")
            return
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
        self._reader.start()

    @staticmethod
    def _env() -> dict:
        env = dict(os.environ)
        for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PIP_REQUIRE_VIRTUALENV"):
            env.pop(key, None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _read(self, stream) -> None:
        try:
            for line in stream:
                self._lines.put(line.rstrip())
        except (OSError, ValueError):
            pass

    def tick(self) -> JobState:
        if self.state != JobState.RUNNING or self._proc is None:
            return self.state
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line:
                self.log.append(line)
                # pip prints one 'Collecting' per package, then 'Installing collected packages'
                if line.startswith(("Collecting", "Downloading", "Using cached", "Requirement already")):
                    self._within = min(0.8, self._within + 0.04)
                elif line.startswith("Installing collected packages"):
                    self._within = 0.85
        code = self._proc.poll()
        if code is None:
            return self.state
        self._reader.join(1.0)
        while not self._lines.empty():
            self.log.append(self._lines.get_nowait())
        if code != 0:
            step = self.steps[self._index]
            tail = next((line for line in reversed(self.log) if line.strip()), "")
            self._fail(f"{step.label} failed (exit code {code}). {tail[:300]} — check your internet "
                       "connection and free disk space, then press Install Runtime again.")
            return self.state
        self._next_step()
        return self.state

    def cancel(self) -> None:
        if self.state == JobState.RUNNING:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self.state = JobState.CANCELLED

    def wait(self, timeout: float) -> JobState:
        end = time.monotonic() + timeout
        while self.tick() == JobState.RUNNING and time.monotonic() < end:
            time.sleep(0.05)
        return self.state

    def _fail(self, message: str) -> None:
        self.error = message
        self.state = JobState.ERROR

    def _write_stamp(self) -> None:
        with open(self.requirements, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        stamp = {"variant": self.variant, "requirements_sha256": digest, "platform": sys.platform,
                 "installed_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        with open(os.path.join(self.runtime_dir, STAMP_NAME), "w", encoding="utf-8") as f:
            json.dump(stamp, f)

    def stamp_is_current(self) -> bool:
        return runtime_is_current(self.runtime_dir, self.requirements)


def runtime_is_current(runtime_dir: str, requirements: str = REQUIREMENTS_FILE) -> bool:
    """True when the installed runtime was made from these exact pins (else: offer 'Update Runtime')."""
    stamp = read_stamp(runtime_dir)
    if not stamp:
        return False
    with open(requirements, "rb") as f:
        return stamp.get("requirements_sha256") == hashlib.sha256(f.read()).hexdigest()
