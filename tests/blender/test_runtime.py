"""Finding the worker's Python, installing a runtime (pins per Python version, wheels only, into a new folder
swapped in on success, cancellable without harm, progress that follows pip), probing it.

The installer tests run the real venv and pip against local wheels (a fake `torch` module) served from this
machine, so no internet is needed and they take seconds.
"""
import os
import pathlib
import sys
import time
import types

import pytest

from blender_helpers import ctx, registered  # noqa: F401
from conftest import requires_bpy
from studio_helpers import FAKE_WORKER, worker_python
from wheel_helpers import fake_installed_runtime, fake_torch_wheel, isolate_pip, pins, serve, torch_version_of

pytestmark = requires_bpy
ROOT = pathlib.Path(__file__).resolve().parents[2]
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _rt():
    from echomask.echomask_blender.run import runtime

    return runtime


def _inst():
    from echomask.echomask_blender.run import runtime_install

    return runtime_install


def _clear_env(monkeypatch):
    for key in ("ECHOMASK_PYTHON", "ECHOMASK_WORKER_SCRIPT", "ECHOMASK_WHEELHOUSE"):
        monkeypatch.delenv(key, raising=False)


def _wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _runtime_folders(runtime_dir):
    return sorted(p.name for p in pathlib.Path(runtime_dir).iterdir() if p.is_dir())


# ------------------------------------------------------------------------------------------ locating

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
    # an installed runtime counts only once its stamp names it
    py = pathlib.Path(runtime.venv_python(os.path.join(folder, "rt-abc", "venv")))
    py.parent.mkdir(parents=True)
    py.write_text("")
    with pytest.raises(runtime.RuntimeMissingError):
        runtime.find_python(folder)
    runtime.write_stamp(folder, {"folder": "rt-abc", "variant": "CPU", "python": PY})
    choice = runtime.find_python(folder)
    assert choice.source == "installed" and choice.python == str(py)
    assert choice.command(["--probe"]) == [str(py), "-m", "core.jobs.worker", "--probe"]
    # the layout of older versions (venv/ straight in the folder, a stamp without "folder") still runs
    legacy = tmp_path / "legacy"
    old_py = pathlib.Path(runtime.venv_python(str(legacy / "venv")))
    old_py.parent.mkdir(parents=True)
    old_py.write_text("")
    (legacy / runtime.STAMP_NAME).write_text('{"variant": "CPU"}')
    assert runtime.find_python(str(legacy)).python == str(old_py)
    assert not runtime.runtime_is_current(str(legacy))  # made by an older EchoMask: offer a reinstall
    monkeypatch.setenv("ECHOMASK_PYTHON", sys.executable)
    monkeypatch.setenv("ECHOMASK_WORKER_SCRIPT", FAKE_WORKER)
    choice = runtime.find_python(folder, "CUSTOM", "")
    assert choice.source == "env" and choice.command(["x"]) == [sys.executable, FAKE_WORKER, "x"]


# ------------------------------------------------------------------------------------------ pins

def _pins(path):
    return dict(line.split("==", 1) for line in _rt().requirements_lines(path))


def test_pins_exist_per_python_version_and_this_blender_has_its_own():
    runtime = _rt()
    assert {(3, 11), (3, 13)} <= set(runtime.supported_pythons())
    path = runtime.requirements_file()   # this Blender's Python: Install Runtime must work here
    assert os.path.basename(path) == f"python{PY}.txt"
    p311, p313 = _pins(runtime.requirements_file((3, 11))), _pins(runtime.requirements_file((3, 13)))
    for lines in (runtime.requirements_lines(runtime.requirements_file((3, 11))),
                  runtime.requirements_lines(runtime.requirements_file((3, 13)))):
        assert all("==" in line and ";" not in line for line in lines), lines   # exact pins only
    worker_needs = {"torch", "numpy", "scipy", "librosa", "soundfile", "soxr", "pocketsphinx", "safetensors", "tqdm"}
    assert set(p311) == set(p313) == worker_needs
    # numpy 1.26 has no wheels for Python 3.13 (the first numpy with them is 2.1)
    assert tuple(int(x) for x in p313["numpy"].split(".")[:2]) >= (2, 1), p313["numpy"]
    with pytest.raises(runtime.RuntimeInstallError, match=r"Python 3\.14.*3\.11 and 3\.13.*Existing Python"):
        runtime.requirements_file((3, 14))


