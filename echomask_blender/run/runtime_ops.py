"""The generator runtime in Blender's preferences: choose a Python or install one, and check what it sees.

`RuntimePreferences` is mixed into the add-on's preferences class (preferences.py). Install and Check
run as background tasks polled by a modal timer (the same pattern as generation): Blender stays usable,
the progress bar, pip's current line (wrapped, never cut), any failure and the log's path show in the
preferences, and nothing runs during register(). What the preferences say about the runtime is always
about the Python that would run now (its cached Check), never a remembered line.
"""
from __future__ import annotations

import os

import bpy

from ...core.errors import EchoMaskError
from ...core.jobs.client import JobState
from . import runtime, runtime_install
from .. import compat
from .modal_timer import TimerModal

# The add-on's module name: "bl_ext.<repo>.echomask" when installed as an extension, "echomask" in tests.
ADDON_PACKAGE = __package__.partition(".echomask_blender")[0]


def preferences(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None else None


def runtime_dir() -> str:
    return runtime.default_runtime_dir(ADDON_PACKAGE)


def choose_python(context=None) -> runtime.RuntimeChoice:
    """The Python to run the worker (RuntimeMissingError when there is none)."""
    prefs = preferences(context)
    mode = prefs.python_source if prefs is not None else "INSTALLED"
    custom = prefs.custom_python if prefs is not None else ""
    return runtime.find_python(runtime_dir(), mode, custom)


def weights_path(context=None) -> str | None:
    """Model weights for the worker: ECHOMASK_WEIGHTS (development, tests); else, when the panel's Model is
    'Model File', the preference's path; None = the bundled default."""
    if os.environ.get("ECHOMASK_WEIGHTS"):
        return os.environ["ECHOMASK_WEIGHTS"]
    settings = getattr(getattr(context or bpy.context, "scene", None), "echomask", None)
    if settings is not None and settings.model == "BUNDLED":
        return None
    prefs = preferences(context)
    path = prefs.weights_path if prefs is not None else ""
    return os.path.abspath(bpy.path.abspath(path)) if path else None


def model_file_problem(context) -> str | None:
    """Why the panel's 'Model File' choice cannot be used (None when it can, or the bundled model is chosen)."""
    settings = getattr(context.scene, "echomask", None)
    if settings is None or settings.model != "FILE" or os.environ.get("ECHOMASK_WEIGHTS"):
        return None
    path = weights_path(context)
    if not path:
        return "Model File is chosen but no file is set: Preferences › EchoMask › Model Weights."
    if not os.path.exists(path):
        return f"The model file {path} does not exist: fix Preferences › EchoMask › Model Weights."
    return None


def cached_probe_for(choice: runtime.RuntimeChoice) -> dict | None:
    return runtime.cached_probe(runtime_dir(), choice.python)


def runtime_summary(context=None) -> tuple[str, bool]:
    """(text, ok): the last Check of the Python that would run the generator now, or why there is none.

    Computed on every redraw from the runtime really in use, so it can never describe a runtime that was
    replaced or is gone."""
    try:
        choice = choose_python(context)
    except runtime.RuntimeMissingError as err:
        return str(err), False
    info = cached_probe_for(choice)
    if not info:
        return "Not checked yet: press Check to see its torch version and GPU.", False
    return runtime.probe_summary(info), bool(info.get("torch"))


def text_width(context) -> int:
    """About how many characters fit on one line of the preferences (for wrapping long text)."""
    region = getattr(context, "region", None)
    width = getattr(region, "width", 0) or 700
    view = getattr(getattr(context, "preferences", None), "view", None)
    scale = getattr(view, "ui_scale", 1.0) or 1.0
    return max(40, int((width - 90) / (7.0 * scale)))


def draw_wrapped(layout, text: str, width: int, icon: str = "NONE") -> None:
    """`text` as labels of at most `width` characters: all of it shows, nothing is cut."""
    col = layout.column(align=True)
    for i, line in enumerate(runtime_install.wrap_text(text, width)):
        col.label(text=line, icon=icon if i == 0 else ("BLANK1" if icon != "NONE" else "NONE"))


def _on_warm_worker(prefs, context):
    from .worker_service import on_warm_preference   # here: worker_service imports this module

    on_warm_preference(prefs, context)


class RuntimePreferences:
    """Preference fields for the runtime (a mixin: Blender reads annotations of base classes)."""

    warm_worker: bpy.props.BoolProperty(
        name="Keep Generator Warm", default=True, update=_on_warm_worker,
        description="Keep the generator running between takes with the model loaded, so the second and later "
                    "Generates skip starting Python and loading the model (it exits after 15 idle minutes). "
                    "Off: every take starts its own generator")

    python_source: bpy.props.EnumProperty(
        name="Generator Python",
        items=(("INSTALLED", "Installed Runtime", "The runtime that 'Install Runtime' puts in the extension's "
                                                  "user folder"),
               ("CUSTOM", "Existing Python", "A Python you already have with torch and EchoMask's requirements")),
        default="INSTALLED")
    custom_python: bpy.props.StringProperty(
        name="Python", subtype="FILE_PATH", default="",
        description="Path of the Python executable (e.g. a conda or venv python) that has torch installed")
    runtime_variant: bpy.props.EnumProperty(
        name="Install",
        items=(("DEFAULT", "GPU (default)", "torch from PyPI: CUDA on Windows/Linux (several GB), Apple GPU on "
                                            "macOS"),
               ("CPU", "CPU only", "A CPU-only torch (about 200 MB); works everywhere, slower")),
        default="DEFAULT")
    weights_path: bpy.props.StringProperty(
        name="Model Weights", subtype="FILE_PATH", default="",
        options=compat.FILE_PATH_OPTIONS,
        description="Optional: an EchoMask checkpoint (.safetensors) to use instead of the bundled one")

    def draw_runtime(self, context, layout):
        width = text_width(context)
        box = layout.box()
        box.label(text="Generator Runtime (torch runs outside Blender)", icon="CONSOLE")
        box.prop(self, "python_source", expand=True)
        if self.python_source == "CUSTOM":
            box.prop(self, "custom_python")
        else:
            folder = runtime_dir()
            row = box.row(align=True)
            row.prop(self, "runtime_variant", text="")
            installed = runtime.installed_python(folder) is not None
            row.operator(ECHOMASK_OT_install_runtime.bl_idname,
                         text="Reinstall Runtime" if installed else "Install Runtime", icon="IMPORT")
            draw_wrapped(box, f"Folder: {folder}", width, icon="FILE_FOLDER")
            stamp = runtime.read_stamp(folder) if installed else None
            if stamp and stamp.get("python"):
                box.label(text=f"Installed: Python {stamp['python']}, {stamp.get('variant', '?')} variant, "
                               f"{stamp.get('installed_at', '')}", icon="CHECKMARK")
            if installed and not runtime.runtime_is_current(folder):
                draw_wrapped(box, "The runtime is older than this EchoMask version: reinstall it (the one you "
                                  "have keeps working until the new one is complete).", width, icon="ERROR")
            if not bpy.app.online_access:
                draw_wrapped(box, "Installing needs 'Allow Online Access' (Preferences > System > Network).",
                             width, icon="INFO")
        task = _TASK.get("task")
        if task is not None:
            message = task.message
            fits = len(message) <= width
            box.progress(factor=task.fraction, text=message if fits else f"{task.fraction:.0%}")
            if not fits:
                draw_wrapped(box, message, width)
            if task.state in (JobState.RUNNING, JobState.CANCELLING):
                box.operator(ECHOMASK_OT_cancel_runtime_task.bl_idname, icon="CANCEL")
            if task.state == JobState.ERROR and task.detail:
                draw_wrapped(box, task.detail, width, icon="ERROR")
            tail = [line for line in list(task.log)[-3:] if line.strip()]
            if tail:
                col = box.column(align=True)
                for line in tail:
                    draw_wrapped(col, line, width)
            log_path = getattr(task, "log_path", None)
            if log_path and os.path.exists(log_path):
                row = box.row()
                draw_wrapped(row, f"Full log: {log_path}", width - 12, icon="TEXT")
                row.operator("wm.path_open", text="Open Log").filepath = log_path
        summary, ok = runtime_summary(context)
        row = box.row(align=True)
        draw_wrapped(row, summary, width - 12, icon="CHECKMARK" if ok else "QUESTION")
        row.operator(ECHOMASK_OT_check_runtime.bl_idname, text="Check", icon="FILE_REFRESH")
        box.prop(self, "weights_path")
        box.prop(self, "warm_worker")


# A background task shared by the two runtime operators (one at a time), readable by the preferences UI.
_TASK: dict = {}
_BUSY = (JobState.RUNNING, JobState.CANCELLING)


class _ProbeTask:
    """`--probe` as a task: same interface as RuntimeInstaller (tick/state/fraction/message/log)."""

    def __init__(self, choice: runtime.RuntimeChoice):
        self.choice = choice
        self.job = runtime.start_probe(choice)
        self.events: list[dict] = []
        self.info: dict | None = None
        self.state = JobState.RUNNING
        self.log: list[str] = []
        self.log_path = None

    @property
    def fraction(self) -> float:
        return 1.0 if self.state.finished else 0.5

    @property
    def detail(self) -> str:
        return (self.info or {}).get("error", "") if self.state == JobState.ERROR else ""

    @property
    def message(self) -> str:
        return "Checking the runtime (starting torch)" if self.state == JobState.RUNNING else \
            runtime.probe_summary(self.info)

    def tick(self) -> JobState:
        status = self.job.tick()
        self.events.extend(status.events)
        if any(e.get("event") == "probe" for e in self.events) or status.state.finished:
            self.info = runtime.probe_from_job(self.job, self.events)
            self.job.close()
            self.log = self.job.console_tail[-6:]
            self.state = JobState.ERROR if self.info.get("error") and not self.info.get("torch") else JobState.DONE
        return self.state

    def cancel(self) -> None:
        self.job.cancel()
        self.job.close()
        self.state = JobState.CANCELLED


def finish_probe(task: _ProbeTask, context=None) -> str:
    """Cache and show a finished probe; returns its one-line summary."""
    runtime.save_probe(runtime_dir(), task.choice.python, task.info or {})
    return runtime.probe_summary(task.info)


class _RuntimeTaskOperator(TimerModal):
    """Modal polling of _TASK['task'] on a timer; tests call `step()` by hand."""

    def start_task(self, context):
        raise NotImplementedError

    def finished(self, context, task) -> None:
        pass

    def execute(self, context):
        if _TASK.get("task") is not None and _TASK["task"].state in _BUSY:
            self.report({"WARNING"}, "A runtime task is already running.")
            return {"CANCELLED"}
        try:
            _TASK["task"] = self.start_task(context)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        return self._start_timer_modal(context, 0.2)

    def modal(self, context, event):
        task = _TASK.get("task")
        if task is None:
            return self._end(context, {"CANCELLED"})
        state = task.tick()
        for area in getattr(context.screen, "areas", []):
            if area.type == "PREFERENCES":
                area.tag_redraw()
        if state in _BUSY:
            return {"PASS_THROUGH"}
        self.finished(context, task)
        if state == JobState.DONE:
            self.report({"INFO"}, task.message)
            return self._end(context, {"FINISHED"})
        if state == JobState.ERROR:
            self.report({"ERROR"}, task.detail or task.message)
        return self._end(context, {"CANCELLED"})

    def cancel(self, context):  # Blender quits or loads a file: stop pip; the next install cleans up
        task = _TASK.get("task")
        if task is not None and task.state == JobState.RUNNING:
            task.cancel()
        self._end(context, None)



class ECHOMASK_OT_install_runtime(_RuntimeTaskOperator, bpy.types.Operator):
    """Install EchoMask's generator runtime (a Python with torch) into the extension's user folder. Downloads
    about 200 MB (CPU) to several GB (GPU) once; Blender stays usable meanwhile"""

    bl_idname = "echomask.install_runtime"
    bl_label = "Install Runtime"
    bl_options = {"REGISTER", "INTERNAL"}

    def start_task(self, context):
        wheelhouse = os.environ.get(runtime_install.ENV_WHEELHOUSE) or None   # a local folder: no internet
        if not wheelhouse and not bpy.app.online_access and not os.environ.get("ECHOMASK_ALLOW_OFFLINE_INSTALL"):
            raise EchoMaskError("Online access is off. Allow it in Preferences > System > Network "
                                "('Allow Online Access'), or choose an existing Python instead.")
        prefs = preferences(context)
        variant = prefs.runtime_variant if prefs is not None else "DEFAULT"
        installer = runtime_install.RuntimeInstaller(runtime_dir(), variant, wheelhouse=wheelhouse)
        installer.start()
        return installer


class ECHOMASK_OT_check_runtime(_RuntimeTaskOperator, bpy.types.Operator):
    """Start the generator's Python once and show its torch version and GPUs (CUDA, Apple GPU)"""

    bl_idname = "echomask.check_runtime"
    bl_label = "Check Runtime"
    bl_options = {"REGISTER", "INTERNAL"}

    def start_task(self, context):
        return _ProbeTask(choose_python(context))

    def finished(self, context, task):
        if task.info is not None:
            finish_probe(task, context)


class ECHOMASK_OT_cancel_runtime_task(bpy.types.Operator):
    """Stop the runtime install: the unfinished one is removed, the runtime you had stays as it was"""

    bl_idname = "echomask.cancel_runtime_task"
    bl_label = "Cancel"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        task = _TASK.get("task")
        if task is not None and task.state == JobState.RUNNING:
            task.cancel()
        return {"FINISHED"}


def drive_task(timeout: float = 600.0):
    """Tick the current runtime task to its end (tests and scripts; the UI uses the modal timer)."""
    import time

    task = _TASK.get("task")
    end = time.monotonic() + timeout
    while task is not None and task.tick() in _BUSY and time.monotonic() < end:
        time.sleep(0.05)
    return task


CLASSES = (ECHOMASK_OT_install_runtime, ECHOMASK_OT_check_runtime, ECHOMASK_OT_cancel_runtime_task)
