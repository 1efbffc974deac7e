"""One generation run, shared by Generate and Re-key: the worker request, the job it polls, the staged take
and the Apply step, and the modal-operator plumbing around them (RunModal).

A run goes START -> JOB (worker) -> LOAD (read the take) -> STAGE (write Actions a few F-curves per step) ->
APPLY (ECHOMASK_OT_apply_take: one undo step) and ends FINISHED, CANCELLED or ERROR; `step()` advances it,
called by the operator's timer in a window and by the tests in headless bpy.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import uuid

import bpy

from ...core.errors import EchoMaskError
from ...core.jobs.client import JobState
from ...core.motion.take import Take, load_take, resample_take
from . import runtime, speech_source, worker_service
from .. import compat
from .modal_timer import TimerModal
from ..ui.poll import DisabledReasonPoll
from ..rigs.rig import check_smplx_armature
from ..takes.nla import StagedTake


TIMER_JOB = 0.1      # seconds between polls while the worker runs
TIMER_STAGE = 0.01   # while staging keys: keep going, a few F-curves per step
STAGE_BUDGET = 0.03  # seconds of key writing per step


@dataclasses.dataclass
class PendingApply:
    """What the Apply operator needs to link a staged take (kept here: operators only take plain values)."""
    staged: object                      # takes.StagedTake or rekey.StagedRekey: step/done/discard/link
    scene: str
    meta: dict
    add_strip_file: str | None = None   # FILE source: put the speech on the timeline too
    extend_end_to: int | None = None    # fit_scene: move the scene's end frame
    label: str = ""


_PENDING: dict[str, PendingApply] = {}
_RUN: dict = {}   # {'run': GenerationRun} while one is active (one generation at a time)


def current_run():
    return _RUN.get("run")


# ------------------------------------------------------------------------------------------ apply

def apply_pending(context, token: str):
    """Link a staged take and make the scene changes that go with it; returns the TakeInfo."""
    pending = _PENDING.pop(token, None)
    if pending is None:
        raise EchoMaskError("Nothing to apply: the generated take is gone (cancelled or already applied).")
    scene = bpy.data.scenes.get(pending.scene) or context.scene
    t0 = time.perf_counter()
    try:
        info = pending.staged.link(pending.meta)
    except Exception:
        pending.staged.discard()
        raise
    pending.staged.applied_name = info.name
    if pending.extend_end_to is not None and pending.extend_end_to > scene.frame_end:
        scene.frame_end = pending.extend_end_to
    if pending.add_strip_file and compat.HAS_AUDASPACE:
        have = {speech_source.sound_path(s.sound) for s in compat.all_sound_strips(scene) if s.sound}
        if os.path.normpath(pending.add_strip_file) not in have:
            compat.new_sound_strip(scene, os.path.basename(pending.add_strip_file), pending.add_strip_file,
                                   info.frame_start)
    scene.sync_mode = "AUDIO_SYNC"  # viewport playback follows the speech: lip sync holds
    pending.staged.link_seconds = time.perf_counter() - t0   # the rest of the Apply step is Blender's undo push
    return info


def stage_file(context, filepath: str, armature_name: str, frame_start: int) -> str:
    """Stage a take file for ECHOMASK_OT_apply_take (scripts: add any .npz as a take)."""
    rig = bpy.data.objects.get(armature_name) if armature_name else context.active_object
    check_smplx_armature(rig)
    take = load_take(bpy.path.abspath(filepath))
    fps = speech_source.scene_fps(context.scene)
    if abs(take.fps - fps) > 1e-6:
        take = resample_take(take, fps)
    label = os.path.splitext(os.path.basename(filepath))[0]
    staged = StagedTake(rig, take, name=label, frame_start=frame_start)
    token = uuid.uuid4().hex
    _PENDING[token] = PendingApply(staged, context.scene.name, {"audio": label, "seed": 0}, label=label)
    return token


# ------------------------------------------------------------------------------------------ the run

def set_run_ui(context, *, running=None, progress=None, status=None, error=None, info=None, warning=None):
    job = getattr(context.window_manager, "echomask_job", None)
    if job is None:
        return
    for prop, value in (("running", running), ("progress", progress), ("status", status), ("last_error", error),
                        ("last_info", info), ("last_warning", warning)):
        if value is not None:   # None = leave as it is
            setattr(job, prop, value)
    workspace = getattr(context, "workspace", None)
    if workspace is not None:
        text = None
        if job.running:
            text = f"EchoMask: {job.status} — {int(job.progress * 100)}%   (Esc to cancel)"
        try:
            workspace.status_text_set(text)
        except (AttributeError, RuntimeError):
            pass
    screen = getattr(context, "screen", None)
    for area in getattr(screen, "areas", []):
        if area.type == "VIEW_3D":
            area.tag_redraw()


class GenerationRun:
    """One generation (or re-key) from start to applied take; `step()` is all a timer has to call."""

    # share of the progress bar for the worker; the rest is writing the keys
    WORKER_SHARE = 0.9

    def __init__(self, *, scene: str, armature: str, command: list[str], request: dict, job_dir: str,
                 frame_start: int, parts: tuple[str, ...], name: str, meta: dict, trim_to: int | None = None,
                 max_end: int | None = None, add_strip_file: str | None = None, make_staged=None,
                 runtime_choice=None):
        self.scene = scene
        self.armature = armature
        self.request = request
        self.job_dir = job_dir
        self.frame_start = frame_start
        self.parts = parts
        self.name = name
        self.meta = meta
        self.trim_to = trim_to
        self.max_end = max_end              # None: no limit (Extend Scene on)
        self.add_strip_file = add_strip_file
        self.make_staged = make_staged      # (context, take) -> staged object; default: a new take
        self.command = command              # the one-shot worker's argv (warm worker off)
        self.runtime_choice = runtime_choice  # the Python the warm worker runs in (None: one-shot always)
        self.job = None                     # made in start(): warm or one-shot (worker_service.make_job)
        self.worker_note = ""               # e.g. "The previous generator had stopped...; started a fresh one."
        self.phase = "NEW"
        self.staged = None
        self.result: str | None = None       # the applied take's name
        self.error: str | None = None
        self.step_seconds: list[float] = []  # how long each main-thread step took (benchmarks)
        self._cancel_requested = False
        self._end_frame = frame_start
        self.result_file: str | None = None
        self.warnings: list[str] = []

    # --------------------------------------------------------------- control
    def start(self, context) -> None:
        self.job = worker_service.make_job(context, self.runtime_choice, self.command, self.request, self.job_dir)
        status = self.job.start()
        if status.state == JobState.ERROR:
            self._fail(context, status.error)
            return
        self.worker_note = getattr(self.job, "replaced_note", "")
        self.phase = "JOB"
        set_run_ui(context, running=True, progress=0.0, status=status.message or "Starting the generator", error="",
                info="", warning="")

    def request_cancel(self) -> None:
        self._cancel_requested = True

    @property
    def finished(self) -> bool:
        return self.phase in ("FINISHED", "CANCELLED", "ERROR")

    def step(self, context) -> str:
        """Advance by one short main-thread step; returns the phase ('JOB', 'STAGE', 'FINISHED', ...)."""
        t0 = time.perf_counter()
        try:
            self._step(context)
        except EchoMaskError as err:
            self._fail(context, str(err))
        except Exception as exc:  # a bug: never leave the UI stuck in "running"
            self._fail(context, f"Internal error while applying the take ({type(exc).__name__}: {exc}). "
                                "Please report it; the scene was left as it was.")
            raise
        finally:
            self.step_seconds.append(time.perf_counter() - t0)
        return self.phase

    def _step(self, context) -> None:
        if self.finished:
            return
        # Cancel holds until the take is linked: the APPLY step checks it too (nothing is on the rig before).
        if self._cancel_requested and self.phase in ("JOB", "LOAD", "STAGE", "APPLY"):
            if self.phase == "JOB" and self.job.state == JobState.RUNNING:
                self.job.cancel()
                set_run_ui(context, status="Cancelling")
            if self.phase != "JOB" or self.job.state.finished:
                return self._cancelled(context)
        if self.phase == "JOB":
            status = self.job.tick()
            if status.state == JobState.CANCELLED:
                return self._cancelled(context)
            if status.state == JobState.ERROR:
                return self._fail(context, status.error)
            if status.state == JobState.DONE:
                self.result_file = status.result.get("result")
                self.warnings = list(status.warnings)
                self.phase = "LOAD"
                set_run_ui(context, progress=self.WORKER_SHARE, status="Reading the take")
                return
            if status.state != JobState.CANCELLING:
                set_run_ui(context, progress=status.fraction * self.WORKER_SHARE, status=status.message)
            return
        if self.phase == "LOAD":
            take = self._load_take(context)
            rig = bpy.data.objects.get(self.armature)
            check_smplx_armature(rig)
            if self.make_staged is not None:
                self.staged = self.make_staged(context, take)
            else:
                self.staged = StagedTake(rig, take, name=self.name, frame_start=self.frame_start, parts=self.parts)
            self.phase = "STAGE"
            set_run_ui(context, status="Writing keys")
            return
        if self.phase == "STAGE":
            if self.staged.step(STAGE_BUDGET):
                self.phase = "APPLY"
            set_run_ui(context, progress=self.WORKER_SHARE + (1 - self.WORKER_SHARE) * 0.5)
            return
        if self.phase == "APPLY":
            token = uuid.uuid4().hex
            _PENDING[token] = PendingApply(self.staged, self.scene, self.meta, self.add_strip_file,
                                           None if self.max_end is not None else self._end_frame, self.name)
            with context.temp_override(scene=bpy.data.scenes.get(self.scene) or context.scene):
                # undo=True: an operator called from Python pushes no undo step unless asked to
                result = bpy.ops.echomask.apply_take("EXEC_DEFAULT", True, token=token)
            if "FINISHED" not in result:
                _PENDING.pop(token, None)
                self.staged.discard()
                return self._fail(context, "The take could not be applied (see the Info editor for why).")
            self.result = getattr(self.staged, "applied_name", None)
            self.phase = "FINISHED"
            info = f"New take '{self.result}' is playing. Ctrl+Z removes it."
            set_run_ui(context, running=False, progress=1.0, status="Done",
                    info=f"{info} {self.worker_note}" if self.worker_note else info, warning=self.warning_text)
            self._cleanup()

    @property
    def warning_text(self) -> str:
        """The worker's warnings about the take (e.g. music instead of speech), one sentence each."""
        return " ".join(dict.fromkeys(w.strip() for w in self.warnings if w.strip()))

    def _load_take(self, context) -> Take:
        take = load_take(self.result_file)
        scene = bpy.data.scenes.get(self.scene) or context.scene
        fps = speech_source.scene_fps(scene)
        if abs(take.fps - fps) > 1e-6:
            take = resample_take(take, fps)
        if self.trim_to is not None and take.num_frames > self.trim_to:
            take = take.slice(0, self.trim_to)
        self._end_frame = self.frame_start + take.num_frames - 1
        if self.max_end is not None and self._end_frame > self.max_end:
            raise EchoMaskError(speech_source.too_long_message(self.frame_start, self._end_frame, scene, fps))
        return take

    # --------------------------------------------------------------- endings
    def _cancelled(self, context) -> None:
        if self.staged is not None:
            self.staged.discard()
        self.phase = "CANCELLED"
        set_run_ui(context, running=False, progress=0.0, status="", info="Generation cancelled; nothing was changed.")
        self._cleanup()

    def _fail(self, context, message: str | None) -> None:
        self.error = message or "The generation failed."
        if self.staged is not None:
            self.staged.discard()
        self.phase = "ERROR"
        set_run_ui(context, running=False, progress=0.0, status="", error=self.error)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.job is not None:
            self.job.close()
        shutil.rmtree(self.job_dir, ignore_errors=True)
        if _RUN.get("run") is self:
            _RUN.pop("run", None)

    def abort(self, context) -> None:
        """Stop at once (file load, quit): kill the worker, drop staged data."""
        self.request_cancel()
        if self.phase == "JOB" and self.job is not None:
            self.job.cancel()
        self._cancelled(context)

    def drive(self, context, timeout: float = 120.0, interval: float = 0.01) -> str:
        """Step until finished (tests, scripts and benchmarks; Blender's UI uses the modal timer)."""
        end = time.monotonic() + timeout
        while not self.finished and time.monotonic() < end:
            self.step(context)
            if self.phase == "JOB":
                time.sleep(interval)
        return self.phase