def test_the_3_11_pins_are_exactly_what_requirements_core_pins():
    runtime = _rt()
    core = ROOT / "requirements" / "core.txt"
    if not core.exists():
        pytest.skip("requirements/core.txt is not in this checkout")
    assert runtime.requirements_lines(runtime.requirements_file((3, 11))) == runtime.requirements_lines(str(core))


def test_an_unsupported_python_is_refused_before_anything_is_made(tmp_path):
    inst = _inst()
    with pytest.raises(_rt().RuntimeInstallError, match=r"Python 3\.14"):
        inst.RuntimeInstaller(str(tmp_path / "rt"), python_version=(3, 14))
    assert not (tmp_path / "rt").exists()


def test_install_steps_make_a_new_venv_and_take_wheels_only(tmp_path):
    runtime, inst = _rt(), _inst()
    target = str(tmp_path / "rt" / "rt-new")
    steps = inst.install_steps(target, base_python="/usr/bin/python3.11", variant="CPU",
                               requirements=runtime.requirements_file((3, 11)))
    assert steps[0].argv == ["/usr/bin/python3.11", "-m", "venv", os.path.join(target, "venv")]  # no --clear
    pip = steps[1].argv
    assert pip[0] == runtime.venv_python(os.path.join(target, "venv")) and pip[1:4] == ["-m", "pip", "install"]
    assert "--only-binary=:all:" in pip and "--no-cache-dir" in pip and steps[1].pip
    assert "https://download.pytorch.org/whl/cpu" in pip
    assert pip[-2:] == ["-r", runtime.requirements_file((3, 11))]
    local = inst.install_steps(target, variant="CPU", requirements="r.txt", wheelhouse="/wheels")[1].argv
    assert ["--no-index", "--find-links", "/wheels"] == local[local.index("--no-index"):local.index("--no-index") + 3]
    assert "https://download.pytorch.org/whl/cpu" not in local
    env = inst.step_environment(target, {"PYTHONHOME": "/blender/python", "PATH": "/bin"})
    assert "PYTHONHOME" not in env and env["PATH"] == "/bin"
    for key in ("TMPDIR", "TEMP", "TMP", "PIP_CACHE_DIR"):   # removing the new folder removes pip's files
        assert env[key].startswith(target + os.sep), key
    with pytest.raises(Exception, match="Unknown runtime variant"):
        inst.install_steps(target, variant="ROCM", requirements="r.txt")


# ------------------------------------------------------------------------------------------ installing

def test_reinstall_swaps_in_only_a_complete_runtime_and_the_bar_follows_the_download(tmp_path, monkeypatch):
    """A real venv + pip from a slow local server: the runtime in use stays until the new one is complete, the
    bar moves while pip prints nothing, and the old runtime, pip's temp files and cache are gone after."""
    runtime, inst = _rt(), _inst()
    isolate_pip(monkeypatch)
    folder = tmp_path / "rt"
    old_python = fake_installed_runtime(folder, "1.0.0")
    wheels = tmp_path / "wheels"
    fake_torch_wheel(wheels, "2.0.0", payload_mb=5)
    req = pins(tmp_path / "pins.txt", "torch==2.0.0")
    samples = []
    with serve(wheels, bytes_per_second=2.5e6) as url:
        installer = inst.RuntimeInstaller(str(folder), "CPU", requirements=req, wheelhouse=url, monitor_interval=0.05)
        installer.start()
        assert installer.state.name == "RUNNING" and installer.target.startswith(str(folder))
        while installer.tick().name == "RUNNING":
            samples.append((installer.fraction, installer.progress.phase, len(installer.log), installer.message))
            if installer.progress.phase == "downloading":   # mid-install: the old runtime is what runs
                assert runtime.installed_python(str(folder)) == old_python
            time.sleep(0.02)
    assert installer.state.name == "DONE", installer.error
    fractions = [s[0] for s in samples]
    assert fractions == sorted(fractions) and installer.fraction == 1.0
    # while pip printed nothing during the download, the bar still moved (bytes in pip's temp folder)
    silent = {}
    for fraction, phase, lines, _ in samples:
        if phase == "downloading":
            silent.setdefault(lines, set()).add(round(fraction, 4))
    assert max(len(v) for v in silent.values()) >= 3, silent
    assert any("Downloading torch 2.0.0" in s[3] and "of 5 MB" in s[3] for s in samples)
    # swapped in: the stamp names the new folder, which runs the new torch; the old runtime is removed
    new_python = runtime.installed_python(str(folder))
    assert new_python != old_python and runtime.read_stamp(str(folder))["folder"] == os.path.basename(installer.target)
    assert torch_version_of(new_python) == "2.0.0"
    assert _wait_for(lambda: not os.path.exists(os.path.dirname(os.path.dirname(old_python))))
    assert _runtime_folders(folder) == [os.path.basename(installer.target)]
    assert sorted(os.listdir(installer.target)) == ["venv"]   # pip's temp and cache folders removed
    log = pathlib.Path(installer.log_path).read_text()
    assert "Successfully installed torch-2.0.0" in log and "--only-binary=:all:" in log


