"""Finding the worker's Python, installing a runtime (polled, cancellable, never half-installed), probing it."""
import os
import pathlib
import sys

import pytest

from blender_helpers import ctx, registered  # noqa: F401
from conftest import requires_bpy
from studio_helpers import FAKE_WORKER, worker_python

pytestmark = requires_bpy
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _rt():
    from echomask.echomask_blender import runtime

    return runtime


def _clear_env(monkeypatch):
    for key in ("ECHOMASK_PYTHON", "ECHOMASK_WORKER_SCRIPT"):
        monkeypatch.delenv(key, raising=False)


def test_python_is_found_env_then_custom_then_installed(tmp_path, monkeypatch):
    runtime = _rt()
    _clear_env(monkeypatch)
    folder = str(tmp_path / "rt")
    with pytest.raises(runtime.RuntimeMissingError, match="not installed.*Install Runtime"):
        runtime.find_python(folder)
    with pytest.raises(runtime.RuntimeMissingError, match="No Python is chosen"):
        runtime.find_python(folder, "CUSTOM", "")
    with pytest.raises(runtime.RuntimeMissingError, match="does not exist"):
        runtime.find_python(folder, "CUSTOM", str(tmp_path / "nope" / "python"))
    assert runtime.find_python(folder, "CUSTOM", sys.executable).source == "custom"
    # an installed runtime counts only once its stamp is written
    py = pathlib.Path(runtime.venv_python(folder))
    py.parent.mkdir(parents=True)
    py.write_text("")
    with pytest.raises(runtime.RuntimeMissingError):
        runtime.find_python(folder)
    (pathlib.Path(folder) / runtime.STAMP_NAME).write_text('{"variant": "CPU"}')
    choice = runtime.find_python(folder)
    assert choice.source == "installed" and choice.python == str(py)
    assert choice.command(["--probe"]) == [str(py), "-m", "core.worker", "--probe"]
    monkeypatch.setenv("ECHOMASK_PYTHON", sys.executable)
    monkeypatch.setenv("ECHOMASK_WORKER_SCRIPT", FAKE_WORKER)
    choice = runtime.find_python(folder, "CUSTOM", "")
    assert choice.source == "env" and choice.command(["x"]) == [sys.executable, FAKE_WORKER, "x"]


def test_bundled_requirements_pin_exactly_what_requirements_core_pins():
    runtime = _rt()
    core = ROOT / "requirements" / "core.txt"
    if not core.exists():
        pytest.skip("requirements/core.txt is not in this checkout")
    assert runtime.requirements_lines() == runtime.requirements_lines(str(core))
    assert any(line.startswith("torch==") for line in runtime.requirements_lines())


def test_install_steps_are_a_venv_then_pip_with_the_pins(tmp_path):
    runtime = _rt()
    steps = runtime.install_steps(str(tmp_path), base_python="/usr/bin/python3.11", variant="CPU")
    assert steps[0].argv[:3] == ["/usr/bin/python3.11", "-m", "venv"]
    pip = steps[1].argv
    assert pip[0] == runtime.venv_python(str(tmp_path)) and pip[1:4] == ["-m", "pip", "install"]
    assert "https://download.pytorch.org/whl/cpu" in pip and pip[-2:] == ["-r", runtime.REQUIREMENTS_FILE]
    with pytest.raises(Exception, match="Unknown runtime variant"):
        runtime.install_steps(str(tmp_path), variant="ROCM")


def test_installer_runs_steps_in_the_background_and_stamps_only_on_success(tmp_path):
    runtime = _rt()
    folder = str(tmp_path / "rt")
    py = runtime.venv_python(folder)
    steps = [runtime.InstallStep("Creating the runtime folder", [sys.executable, "-m", "venv", "--without-pip",
                                                                   os.path.join(folder, "venv")]),
             runtime.InstallStep("Installing", [py, "-c", "print('Collecting torch'); print('Installing collected "
                                                          "packages: torch')"], 5.0)]
    installer = runtime.RuntimeInstaller(folder, steps, variant="CPU")
    installer.start()
    assert installer.state.name == "RUNNING" and 0.0 <= installer.fraction < 1.0
    assert installer.wait(120).name == "DONE", installer.error
    assert installer.fraction == 1.0 and installer.message == "Runtime installed"
    assert any("Installing collected packages" in line for line in installer.log)
    assert runtime.installed_python(folder) == py and runtime.runtime_is_current(folder)
    # a failing step: clear message, and the previous stamp is gone (a broken runtime never counts)
    bad = runtime.RuntimeInstaller(folder, [runtime.InstallStep("Installing", [py, "-c", "import sys; print('ERROR: "
                                                                                "No matching distribution'); sys.exit(1)"])])
    bad.start()
    assert bad.wait(60).name == "ERROR"
    assert "Installing failed (exit code 1)" in bad.error and "No matching distribution" in bad.error
    assert runtime.installed_python(folder) is None


def test_cancelling_an_install_leaves_nothing_installed(tmp_path):
    runtime = _rt()
    folder = str(tmp_path / "rt")
    installer = runtime.RuntimeInstaller(folder, [runtime.InstallStep("Downloading", [sys.executable, "-c",
                                                                                     "import time; time.sleep(30)"])])
    installer.start()
    installer.tick()
    installer.cancel()
    assert installer.state.name == "CANCELLED" and runtime.read_stamp(folder) is None


def test_install_button_respects_online_access(ctx, tmp_path, monkeypatch):
    import bpy

    monkeypatch.setenv("ECHOMASK_RUNTIME_DIR", str(tmp_path / "rt"))
    assert bpy.app.online_access is False                   # the bpy module runs offline
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.echomask.install_runtime()
    assert not (tmp_path / "rt" / "venv").exists()


def test_probe_reports_devices_and_is_cached_per_python(tmp_path, monkeypatch):
    runtime = _rt()
    monkeypatch.setenv("ECHOMASK_FAKE_PROBE", '{"cuda": true, "cuda_name": "NVIDIA Test GPU"}')
    choice = runtime.RuntimeChoice(worker_python(), "env", FAKE_WORKER)
    info = runtime.run_probe(choice, timeout=60)
    assert info["cuda"] is True and info["torch"] == "0.0-fake"
    assert runtime.probe_summary(info).endswith("NVIDIA Test GPU (CUDA), CPU")
    runtime.save_probe(str(tmp_path), choice.python, info)
    assert runtime.cached_probe(str(tmp_path), choice.python) == info
    assert runtime.cached_probe(str(tmp_path), sys.executable if sys.executable != choice.python else "/bin/sh") is None
    assert runtime.device_problem("CUDA", info) is None
    assert "Apple GPU" in runtime.device_problem("MPS", info)
    assert "CUDA is not available" in runtime.device_problem("CUDA", {"torch": "2.13.0", "cuda": False})


def test_probe_of_the_real_worker_without_torch_says_so(tmp_path):
    """core.worker --probe run by a Python without torch (the 4.2/4.5 test envs) reports it plainly."""
    runtime = _rt()
    try:
        import torch  # noqa: F401
        pytest.skip("this Python has torch; the no-torch probe runs in the Blender 4.2/4.5 environments")
    except ImportError:
        pass
    info = runtime.run_probe(runtime.RuntimeChoice(sys.executable, "env"), timeout=60)
    assert info["torch"] is None and "torch is not installed" in info["error"]
    assert runtime.probe_summary(info) == info["error"]