# ------------------------------------------------------------------------------------------ starting

def build_request(settings, audio: str, output: str, fps: float, parts, weights: str | None,
                  audio_label: str = "") -> dict:
    """The worker request. The model generates every part; only the ticked parts are keyed (re-key adds
    `parts` with the known take). `audio_label` names the speech in the worker's messages."""
    request = {"audio": audio, "output": output, "fps": fps, "seed": int(settings.seed),
               "audio_label": audio_label,
               "temperature": float(settings.temperature), "device": runtime.worker_device(settings.device),
               "travel": bool(settings.travel and "root" in parts), "intensity": float(settings.intensity),
               "lipsync": float(settings.lipsync)}
    if weights:
        request["weights"] = weights
    return request


def new_job_dir() -> str:
    return tempfile.mkdtemp(prefix="echomask_job_")


def launch_run(context, run: "GenerationRun") -> "GenerationRun":
    """Make `run` the current job and start its worker (Generate and Re-key); EchoMaskError if it cannot."""
    _RUN["run"] = run
    run.start(context)
    if run.phase == "ERROR":
        raise EchoMaskError(run.error)
    return run


class RunModal(DisabledReasonPoll, TimerModal):
    """Operator plumbing shared by Generate and Re-key: poll from `disabled_reason`, start the run
    (`start_run`), then a modal timer, ESC, and GenerationRun.step()."""

    def start_run(self, context):
        raise NotImplementedError

    def invoke(self, context, event):
        return self.execute(context)

    def execute(self, context):
        try:
            self.start_run(context)
        except EchoMaskError as err:
            set_run_ui(context, running=False, error=str(err))
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        return self._begin_modal(context)

    def _begin_modal(self, context):
        return self._start_timer_modal(context, TIMER_JOB)

    def modal(self, context, event):
        run = current_run()
        if run is None:
            return self._end(context, {"CANCELLED"})
        if event is not None and event.type == "ESC" and event.value == "PRESS":
            run.request_cancel()
        if event is None or event.type == "TIMER" or run._cancel_requested:
            phase = run.step(context)
            if phase in ("STAGE", "LOAD", "APPLY") and self._timer is not None and self._timer.time_step > TIMER_STAGE:
                self._swap_timer(context, TIMER_STAGE)
            if run.finished:
                if run.phase == "ERROR":
                    self.report({"ERROR"}, run.error)
                elif run.phase == "CANCELLED":
                    self.report({"INFO"}, "Generation cancelled.")
                elif run.warning_text:   # the take is made; say what may be wrong with it
                    self.report({"WARNING"}, f"New take '{run.result}' is playing. {run.warning_text}")
                else:
                    self.report({"INFO"}, f"New take '{run.result}' is playing.")
                return self._end(context, {"FINISHED"} if run.phase == "FINISHED" else {"CANCELLED"})
        return {"PASS_THROUGH"}

    def _swap_timer(self, context, interval):
        wm = context.window_manager
        wm.event_timer_remove(self._timer)
        self._timer = wm.event_timer_add(interval, window=context.window)

    def cancel(self, context):  # Blender quits or loads another file
        run = current_run()
        if run is not None:
            run.abort(context)
        self._end(context, None)


def forget_runs() -> None:
    """Drop the current run (add-on unregister: nothing may keep a job or a staged take alive)."""
    _RUN.clear()