def test_cancelling_a_reinstall_mid_download_keeps_the_working_runtime(tmp_path, monkeypatch):
    runtime, inst = _rt(), _inst()
    isolate_pip(monkeypatch)
    folder = tmp_path / "rt"
    old_python = fake_installed_runtime(folder, "1.0.0")
    stamp = runtime.read_stamp(str(folder))
    wheels = tmp_path / "wheels"
    fake_torch_wheel(wheels, "2.0.0", payload_mb=4)
    req = pins(tmp_path / "pins.txt", "torch==2.0.0")
    with serve(wheels, bytes_per_second=4e6, stall_after=1_000_000) as url:  # a download that never ends
        installer = inst.RuntimeInstaller(str(folder), "CPU", requirements=req, wheelhouse=url, monitor_interval=0.05)
        installer.start()
        assert _wait_for(lambda: installer.tick().name == "RUNNING" and installer.progress.downloaded > 500_000, 120)
        partial = list(pathlib.Path(installer.target, "tmp").rglob("torch-2.0.0-*.whl"))
        assert partial, "pip downloads into the new folder's temp folder"
        began = time.monotonic()
        installer.cancel()
        assert time.monotonic() - began < 1.0                     # never blocks Blender
        assert installer.state.name in ("CANCELLING", "CANCELLED")
        assert installer.wait(60).name == "CANCELLED"
    assert "previous runtime is unchanged" in installer.message
    assert not os.path.exists(installer.target)                  # half venv and pip's temp files removed
    assert _runtime_folders(folder) == ["rt-old"]
    assert runtime.read_stamp(str(folder)) == stamp
    assert runtime.installed_python(str(folder)) == old_python and torch_version_of(old_python) == "1.0.0"


def test_a_missing_wheel_is_named_with_the_python_version_and_what_to_do(tmp_path, monkeypatch):
    """pip's real answer when only a source package exists: nothing is compiled, the message says what to do,
    and the runtime in use is untouched."""
    runtime, inst = _rt(), _inst()
    isolate_pip(monkeypatch)
    folder = tmp_path / "rt"
    old_python = fake_installed_runtime(folder, "1.0.0")
    wheels = tmp_path / "wheels"
    fake_torch_wheel(wheels, "2.0.0")
    (wheels / "numpy-1.26.4.tar.gz").write_bytes(b"an sdist pip would have to compile")
    req = pins(tmp_path / "pins.txt", "torch==2.0.0", "numpy==1.26.4")

    def steps(target):  # pip itself, as the installer runs it, without spending time on a new venv
        return [inst.InstallStep("Installing", [sys.executable, "-m", "pip", "install", "--dry-run",
                                                "--ignore-installed", "--no-input", "--disable-pip-version-check", "--only-binary=:all:",
                                                "--no-index", "--find-links", str(wheels), "-r", req], pip=True)]

    installer = inst.RuntimeInstaller(str(folder), "CPU", requirements=req, steps=steps)
    installer.start()
    assert installer.wait(120).name == "ERROR"
    error = installer.error
    assert "numpy==1.26.4" in error and f"Python {PY}" in error and inst.platform_label() in error
    assert "ready-made" in error and "compiler" in error and "Update the EchoMask extension" in error
    assert "Existing Python" in error and installer.log_path in error and "unchanged" in error
    assert installer.cleanup_done.wait(30) and not os.path.exists(installer.target)
    assert runtime.installed_python(str(folder)) == old_python


