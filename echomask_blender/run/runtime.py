"""Which Python runs the generator, where the installed runtime is, and what it can run on. No bpy at import
time.

torch never goes into Blender (docs/BLENDER_NOTES.md §0.3/§0.4): the worker runs in a separate Python, found in
this order:
1. the environment variable ECHOMASK_PYTHON (development and tests);
2. the user's own Python, when the preferences say "Existing Python";
3. the runtime installed by the preferences' "Install Runtime" button: a venv in the extension's user
   folder (`bpy.utils.extension_path_user(__package__, path="runtime")`) with the pins for Blender's Python
   version (runtime_requirements/python3.X.txt).
ECHOMASK_WORKER_SCRIPT may name a script to run instead of `-m core.jobs.worker` (the tests' fake worker), and
ECHOMASK_RUNTIME_DIR overrides the runtime folder.

The runtime folder holds one installed runtime, `rt-XXXXXXXX/venv`, named by the stamp file
`echomask_runtime.json` (older versions put the venv straight in `venv/`, with a stamp without "folder").
The stamp is replaced in one step when a new install has finished (runtime_install.py), so the runtime
in use is always a complete one. The probe (`python -m core.jobs.worker --probe`: torch version, CUDA, Apple
GPU) is cached in the runtime folder next to the Python it describes.
Installing runs as subprocess steps polled like a generation job, so Blender never waits on pip and the log
is visible (docs/BLENDER_NOTES.md §1.6); it never runs during register().
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time

from ...core.errors import DeviceError, EchoMaskError
from ...core.jobs.client import JobState, WorkerJob, python_command, worker_environment

ENV_PYTHON = "ECHOMASK_PYTHON"
ENV_WORKER_SCRIPT = "ECHOMASK_WORKER_SCRIPT"
ENV_RUNTIME_DIR = "ECHOMASK_RUNTIME_DIR"

BLENDER_LAYER_DIR = pathlib.Path(__file__).resolve().parents[1]   # echomask_blender/
EXTENSION_ROOT = str(BLENDER_LAYER_DIR.parent)
# One pin list per Python version (python3.11.txt, python3.13.txt): the runtime's Python is Blender's own.
REQUIREMENTS_DIR = str(BLENDER_LAYER_DIR / "runtime_requirements")
STAMP_NAME = "echomask_runtime.json"
PROBE_NAME = "probe.json"
LEGACY_VENV = "venv"   # where versions before the swap-in install kept the venv
# pip options per install variant. DEFAULT: PyPI's own torch (CUDA on Linux/Windows, Apple GPU on macOS).
# CPU: PyTorch's CPU-only wheels (about 200 MB instead of several GB), everything else from PyPI.
VARIANTS = {
    "DEFAULT": [],
    "CPU": ["--index-url", "https://download.pytorch.org/whl/cpu", "--extra-index-url", "https://pypi.org/simple"],
}


class RuntimeMissingError(EchoMaskError):
    """No Python with the generator's requirements is set up."""


class RuntimeInstallError(EchoMaskError):
    """The runtime cannot be installed here (no pin list for this Python, a missing wheel, ...)."""


@dataclasses.dataclass
class RuntimeChoice:
    python: str
    source: str                       # 'env', 'custom' or 'installed'
    worker_script: str | None = None  # development: run this script instead of `-m core.jobs.worker`

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


def venv_python(venv_dir: str) -> str:
    """The Python executable inside a venv folder."""
    if os.name == "nt":
        return os.path.join(venv_dir, "Scripts", "python.exe")
    return os.path.join(venv_dir, "bin", "python")


def read_stamp(runtime_dir: str) -> dict | None:
    try:
        with open(os.path.join(runtime_dir, STAMP_NAME), encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def write_stamp(runtime_dir: str, stamp: dict) -> None:
    """Replace the stamp in one step (a crash leaves the old one or the new one, never half a file)."""
    path = os.path.join(runtime_dir, STAMP_NAME)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(stamp, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def installed_folder(runtime_dir: str, stamp: dict | None = None) -> str | None:
    """The folder (inside runtime_dir) of the installed runtime's venv, per its stamp; None when none is."""
    stamp = read_stamp(runtime_dir) if stamp is None else stamp
    if not stamp:
        return None
    folder = stamp.get("folder")
    if not folder:
        return os.path.join(runtime_dir, LEGACY_VENV)
    return os.path.join(runtime_dir, os.path.basename(folder), "venv")


def installed_python(runtime_dir: str) -> str | None:
    """The installed runtime's Python, only when an install finished (its stamp is written last)."""
    venv = installed_folder(runtime_dir)
    if venv is None:
        return None
    python = venv_python(venv)
    return python if os.path.isfile(python) else None


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


# ------------------------------------------------------------------------------------------ requirements

def python_tag(version) -> str:
    return f"{version[0]}.{version[1]}"


def supported_pythons(requirements_dir: str | None = None) -> list[tuple[int, int]]:
    """The Python versions that have a pin list (python3.11.txt -> (3, 11)), oldest first."""
    out = []
    for name in os.listdir(requirements_dir or REQUIREMENTS_DIR):
        stem, ext = os.path.splitext(name)
        if ext == ".txt" and stem.startswith("python"):
            try:
                major, minor = (int(x) for x in stem[len("python"):].split("."))
            except ValueError:
                continue
            out.append((major, minor))
    return sorted(out)


def requirements_file(python_version=None, requirements_dir: str | None = None) -> str:
    """The pin list for a Python version (default: this Python, which is Blender's own in the add-on).

    RuntimeInstallError, saying what to do, when this EchoMask has none for that Python."""
    version = tuple(python_version or sys.version_info[:2])[:2]
    folder = requirements_dir or REQUIREMENTS_DIR
    path = os.path.join(folder, f"python{python_tag(version)}.txt")
    if os.path.isfile(path):
        return path
    have = " and ".join(python_tag(v) for v in supported_pythons(folder)) or "none"
    raise RuntimeInstallError(
        f"This EchoMask version has no runtime package list for Python {python_tag(version)} (the Python of this "
        f"Blender); it has lists for Python {have}. Update the EchoMask extension, or choose 'Existing Python' in "
        "Preferences > Add-ons > EchoMask and pick a Python that already has torch.")


def requirements_lines(path: str) -> list[str]:
    """The pins (comments and blanks dropped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return out


def pins_digest(path: str) -> str:
    """Hash of the pins themselves (comments do not count)."""
    return hashlib.sha256("\n".join(requirements_lines(path)).encode("utf-8")).hexdigest()


def runtime_is_current(runtime_dir: str, requirements_dir: str | None = None) -> bool:
    """True when the installed runtime was made from this EchoMask's pins for its Python (else: offer
    'Reinstall Runtime')."""
    stamp = read_stamp(runtime_dir)
    if not stamp or not stamp.get("python") or not stamp.get("pins_sha256"):
        return False  # none, or made by an older EchoMask (its stamp has no pins digest)
    try:
        path = requirements_file(tuple(int(x) for x in str(stamp["python"]).split(".")[:2]), requirements_dir)
    except (RuntimeInstallError, ValueError):
        return False
    return stamp["pins_sha256"] == pins_digest(path)
