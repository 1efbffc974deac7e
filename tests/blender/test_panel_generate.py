"""Generate from the panel, end to end with the fake worker: audio sources, progress, cancel, errors, undo."""
import itertools
import os
import time

import numpy as np
import pytest

from blender_helpers import ctx, registered, synthetic_take  # noqa: F401
from conftest import requires_bpy
from studio_helpers import (add_sound_strip, data_snapshot, make_rig, needs_audaspace, settings_for, studio,  # noqa: F401
                            undo_context, write_wav)

pytestmark = requires_bpy


def _gen():
    from echomask.echomask_blender.run import generate_op
    from echomask.echomask_blender.takes import nla as takes

    return generate_op, takes


def _jaw_x(rig, frame):
    import bpy

    bpy.context.scene.frame_set(frame)
    q = np.array(rig.pose.bones["jaw"].rotation_quaternion)
    return 2 * np.arctan2(q[1], q[0])


def test_generate_from_a_file_end_to_end(studio, tmp_path):
    generate_op, takes = _gen()
    scene = studio.scene
    scene.frame_start, scene.frame_end = 1, 120
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "hello.wav", seconds=2.0), seed=7)
    run = generate_op.start_generation(studio)
    job_dir = run.job_dir
    progress, statuses = [], []
    while not run.finished:
        run.step(studio)
        progress.append(studio.window_manager.echomask_job.progress)
        statuses.append(studio.window_manager.echomask_job.status)
        time.sleep(0.005)
    assert run.phase == "FINISHED", run.error
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(s.startswith("Generating gestures") for s in statuses) and "Writing keys" in statuses
    assert not studio.window_manager.echomask_job.running
    info = takes.playing_take(rig)
    assert info.name == run.result == "hello · seed 7"
    assert (info.frame_start, info.frame_end) == (1, 60) and info.seed == 7 and info.audio == "hello"
    assert len(info.face_actions) == 1
    assert rig.animation_data.action is None       # the NLA plays the take
    assert not os.path.exists(job_dir)              # temp files cleaned up
    assert generate_op.current_run() is None
    # the jaw follows the speech bursts (the fake worker opens it with loudness)
    assert abs(_jaw_x(rig, 5) - _jaw_x(rig, 40)) > 1e-3 or abs(_jaw_x(rig, 10) - _jaw_x(rig, 25)) > 1e-3
    from echomask.echomask_blender import compat

    if compat.HAS_AUDASPACE:  # the speech is put on the timeline for lip-synced playback
        strips = compat.all_sound_strips(scene)
        assert [s.name for s in strips] == ["hello.wav"] and compat.strip_content_start(strips[0]) == 1
        assert scene.sync_mode == "AUDIO_SYNC"
    # no main-thread step came near blocking Blender (the benchmark measures this precisely)
    assert max(run.step_seconds) < 0.5


def test_generate_from_the_scene_mix_follows_the_strip_timing(studio, tmp_path):
    needs_audaspace()
    generate_op, takes = _gen()
    scene = studio.scene
    scene.frame_start, scene.frame_end = 1, 90
    rig = make_rig(studio, with_face=False)
    add_sound_strip(scene, write_wav(tmp_path / "line.wav", seconds=2.0), frame_start=31)
    settings_for(studio, rig, audio_source="MIX")
    run = generate_op.start_generation(studio)
    assert run.drive(studio) == "FINISHED", run.error
    info = takes.playing_take(rig)
    assert (info.frame_start, info.frame_end) == (1, 90)   # exactly the frame range
    assert info.name.startswith("line · seed 0")
    silent = [abs(_jaw_x(rig, f)) for f in range(2, 30)]
    speaking = [abs(_jaw_x(rig, f)) for f in range(33, 88)]
    assert max(silent) < 1e-4 < max(speaking)            # mouth shut until the speech starts at frame 31