def test_pip_failures_are_explained():
    inst = _inst()
    net = inst.explain_pip_failure(1, ["WARNING: Retrying ... NewConnectionError(...)",
                                       "ERROR: Could not find a version that satisfies the requirement torch==2.13.0 "
                                       "(from versions: none)",
                                       "ERROR: No matching distribution found for torch==2.13.0"], (3, 13), "/l.log")
    assert "internet could not be reached" in net and "/l.log" in net
    full = inst.explain_pip_failure(1, ["ERROR: Could not install packages due to an OSError: [Errno 28] No space "
                                        "left on device"], (3, 11), "/r/install.log")
    assert "disk is full" in full
    versions = inst.explain_pip_failure(1, ["ERROR: Could not find a version that satisfies the requirement "
                                            "numpy==1.26.4 (from versions: 2.1.0, 2.2.0, 2.5.5)",
                                            "ERROR: No matching distribution found for numpy==1.26.4"], (3, 13), "/l")
    assert "numpy==1.26.4" in versions and "Python 3.13" in versions and "2.5.5" in versions
    long = inst.explain_pip_failure(1, ["ERROR: Could not install packages due to an OSError: [Errno 2] No such file",
                                        "HINT: This error might have occurred since this system does not have "
                                        "Windows Long Path support enabled."], (3, 11), "/l")
    assert "longer than 260 characters" in long
    other = inst.explain_pip_failure(2, ["ERROR: something else went wrong"], (3, 11), "/l")
    assert "exit code 2" in other and "something else went wrong" in other


def test_unfinished_and_replaced_runtimes_are_the_stale_ones(tmp_path):
    runtime, inst = _rt(), _inst()
    folder = tmp_path / "rt"
    for name in ("venv", "rt-a", "rt-b", "other"):
        (folder / name).mkdir(parents=True)
    assert [os.path.basename(p) for p in inst.stale_folders(str(folder))] == ["rt-a", "rt-b", "venv"]
    (folder / runtime.STAMP_NAME).write_text('{"variant": "CPU"}')   # an older version's runtime is in use
    assert [os.path.basename(p) for p in inst.stale_folders(str(folder))] == ["rt-a", "rt-b"]
    runtime.write_stamp(str(folder), {"folder": "rt-b"})
    assert [os.path.basename(p) for p in inst.stale_folders(str(folder))] == ["rt-a", "venv"]
    assert inst.remove_tree(str(folder / "rt-a")) and not (folder / "rt-a").exists()


def test_cancelling_a_failed_or_hung_step_cleans_up_and_kills_it(tmp_path):
    inst = _inst()
    folder = str(tmp_path / "rt")
    installer = inst.RuntimeInstaller(folder, requirements=pins(tmp_path / "p.txt", "x==1"), steps=lambda target: [
        inst.InstallStep("Downloading", [sys.executable, "-c", "import time\nprint('Collecting x==1', flush=True)\n"
                                                               "time.sleep(60)"], pip=True)])
    installer.start()
    assert _wait_for(lambda: installer.tick() and installer.progress.collected, 30)
    installer.cancel()
    assert installer.wait(30).name == "CANCELLED" and installer.message.startswith("Install cancelled. Nothing")
    assert installer._proc.poll() is not None and not os.path.exists(installer.target)
    assert _rt().read_stamp(folder) is None


def test_pip_progress_follows_resolving_downloading_and_installing(tmp_path):
    progress = _inst().PipProgress()
    seen = [progress.fraction]

    def step(feed=None, tmp=None, venv=None):
        if feed:
            progress.feed(feed)
        progress.measure(tmp, venv)
        seen.append(progress.fraction)

    for name in ("torch==2.13.0", "numpy==2.5.5", "filelock", "sympy>=1.13.3"):
        step(f"Collecting {name}")
        step(f"  Downloading {name.split('=')[0].split('>')[0]}-1.0-py3-none-any.whl.metadata (29 kB)")  # PEP 658
    local = tmp_path / "scipy-1.17.1-cp313-cp313-manylinux_2_28_x86_64.whl"   # a wheel from a local folder
    local.write_bytes(b"w" * 1000)
    step(f"Processing {local} (from -r pins.txt (line 3))")
    assert progress.collected[-1] == "scipy 1.17.1" and progress.local_bytes == 1000
    assert progress.phase == "resolving" and 0 < seen[-1] <= progress.RESOLVE_END and len(set(seen)) > 5
    step("Downloading torch-2.13.0-cp313-cp313-manylinux_2_28_x86_64.whl (915.3 MB)")
    assert progress.phase == "downloading" and progress.files == [("torch 2.13.0", 915.3e6)]
    for done in range(1, 10):        # pip prints nothing more for minutes: the bytes move the bar
        step(tmp=done * 90e6)
        assert seen[-1] > seen[-2]
    assert "Downloading torch 2.13.0: 810 MB of 915 MB (file 1 of 5" in progress.describe()
    step("Downloading numpy-2.5.5-cp313-cp313-manylinux_2_28_x86_64.whl (16.6 MB)", tmp=930e6)
    step("Downloading sympy-1.14.0-py3-none-any.whl (6.3 MB)", tmp=936e6)
    assert seen[-1] < progress.DOWNLOAD_END
    step("Installing collected packages: filelock, sympy, numpy, torch", venv=12e6)
    assert progress.phase == "installing" and seen[-1] >= progress.DOWNLOAD_END
    for written in range(1, 8):      # unpacking torch: silent again, the venv grows
        step(venv=12e6 + written * 200e6)
        assert seen[-1] > seen[-2]
    assert "Installing 4 packages: 1.4 GB of about" in progress.describe()
    step("Successfully installed filelock-3 numpy-2.5.5 sympy-1.14.0 torch-2.13.0")
    assert seen == sorted(seen) and seen[-1] == 1.0 and seen[-2] < progress.INSTALL_END


