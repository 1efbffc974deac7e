"""Generate: speech in the scene -> a new take on the rig, without ever blocking Blender.

Flow (each arrow is a short main-thread step; nothing waits on the worker):
  invoke   check everything, gather the speech (file, packed bytes or a mixdown), send the request to the
           warm worker (core.jobs.client.WarmWorkerJob; started on the first Generate) or start a one-shot
           worker (WorkerJob, warm worker off), add a timer
  modal    on each timer event: `GenerationRun.step()` -> job.tick() -> progress bar + status bar text;
           when the worker is done: load the take, then stage its Actions a few F-curves per step
  apply    ECHOMASK_OT_apply_take (REGISTER, UNDO) links the staged take onto the rig: one undo step
ESC or the Cancel button cancel (warm: a cancel request, then a kill after a short grace; one-shot: terminate,
then kill); Blender quitting or loading a file cancels too (the job's worker is killed at once).
Headless bpy has no timers and never calls modal(), so tests drive `GenerationRun.step()` by hand; the
operator's modal() does nothing else than call it.
"""
from __future__ import annotations

import os
import shutil

import bpy

from ...core.errors import AudioError, EchoMaskError, RigError
from . import runtime, runtime_ops, speech_source
from ..rigs.rig import check_smplx_armature
from ..settings import selected_parts
from ..takes.nla import take_name
from .generation_run import (GenerationRun, RunModal, apply_pending, build_request, current_run, launch_run,
                             new_job_dir, stage_file)


class ECHOMASK_OT_apply_take(bpy.types.Operator):
    """Put a generated take on the rig as a new NLA take (one undo step)"""

    bl_idname = "echomask.apply_take"
    bl_label = "Apply EchoMask Take"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    token: bpy.props.StringProperty(options={"HIDDEN", "SKIP_SAVE"})
    filepath: bpy.props.StringProperty(name="Take", subtype="FILE_PATH", options={"SKIP_SAVE"},
                                       description="Or: a take .npz to add as a take (scripts)")
    armature: bpy.props.StringProperty(name="Rig", options={"SKIP_SAVE"})
    frame_start: bpy.props.IntProperty(name="Start Frame", default=1, options={"SKIP_SAVE"})

    def execute(self, context):
        try:
            if not self.token and self.filepath:
                self.token = stage_file(context, self.filepath, self.armature, self.frame_start)
            info = apply_pending(context, self.token)
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"New take '{info.name}' (frames {info.frame_start}–{info.frame_end}) is playing.")
        return {"FINISHED"}


def generate_blocker(context) -> str | None:
    """Why Generate cannot start now (None when it can). Cheap: only reads the scene and a few files."""
    if current_run() is not None:
        return "A generation is running: wait for it or cancel it."
    settings = getattr(context.scene, "echomask", None)
    if settings is None:
        return "EchoMask's settings are missing (re-enable the add-on)."
    rig = settings.target
    if rig is None:
        return "Pick the SMPL-X rig to animate, or press + to create one."
    try:
        check_smplx_armature(rig)
    except RigError as err:
        return str(err)
    if not selected_parts(settings):
        return "Tick at least one body part to generate."
    problem = runtime_ops.model_file_problem(context)
    if problem:
        return problem
    try:
        speech_source.plan_speech(context.scene, settings)
        choice = runtime_ops.choose_python(context)
    except EchoMaskError as err:
        return str(err)
    return runtime.device_problem(settings.device, runtime_ops.cached_probe_for(choice))


def start_generation(context) -> GenerationRun:
    """Check, gather the speech, start the worker; returns the run (EchoMaskError when it cannot start)."""
    reason = generate_blocker(context)
    if reason:
        raise EchoMaskError(reason)
    scene = context.scene
    settings = scene.echomask
    rig = settings.target
    plan = speech_source.plan_speech(scene, settings)
    choice = runtime_ops.choose_python(context)
    fps = speech_source.scene_fps(scene)
    job_dir = new_job_dir()
    try:
        audio = speech_source.materialize(plan, scene, job_dir)
        trim_to = None
        if plan.source == "MIX":
            trim_to = plan.frame_end - plan.frame_start + 1
        else:
            seconds = speech_source.audio_duration(audio)
            if seconds is not None and not settings.fit_scene:
                last = plan.frame_start + speech_source.frames_for(seconds, fps) - 1
                if last > scene.frame_end:
                    raise AudioError(speech_source.too_long_message(plan.frame_start, last, scene, fps))
        parts = selected_parts(settings)
        request = build_request(settings, audio, os.path.join(job_dir, "take.npz"), fps, parts,
                                runtime_ops.weights_path(context), plan.description)
        name = take_name(plan.label, settings.seed)
        meta = {"audio": plan.label, "seed": int(settings.seed), "temperature": float(settings.temperature),
                "intensity": float(settings.intensity), "source": plan.source}
        if plan.source == "FILE":   # what re-keying needs to find the same speech again
            meta["audio_file"] = settings.audio_file
        elif plan.source == "STRIP":
            meta["strip"] = settings.strip
        run = GenerationRun(scene=scene.name, armature=rig.name, command=choice.command(["--request",
                            os.path.join(job_dir, "request.json")]), request=request, job_dir=job_dir,
                            frame_start=plan.frame_start, parts=parts, name=name, meta=meta, trim_to=trim_to,
                            max_end=None if settings.fit_scene else scene.frame_end,
                            add_strip_file=plan.add_strip_file, runtime_choice=choice)
    except Exception:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return launch_run(context, run)


class ECHOMASK_OT_generate(RunModal, bpy.types.Operator):
    """Generate a new take from the speech: body, hands, face and lip sync. Blender stays usable; Esc cancels"""

    bl_idname = "echomask.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}  # no UNDO here: the Apply step is the one undo step

    @classmethod
    def disabled_reason(cls, context) -> str | None:
        return generate_blocker(context)

    def start_run(self, context):
        start_generation(context)


class ECHOMASK_OT_cancel_generation(bpy.types.Operator):
    """Stop the running generation; nothing is added to the scene"""

    bl_idname = "echomask.cancel_generation"
    bl_label = "Cancel Generation"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return current_run() is not None

    def execute(self, context):
        run = current_run()
        if run is not None:
            run.request_cancel()
        return {"FINISHED"}


class ECHOMASK_OT_create_rig_for_panel(bpy.types.Operator):
    """Create an SMPL-X rig (with the body mesh when the SMPL-X model is set in the preferences) and make it
    the panel's target"""

    bl_idname = "echomask.create_rig_for_panel"
    bl_label = "Create SMPL-X Rig"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        before = set(bpy.data.objects.keys())
        result = bpy.ops.echomask.create_rig()
        if "FINISHED" not in result:
            return {"CANCELLED"}
        new = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - before]
        rig = next((o for o in new if o.type == "ARMATURE"), None)
        if rig is not None:
            context.scene.echomask.target = rig
        return {"FINISHED"}


CLASSES = (ECHOMASK_OT_apply_take, ECHOMASK_OT_generate, ECHOMASK_OT_cancel_generation,
           ECHOMASK_OT_create_rig_for_panel)