def test_generate_from_a_packed_strip_with_a_relative_path(studio, tmp_path):
    needs_audaspace()
    import bpy

    generate_op, takes = _gen()
    scene = studio.scene
    scene.frame_start, scene.frame_end = 1, 100
    rig = make_rig(studio, with_face=False)
    wav = write_wav(tmp_path / "packed.wav", seconds=1.0)
    strip = add_sound_strip(scene, wav, frame_start=11)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    strip.sound.filepath = "//packed.wav"                 # relative to the .blend
    strip.sound.pack()
    os.remove(wav)                                        # only the packed bytes are left
    settings_for(studio, rig, audio_source="STRIP", strip=strip.name)
    run = generate_op.start_generation(studio)
    assert run.drive(studio) == "FINISHED", run.error
    info = takes.playing_take(rig)
    assert (info.frame_start, info.frame_end) == (11, 40)  # where the sound starts, 1 s at 30 fps


def test_a_relative_file_path_next_to_the_blend_works(studio, tmp_path):
    import bpy

    generate_op, takes = _gen()
    studio.scene.frame_end = 100
    rig = make_rig(studio, with_face=False)
    write_wav(tmp_path / "rel.wav", seconds=1.0)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    settings_for(studio, rig, audio_source="FILE", audio_file="//rel.wav")
    assert generate_op.start_generation(studio).drive(studio) == "FINISHED"
    assert takes.playing_take(rig).frame_end == 30


def test_generate_operator_invokes_a_modal_run_and_modal_delegates_to_step(studio, tmp_path):
    import bpy

    generate_op, takes = _gen()
    studio.scene.frame_end = 100
    rig = make_rig(studio, with_face=False)
    assert not bpy.ops.echomask.generate.poll()
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "a.wav", seconds=1.0))
    assert bpy.ops.echomask.generate.poll()
    assert bpy.ops.echomask.generate("INVOKE_DEFAULT") == {"RUNNING_MODAL"}
    run = generate_op.current_run()
    assert run is not None and studio.window_manager.echomask_job.running
    assert not bpy.ops.echomask.generate.poll()           # one generation at a time
    assert "running" in generate_op.ECHOMASK_OT_generate.disabled_reason(studio)
    assert run.drive(studio) == "FINISHED"
    assert takes.playing_take(rig) is not None
    assert "UNDO" not in generate_op.ECHOMASK_OT_generate.bl_options
    assert "UNDO" in generate_op.ECHOMASK_OT_apply_take.bl_options


def test_apply_is_one_undo_step_that_restores_the_scene(studio, tmp_path):
    import bpy

    generate_op, takes = _gen()
    studio.scene.frame_end = 100
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "u.wav", seconds=1.0))
    bpy.ops.ed.undo_push(message="before generate")
    before = data_snapshot(studio.scene)
    assert generate_op.start_generation(studio).drive(studio) == "FINISHED"
    after = data_snapshot(studio.scene)
    assert after != before and "u · seed 0" in bpy.data.actions
    with undo_context():
        bpy.ops.ed.undo()
    assert data_snapshot(bpy.context.scene) == before      # one step: back to exactly before Generate
    with undo_context():
        bpy.ops.ed.redo()
    assert data_snapshot(bpy.context.scene) == after


def test_ab_previous_take_right_after_a_second_generate(studio, tmp_path):
    import bpy

    generate_op, takes = _gen()
    studio.scene.frame_end = 100
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "ab.wav", seconds=1.0), seed=1)
    assert generate_op.start_generation(studio).drive(studio) == "FINISHED"
    settings_for(studio, rig, seed=2)
    assert generate_op.start_generation(studio).drive(studio) == "FINISHED"
    assert takes.playing_take(rig).name == "ab · seed 2"
    assert bpy.ops.echomask.take_compare() == {"FINISHED"}      # the panel's A/B Previous Take
    assert takes.playing_take(rig).name == "ab · seed 1"
    assert [t.name for t in takes.list_takes(rig) if t.playing] == ["ab · seed 1"]   # one take plays
    assert bpy.ops.echomask.take_compare() == {"FINISHED"}
    assert takes.playing_take(rig).name == "ab · seed 2"


def _slow(monkeypatch, steps=400, delay=0.02):
    monkeypatch.setenv("ECHOMASK_FAKE_STEPS", str(steps))
    monkeypatch.setenv("ECHOMASK_FAKE_DELAY", str(delay))


MUSIC = "This audio looks like music rather than speech; gestures follow speech best."