# ------------------------------------------------------------------------------------------ preferences

class _Layout:
    """Records the labels a draw function makes (panels cannot be drawn headless)."""

    def __init__(self, labels):
        self.labels = labels

    def label(self, text="", **kwargs):
        self.labels.append(text)
        return self

    def progress(self, text="", **kwargs):
        self.labels.append(text)
        return self

    def __getattr__(self, name):
        return lambda *args, **kwargs: self

    def __setattr__(self, name, value):
        if name == "labels":
            object.__setattr__(self, name, value)


def test_preferences_show_the_whole_pip_line_the_error_and_the_log(ctx, tmp_path, monkeypatch):
    from echomask.echomask_blender.run import runtime_ops
    from echomask.core.jobs.client import JobState

    monkeypatch.setenv("ECHOMASK_RUNTIME_DIR", str(tmp_path / "rt"))
    log = tmp_path / "rt" / "install.log"
    log.parent.mkdir()
    log.write_text("...")
    pip_line = ("  Downloading https://files.pythonhosted.org/packages/aa/bb/cc/" + "d" * 60 +
                "/torch-2.13.0-cp313-cp313-manylinux_2_28_x86_64.whl (915.3 MB)")
    error = ("No ready-made package (wheel) of numpy==1.26.4 exists for Python 3.13 on Linux x86_64 (versions with "
             "one: 2.5.5). EchoMask installs ready-made packages only, because building one from source needs a "
             "compiler that most computers do not have. Update the EchoMask extension, or choose 'Existing "
             "Python'. The full log is in " + str(log) + ".")
    prefs = types.SimpleNamespace(python_source="INSTALLED", runtime_variant="DEFAULT", custom_python="")

    def drawn(state, message, detail, lines):
        task = types.SimpleNamespace(state=state, fraction=0.4, message=message, detail=detail, log=lines,
                                     log_path=str(log))
        monkeypatch.setitem(runtime_ops._TASK, "task", task)
        labels = []
        runtime_ops.RuntimePreferences.draw_runtime(prefs, ctx, _Layout(labels))
        return labels

    width = runtime_ops.text_width(ctx)
    labels = drawn(JobState.RUNNING, "Step 2 of 2: Downloading torch 2.13.0: 412 MB of 915 MB (file 1 of 41, "
                                     "412 MB in all) (2 min 13 s)", pip_line, ["Collecting torch==2.13.0", pip_line])
    joined = "".join(labels).replace(" ", "")
    assert pip_line.replace(" ", "") in joined                   # the whole line, wrapped, not cut
    assert "412 MB of 915 MB" in " ".join(labels)
    assert all(len(text) <= width for text in labels), [t for t in labels if len(t) > width]
    labels = drawn(JobState.ERROR, "Install failed (see below). Your previous runtime is unchanged.", error,
                   ["ERROR: No matching distribution found for numpy==1.26.4"])
    joined = "".join(labels).replace(" ", "")
    assert error.replace(" ", "") in joined and f"Fulllog:{log}".replace(" ", "") in joined


def test_check_after_a_cancelled_reinstall_shows_the_runtime_really_installed(ctx, tmp_path, monkeypatch):
    """Check runs the real `core.jobs.worker --probe` in the installed runtime (a fake torch module): after a
    Reinstall is cancelled, the old runtime is still there and Check (and the preferences) describe it."""
    import bpy

    from echomask.echomask_blender.run import runtime, runtime_ops

    _clear_env(monkeypatch)
    isolate_pip(monkeypatch)
    folder = tmp_path / "rt"
    monkeypatch.setenv("ECHOMASK_RUNTIME_DIR", str(folder))
    old_python = fake_installed_runtime(folder, "1.0.0")
    monkeypatch.setitem(runtime_ops._TASK, "task", None)

    def check():
        assert bpy.ops.echomask.check_runtime() == {"RUNNING_MODAL"}
        task = runtime_ops._TASK["task"]
        runtime_ops.drive_task(120)
        assert task.state.name == "DONE", task.info
        return runtime_ops.finish_probe(task, ctx)

    assert "torch 1.0.0" in check()
    summary, ok = runtime_ops.runtime_summary(ctx)
    assert ok and "torch 1.0.0" in summary
    # Reinstall (torch 2.0.0 from a local wheelhouse that stalls mid-download), then Cancel
    pins_dir = tmp_path / "pins"
    pins_dir.mkdir()
    pins(pins_dir / f"python{PY}.txt", "torch==2.0.0")
    monkeypatch.setattr(runtime, "REQUIREMENTS_DIR", str(pins_dir))
    wheels = tmp_path / "wheels"
    fake_torch_wheel(wheels, "2.0.0", payload_mb=3)
    with serve(wheels, bytes_per_second=4e6, stall_after=500_000) as url:
        monkeypatch.setenv("ECHOMASK_WHEELHOUSE", url)
        assert bpy.ops.echomask.install_runtime() == {"RUNNING_MODAL"}
        installer = runtime_ops._TASK["task"]
        assert _wait_for(lambda: installer.tick().name == "RUNNING" and installer.progress.phase == "downloading", 120)
        assert runtime_ops.runtime_summary(ctx)[0] == summary        # the runtime in use, during the install
        assert bpy.ops.echomask.check_runtime() == {"CANCELLED"}    # one runtime task at a time
        assert bpy.ops.echomask.cancel_runtime_task() == {"FINISHED"}
        runtime_ops.drive_task(60)
    assert installer.state.name == "CANCELLED" and not os.path.exists(installer.target)
    assert runtime.installed_python(str(folder)) == old_python
    assert runtime_ops.runtime_summary(ctx)[0] == summary
    assert "torch 1.0.0" in check()                                  # really probed: the old runtime works


def test_the_preferences_never_describe_a_runtime_that_is_gone(ctx, tmp_path, monkeypatch):
    from echomask.echomask_blender.run import runtime, runtime_ops

    _clear_env(monkeypatch)
    folder = tmp_path / "rt"
    monkeypatch.setenv("ECHOMASK_RUNTIME_DIR", str(folder))
    python = fake_installed_runtime(folder, "1.0.0")
    runtime.save_probe(str(folder), python, {"python": PY, "torch": "1.0.0"})
    assert "torch 1.0.0" in runtime_ops.runtime_summary(ctx)[0]
    (folder / runtime.STAMP_NAME).unlink()                            # the runtime is no longer installed
    text, ok = runtime_ops.runtime_summary(ctx)
    assert not ok and "not installed" in text and "1.0.0" not in text


def test_install_button_respects_online_access(ctx, tmp_path, monkeypatch):
    import bpy

    _clear_env(monkeypatch)
    monkeypatch.setenv("ECHOMASK_RUNTIME_DIR", str(tmp_path / "rt"))
    assert bpy.app.online_access is False                   # the bpy module runs offline
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.echomask.install_runtime()
    assert not (tmp_path / "rt").exists() or not any((tmp_path / "rt").iterdir())


# ------------------------------------------------------------------------------------------ probe

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
    """core.jobs.worker --probe run by a Python without torch (the Blender-only test envs) reports it plainly."""
    runtime = _rt()
    try:
        import torch  # noqa: F401
        pytest.skip("this Python has torch; the no-torch probe runs in the Blender-only environments")
    except ImportError:
        pass
    info = runtime.run_probe(runtime.RuntimeChoice(sys.executable, "env"), timeout=60)
    assert info["torch"] is None and "torch is not installed" in info["error"]
    assert runtime.probe_summary(info) == info["error"]