def test_a_worker_warning_is_shown_with_the_take(studio, tmp_path, monkeypatch):
    """The worker sends core's warnings as events (core.jobs.worker.warnings_as_events); the take is still made
    and the panel, the status bar report and the Info editor say what may be wrong with it."""
    import types

    generate_op, takes = _gen()
    from echomask.echomask_blender.ui import panel

    monkeypatch.setenv("ECHOMASK_FAKE_WARNING", MUSIC)
    studio.scene.frame_end = 100
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "song.wav", seconds=1.0))
    run = generate_op.start_generation(studio)
    reports = []
    op = types.SimpleNamespace(_timer=None, report=lambda kind, text: reports.append((set(kind), text)),
                               _end=lambda context, result: result)
    timer = types.SimpleNamespace(type="TIMER", value="NOTHING")
    result, end = {"PASS_THROUGH"}, time.monotonic() + 30
    while result == {"PASS_THROUGH"} and time.monotonic() < end:   # the operator's modal, as Blender runs it
        result = generate_op.ECHOMASK_OT_generate.modal(op, studio, timer)
        time.sleep(0.005)
    assert result == {"FINISHED"} and takes.playing_take(rig).name == "song · seed 0"   # the take is made
    assert reports == [({"WARNING"}, f"New take 'song · seed 0' is playing. {MUSIC}")]
    job = studio.window_manager.echomask_job
    assert job.last_warning == MUSIC and "is playing" in job.last_info and not job.last_error
    labels = []

    class Layout:
        def __getattr__(self, name):
            return lambda *args, **kwargs: (labels.append((kwargs.get("text"), kwargs.get("icon")))
                                            if name == "label" else None) or self

    panel.VIEW3D_PT_echomask.draw(types.SimpleNamespace(layout=Layout()), studio)
    first = next(i for i, (_, icon) in enumerate(labels) if icon == "ERROR")   # the warning, wrapped over lines
    lines = [labels[first][0]] + [text for text, _ in itertools.takewhile(lambda label: label[1] == "BLANK1",
                                                                          labels[first + 1:])]
    assert " ".join(lines) == MUSIC
    settings_for(studio, rig, seed=3)
    monkeypatch.delenv("ECHOMASK_FAKE_WARNING")
    assert generate_op.start_generation(studio).drive(studio) == "FINISHED"
    assert job.last_warning == ""                          # the next take has no warning left over


def test_cancel_stops_the_worker_and_leaves_the_scene_as_it_was(studio, tmp_path, monkeypatch):
    import bpy

    generate_op, _ = _gen()
    _slow(monkeypatch)
    studio.scene.frame_end = 100
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "c.wav", seconds=1.0))
    before = data_snapshot(studio.scene)
    run = generate_op.start_generation(studio)
    while studio.window_manager.echomask_job.progress == 0.0:
        run.step(studio)
        time.sleep(0.01)
    assert bpy.ops.echomask.cancel_generation() == {"FINISHED"}   # the panel's Cancel button
    t0 = time.monotonic()
    assert run.drive(studio, timeout=20) == "CANCELLED"
    assert time.monotonic() - t0 < 5
    assert run.job._proc.poll() is not None
    assert data_snapshot(studio.scene) == before
    assert not studio.window_manager.echomask_job.running
    assert "cancelled" in studio.window_manager.echomask_job.last_info


def test_cancel_during_the_final_apply_step_stops_it_and_changes_nothing(studio, tmp_path):
    import bpy

    generate_op, takes = _gen()
    studio.scene.frame_end = 100
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "late.wav", seconds=1.0))
    before = data_snapshot(studio.scene)
    run = generate_op.start_generation(studio)
    end = time.monotonic() + 30
    while run.phase != "APPLY" and not run.finished and time.monotonic() < end:
        run.step(studio)
        time.sleep(0.005)
    assert run.phase == "APPLY"                     # the keys are staged; only linking them is left
    assert bpy.ops.echomask.cancel_generation() == {"FINISHED"}   # the panel's Cancel button
    assert run.step(studio) == "CANCELLED"
    assert data_snapshot(studio.scene) == before and takes.playing_take(rig) is None
    assert generate_op.current_run() is None and not studio.window_manager.echomask_job.running
    assert "cancelled" in studio.window_manager.echomask_job.last_info


def test_escape_in_the_modal_cancels(studio, tmp_path, monkeypatch):
    import types

    generate_op, _ = _gen()
    _slow(monkeypatch)
    studio.scene.frame_end = 100
    rig = make_rig(studio, with_face=False)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "e.wav", seconds=1.0))
    run = generate_op.start_generation(studio)
    op = types.SimpleNamespace(_timer=None, report=lambda *a: None)   # modal() only needs these
    esc = types.SimpleNamespace(type="ESC", value="PRESS")
    timer = types.SimpleNamespace(type="TIMER", value="NOTHING")
    modal = generate_op.ECHOMASK_OT_generate.modal
    op._end = lambda context, result: result
    assert modal(op, studio, timer) == {"PASS_THROUGH"}
    result = modal(op, studio, esc)
    end = time.monotonic() + 20
    while result == {"PASS_THROUGH"} and time.monotonic() < end:
        time.sleep(0.02)
        result = modal(op, studio, timer)
    assert result == {"CANCELLED"} and run.phase == "CANCELLED"


@pytest.mark.parametrize("mode, expected", [
    ("fail", "The speech file is silent: there is nothing to animate."),
    ("die", "stopped by the system"),
    ("notorch", "no torch"),
])
def test_worker_errors_reach_the_panel_and_change_nothing(studio, tmp_path, monkeypatch, mode, expected):
    generate_op, _ = _gen()
    monkeypatch.setenv("ECHOMASK_FAKE_MODE", mode)
    studio.scene.frame_end = 100
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "f.wav", seconds=1.0))
    before = data_snapshot(studio.scene)
    run = generate_op.start_generation(studio)
    assert run.drive(studio) == "ERROR"
    assert expected in run.error
    assert expected in studio.window_manager.echomask_job.last_error
    assert data_snapshot(studio.scene) == before


# ------------------------------------------------------------------------------------------ bad input

def _reason(studio):
    generate_op, _ = _gen()
    return generate_op.ECHOMASK_OT_generate.disabled_reason(studio)


def test_no_rig_and_a_non_smplx_armature_are_explained(studio, tmp_path):
    import bpy

    assert "Pick the SMPL-X rig" in _reason(studio)
    arm = bpy.data.objects.new("Other", bpy.data.armatures.new("Other"))
    studio.scene.collection.objects.link(arm)
    settings_for(studio, arm, audio_source="FILE", audio_file=write_wav(tmp_path / "x.wav"))
    assert "is not an SMPL-X rig" in _reason(studio)
    assert not bpy.ops.echomask.generate.poll()


def test_audio_problems_are_explained_before_anything_starts(studio, tmp_path):
    rig = make_rig(studio, with_face=False)
    settings_for(studio, rig, audio_source="FILE", audio_file=str(tmp_path / "nope.wav"))
    assert "Speech file not found" in _reason(studio)
    settings_for(studio, rig, audio_file="")
    assert "No speech file is chosen" in _reason(studio)
    settings_for(studio, rig, audio_file="//speech.wav")
    assert "not saved yet" in _reason(studio)
    settings_for(studio, rig, audio_source="STRIP", strip="")
    assert "no sound strip" in _reason(studio)
    settings_for(studio, rig, audio_source="MIX")
    reason = _reason(studio)
    from echomask.echomask_blender import compat

    if compat.HAS_AUDASPACE:
        assert "No sound strip plays in frames 1–250" in reason
    else:
        assert "no audio support" in reason


def test_muted_and_missing_strips_are_explained(studio, tmp_path):
    needs_audaspace()
    rig = make_rig(studio, with_face=False)
    scene = studio.scene
    wav = write_wav(tmp_path / "m.wav")
    strip = add_sound_strip(scene, wav, 1)
    settings_for(studio, rig, audio_source="MIX")
    assert _reason(studio) is None
    strip.mute = True
    assert "muted" in _reason(studio)
    settings_for(studio, rig, audio_source="STRIP", strip=strip.name)
    assert "is muted" in _reason(studio)
    strip.mute = False
    os.remove(wav)
    assert "its file is missing" in _reason(studio)
    settings_for(studio, rig, audio_source="MIX")
    assert "its file is missing" in _reason(studio)


@pytest.mark.parametrize("amplitude, loudness", [(0.0, "completely silent"), (0.003, "nearly silent")])
def test_silent_speech_makes_no_take_and_says_no_speech_was_found(studio, tmp_path, amplitude, loudness):
    generate_op, takes = _gen()
    studio.scene.frame_end = 100
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE",
                 audio_file=write_wav(tmp_path / "quiet.wav", seconds=3.0, amplitude=amplitude))
    before = data_snapshot(studio.scene)
    run = generate_op.start_generation(studio)
    assert run.drive(studio) == "ERROR"
    assert run.error.startswith(f"No speech found in 'quiet.wav': it is {loudness}")
    assert "Check that the sound with the speech is chosen" in run.error
    assert run.error in studio.window_manager.echomask_job.last_error
    assert data_snapshot(studio.scene) == before and takes.playing_take(rig) is None


def test_a_silent_scene_mix_names_the_frames(studio, tmp_path):
    needs_audaspace()
    generate_op, _ = _gen()
    scene = studio.scene
    scene.frame_start, scene.frame_end = 1, 90
    rig = make_rig(studio, with_face=False)
    add_sound_strip(scene, write_wav(tmp_path / "room_tone.wav", seconds=3.0, amplitude=0.0), frame_start=1)
    settings_for(studio, rig, audio_source="MIX")
    before = data_snapshot(scene)
    run = generate_op.start_generation(studio)
    assert run.drive(studio) == "ERROR"
    assert run.error.startswith("No speech found in the scene's sound in frames 1–90")
    assert data_snapshot(scene) == before


def test_an_unreadable_sound_strip_is_named_with_what_to_do(studio, tmp_path):
    needs_audaspace()
    import bpy

    generate_op, _ = _gen()
    from echomask.core.errors import EchoMaskError

    scene = studio.scene
    scene.frame_start, scene.frame_end = 1, 250
    rig = make_rig(studio, with_face=False)
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 50000, dtype=np.uint8).tobytes())
    strip = add_sound_strip(scene, str(noise), frame_start=1)
    before = data_snapshot(scene)
    for source, verb in (("MIX", "cannot be played"), ("STRIP", "cannot be used")):
        settings_for(studio, rig, audio_source=source, strip=strip.name)
        reason = _reason(studio)
        assert reason.startswith(f"The sound strip '{strip.name}' {verb}: Blender cannot read its file as sound")
        assert "Relink" in reason
        assert not bpy.ops.echomask.generate.poll()
        with pytest.raises(EchoMaskError, match=f"The sound strip '{strip.name}'"):
            generate_op.start_generation(studio)
        assert data_snapshot(scene) == before and generate_op.current_run() is None


def test_a_take_longer_than_the_scene_is_refused_unless_extend_is_on(studio, tmp_path):
    generate_op, takes = _gen()
    from echomask.core.errors import EchoMaskError

    scene = studio.scene
    scene.frame_start, scene.frame_end = 1, 40
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "long.wav", seconds=2.0))
    before = data_snapshot(scene)
    with pytest.raises(EchoMaskError, match="runs past the scene's end frame 40. Set the scene's End frame to 60"):
        generate_op.start_generation(studio)
    assert data_snapshot(scene) == before and generate_op.current_run() is None
    settings_for(studio, rig, fit_scene=True)
    assert generate_op.start_generation(studio).drive(studio) == "FINISHED"
    assert scene.frame_end == 60 and takes.playing_take(rig).frame_end == 60


def test_no_runtime_installed_says_how_to_get_one(studio, tmp_path, monkeypatch):
    monkeypatch.delenv("ECHOMASK_PYTHON")
    rig = make_rig(studio, with_face=False)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "r.wav"))
    reason = _reason(studio)
    assert "runtime is not installed" in reason and "Install Runtime" in reason


def test_cuda_asked_for_but_absent_is_explained_from_the_cached_probe(studio, tmp_path, monkeypatch):
    from echomask.echomask_blender.run import runtime, runtime_ops

    rig = make_rig(studio, with_face=False)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "d.wav"), device="CUDA")
    assert _reason(studio) is None                      # not probed yet: the worker will say
    monkeypatch.setenv("ECHOMASK_FAKE_PROBE", '{"cuda": false, "mps": false}')
    task = runtime_ops._ProbeTask(runtime_ops.choose_python(studio))
    runtime_ops._TASK["task"] = task
    runtime_ops.drive_task(30)
    summary = runtime_ops.finish_probe(task, studio)
    assert "torch 0.0-fake" in summary and "CPU" in summary
    assert runtime.cached_probe(runtime_ops.runtime_dir(), runtime_ops.choose_python(studio).python)["cuda"] is False
    assert "CUDA is not available" in _reason(studio)
    settings_for(studio, rig, device="CPU")
    assert _reason(studio) is None


def test_the_panel_draws_in_every_state(studio, tmp_path):
    """Panels cannot be drawn headless; this checks their draw code against a recording layout instead."""
    from echomask.echomask_blender.ui import panel

    calls = []

    class Recorder:
        def __getattr__(self, name):
            def record(*args, **kwargs):
                calls.append(name)
                return self
            return record

        def __setattr__(self, name, value):
            pass

    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "p.wav", seconds=1.0))
    for cls in panel.PANEL_CLASSES:
        fake = type("P", (), {"layout": Recorder()})()
        cls.draw(fake, studio)
    assert "operator" in calls and "prop" in calls
    studio.window_manager.echomask_job.running = True
    fake = type("P", (), {"layout": Recorder()})()
    calls.clear()
    panel.VIEW3D_PT_echomask.draw(fake, studio)
    assert "progress" in calls
    studio.window_manager.echomask_job.running = False
    # the takes list: filter keeps only take tracks (newest first), rows draw their buttons
    from echomask.echomask_blender.takes import nla as takes

    takes.write_new_take(rig, synthetic_take(n=5), name="row", frame_start=1)
    anim = rig.animation_data
    flags, order = takes.ECHOMASK_UL_takes.filter_items(type("U", (), {"bitflag_filter_item": 1 << 30})(),
                                                        studio, anim, "nla_tracks")
    assert sum(1 for f in flags if f) == len(takes.list_takes(rig)) and order == list(range(len(flags)))[::-1]
    calls.clear()
    takes.ECHOMASK_UL_takes.draw_item(None, studio, Recorder(), anim, anim.nla_tracks[0], 0, None, "", 0, 0)
    assert calls.count("operator") == 3


@requires_bpy
def test_the_worker_request_carries_the_panel_settings(studio):
    gen, _ = _gen()
    rig = make_rig(studio)
    settings = settings_for(studio, rig, seed=7, temperature=0.3, intensity=1.4, lipsync=0.25)
    request = gen.build_request(settings, "/a.wav", "/out.npz", 24.0, {"face", "upper", "root"}, None)
    assert request["seed"] == 7 and request["lipsync"] == pytest.approx(0.25)
    assert request["temperature"] == pytest.approx(0.3) and request["intensity"] == pytest.approx(1.4)
    assert request["fps"] == 24.0 and "weights" not in request


@requires_bpy
def test_model_choice_bundled_or_a_model_file(studio, tmp_path, monkeypatch):
    from echomask.echomask_blender.run import runtime_ops

    gen, _ = _gen()
    monkeypatch.delenv("ECHOMASK_WEIGHTS", raising=False)
    rig = make_rig(studio)
    settings = settings_for(studio, rig, model="BUNDLED")
    assert runtime_ops.weights_path(studio) is None  # the bundled default
    settings.model = "FILE"
    import types

    prefs = types.SimpleNamespace(weights_path="")  # the studio registers classes, not the add-on's preferences
    monkeypatch.setattr(runtime_ops, "preferences", lambda context=None: prefs)
    assert "no file is set" in gen.generate_blocker(studio)
    prefs.weights_path = str(tmp_path / "missing.safetensors")
    assert "does not exist" in gen.generate_blocker(studio)
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"x")
    prefs.weights_path = str(model)
    assert runtime_ops.weights_path(studio) == str(model)
    assert runtime_ops.model_file_problem(studio) is None
