"""The warm generator, driven as an animator does: Generate, Generate again, Esc, a worker that dies or hangs,
the warm worker turned off, the panel's worker line and its Start/Stop buttons.

The fake worker (tests/fake_worker.py --serve, the real serve loop around a fake generation) spends
ECHOMASK_FAKE_STARTUP seconds starting, as the real one spends importing torch and loading the model: a
one-shot job pays it every time, a warm worker once. Modal steps are stepped by hand (headless bpy has no
timers), through the Generate operator's own modal().
"""
import os
import signal
import time
import types

import pytest

from blender_helpers import ctx, registered  # noqa: F401
from conftest import requires_bpy
from studio_helpers import data_snapshot, make_rig, settings_for, studio, write_wav  # noqa: F401

pytestmark = requires_bpy

STARTUP = 0.8   # seconds the fake worker takes to start (the real one: ~2.4 s of imports and model load)


@pytest.fixture
def warm(studio, monkeypatch):
    monkeypatch.setenv("ECHOMASK_WARM_WORKER", "1")
    monkeypatch.setenv("ECHOMASK_FAKE_STARTUP", str(STARTUP))
    yield studio
    from echomask.echomask_blender.run import worker_service

    worker_service.stop()


def _modules():
    from echomask.core.jobs import client
    from echomask.echomask_blender.run import generate_op, worker_service
    from echomask.echomask_blender.takes import nla as takes

    return client, generate_op, takes, worker_service


_TIMER = types.SimpleNamespace(type="TIMER", value="NOTHING")
_ESC = types.SimpleNamespace(type="ESC", value="PRESS")


def _operator():
    """What the Generate operator's modal() uses of itself (headless: no window timer)."""
    return types.SimpleNamespace(_timer=None, report=lambda *a: None, _end=lambda context, result: result)


def _generate(ctx, timeout=20.0):
    """Click Generate, let the timer tick until the take plays; returns (run, seconds click -> take)."""
    _, generate_op, _, _ = _modules()
    op, modal = _operator(), generate_op.ECHOMASK_OT_generate.modal
    t0 = time.perf_counter()
    run = generate_op.start_generation(ctx)
    end = time.monotonic() + timeout
    result = {"PASS_THROUGH"}
    while result == {"PASS_THROUGH"} and time.monotonic() < end:
        result = modal(op, ctx, _TIMER)
        if run.phase == "JOB":
            time.sleep(0.01)
    return run, time.perf_counter() - t0


def _scene(ctx, tmp_path, name="speech.wav", seconds=1.0):
    ctx.scene.frame_end = 100
    rig = make_rig(ctx)
    settings_for(ctx, rig, audio_source="FILE", audio_file=write_wav(tmp_path / name, seconds=seconds))
    return rig


def test_the_second_generate_reuses_the_warm_worker_and_is_faster(warm, tmp_path):
    client, _, takes, worker_service = _modules()
    rig = _scene(warm, tmp_path)
    first, cold = _generate(warm)
    assert first.phase == "FINISHED", first.error
    assert isinstance(first.job, client.WarmWorkerJob) and first.job.fresh_worker
    worker = client.current_warm_worker()
    pid = worker.pid
    assert worker_service.state_text(warm) == "Worker: warm (model loaded)"
    second, warm_seconds = _generate(warm)
    third, _ = _generate(warm)
    assert second.phase == third.phase == "FINISHED", (second.error, third.error)
    assert worker.processes_started == 1 and worker.pid == pid            # no new process
    assert not second.job.fresh_worker and not third.job.fresh_worker
    assert cold > STARTUP and warm_seconds < cold - STARTUP / 2, (cold, warm_seconds)
    assert len({first.result, second.result, third.result}) == 3          # three takes, the last one plays
    assert takes.playing_take(rig).name == third.result


def test_rekey_uses_the_same_warm_worker(warm, tmp_path):
    client, _, takes, _ = _modules()
    from echomask.echomask_blender.takes import rekey

    rig = _scene(warm, tmp_path)
    run, _ = _generate(warm)
    assert run.phase == "FINISHED", run.error
    pid = client.current_warm_worker().pid
    settings_for(warm, rig, rekey_start=5, rekey_end=15, seed=4)
    run = rekey.start_rekey(warm)
    assert run.drive(warm, timeout=20) == "FINISHED", run.error
    assert isinstance(run.job, client.WarmWorkerJob) and client.current_warm_worker().pid == pid
    assert "rekey" in takes.playing_take(rig).name


def test_esc_during_a_warm_job_stops_it_at_once_and_the_next_generate_works(warm, tmp_path, monkeypatch):
    client, generate_op, takes, worker_service = _modules()
    rig = _scene(warm, tmp_path)
    run, _ = _generate(warm)                                    # warm now
    assert run.phase == "FINISHED"
    first_take = run.result
    monkeypatch.setenv("ECHOMASK_FAKE_STEPS", "400")            # a long take (the same worker: env unchanged
    monkeypatch.setenv("ECHOMASK_FAKE_DELAY", "0.02")           # would keep it; these change it, so warm again)
    run, _ = _generate(warm)
    assert run.phase == "FINISHED"
    before = data_snapshot(warm.scene)
    worker = client.current_warm_worker()
    op, modal = _operator(), generate_op.ECHOMASK_OT_generate.modal
    run = generate_op.start_generation(warm)
    while warm.window_manager.echomask_job.progress == 0.0:     # it is really generating
        modal(op, warm, _TIMER)
        time.sleep(0.01)
    t0 = time.monotonic()
    result = modal(op, warm, _ESC)
    while result == {"PASS_THROUGH"} and time.monotonic() - t0 < 10:
        result = modal(op, warm, _TIMER)
    assert result == {"CANCELLED"} and run.phase == "CANCELLED"
    assert time.monotonic() - t0 < 0.5, "cancel must stop the warm job at once"
    assert not worker.alive                                     # the job's process is gone, not left running
    assert data_snapshot(warm.scene) == before
    assert "cancelled" in warm.window_manager.echomask_job.last_info
    assert worker_service.state_text(warm) == "Worker: off (was stopped by Cancel)"
    run, _ = _generate(warm)
    assert run.phase == "FINISHED", run.error
    assert run.job.fresh_worker and "stopped by Cancel; started a fresh one" in run.worker_note
    assert "started a fresh one" in warm.window_manager.echomask_job.last_info
    assert takes.playing_take(rig).name == run.result != first_take


def test_a_warm_worker_killed_between_takes_is_reported_and_replaced(warm, tmp_path):
    client, _, _, worker_service = _modules()
    _scene(warm, tmp_path)
    run, _ = _generate(warm)
    assert run.phase == "FINISHED"
    worker = client.current_warm_worker()
    old_pid = worker.pid
    os.killpg(old_pid, signal.SIGKILL)                          # e.g. the system's out-of-memory killer
    worker.process.wait(5)
    assert worker_service.state_text(warm) == "Worker: off (was stopped by the system (SIGKILL))"
    before = data_snapshot(warm.scene)
    run, _ = _generate(warm)
    assert run.phase == "FINISHED", run.error
    assert worker.pid != old_pid and worker.processes_started == 2
    assert "The previous generator was stopped by the system (SIGKILL); started a fresh one." in run.worker_note
    assert data_snapshot(warm.scene) != before                  # the new take is there


def test_a_warm_worker_that_dies_during_a_take_is_reported_and_the_next_generate_works(warm, tmp_path,
                                                                                       monkeypatch):
    client, _, takes, _ = _modules()
    monkeypatch.setenv("ECHOMASK_FAKE_MODE", "die")
    monkeypatch.setenv("ECHOMASK_FAKE_ONCE", str(tmp_path / "died"))   # only the first job dies
    rig = _scene(warm, tmp_path)
    before = data_snapshot(warm.scene)
    run, _ = _generate(warm)
    assert run.phase == "ERROR"
    assert "stopped by the system" in run.error and "A fresh generator starts with the next Generate." in run.error
    assert run.error in warm.window_manager.echomask_job.last_error
    assert data_snapshot(warm.scene) == before                  # never half-changed
    run, _ = _generate(warm)
    assert run.phase == "FINISHED", run.error
    assert client.current_warm_worker().processes_started == 2
    assert takes.playing_take(rig).name == run.result


def test_a_hung_warm_worker_times_out_is_stopped_and_replaced(warm, tmp_path, monkeypatch):
    client, generate_op, takes, _ = _modules()
    monkeypatch.setenv("ECHOMASK_FAKE_MODE", "hang")
    monkeypatch.setenv("ECHOMASK_FAKE_ONCE", str(tmp_path / "hung"))
    rig = _scene(warm, tmp_path)
    before = data_snapshot(warm.scene)
    run = generate_op.start_generation(warm)
    run.job.timeouts = client.JobTimeouts(stall_timeout=0.5)    # minutes in Blender; half a second here
    worker = client.current_warm_worker()
    assert run.drive(warm, timeout=20) == "ERROR"
    assert "stopped responding" in run.error and "A fresh generator starts with the next Generate." in run.error
    assert not worker.alive                                     # stopped, not left running
    assert data_snapshot(warm.scene) == before
    run, _ = _generate(warm)
    assert run.phase == "FINISHED", run.error
    assert "had stopped responding; started a fresh one" in run.worker_note
    assert takes.playing_take(rig).name == run.result


def test_warm_worker_off_is_one_process_per_take(studio, tmp_path, monkeypatch):
    client, _, _, worker_service = _modules()
    monkeypatch.setenv("ECHOMASK_WARM_WORKER", "0")
    monkeypatch.setenv("ECHOMASK_FAKE_STARTUP", "0.3")
    worker_service.stop()
    _scene(studio, tmp_path)
    pids = []
    for _ in range(2):
        run, seconds = _generate(studio)
        assert run.phase == "FINISHED", run.error
        assert type(run.job) is client.WorkerJob and run.job._proc.poll() is not None   # its own, ended
        assert seconds > 0.3                                     # every take pays the start-up
        pids.append(run.job.pid)
    assert pids[0] != pids[1]
    assert client.current_warm_worker() is None
    assert worker_service.state_text(studio) == "Worker: off (one process per take)"


def test_start_worker_loads_the_model_and_stop_worker_ends_it(warm, tmp_path):
    import bpy

    client, _, _, worker_service = _modules()
    _scene(warm, tmp_path)
    assert worker_service.state_text(warm) == "Worker: off"
    assert bpy.ops.echomask.start_worker() == {"FINISHED"}
    worker = client.current_warm_worker()
    assert worker_service.state_text(warm) == "Worker: starting"
    end = time.monotonic() + 20
    while worker_service.state_text(warm) != "Worker: warm (model loaded)" and time.monotonic() < end:
        time.sleep(0.02)
    assert worker_service.state_text(warm) == "Worker: warm (model loaded)"
    assert not bpy.ops.echomask.start_worker.poll()             # already running
    run, seconds = _generate(warm)
    assert run.phase == "FINISHED" and not run.job.fresh_worker  # the first Generate is warm already
    assert seconds < STARTUP
    assert bpy.ops.echomask.stop_worker() == {"FINISHED"}
    assert not worker.alive and worker_service.state_text(warm) == "Worker: off"


def test_the_panel_shows_the_worker_state_and_the_button_that_fits(warm, tmp_path):
    from echomask.echomask_blender.ui import panel

    shown = []

    class Recorder:   # panels cannot be drawn headless: record what the draw code asks for
        def __getattr__(self, name):
            def record(*args, **kwargs):
                shown.append((name, kwargs.get("text"), args[0] if args and isinstance(args[0], str) else None))
                return self
            return record

        def __setattr__(self, name, value):
            pass

    def draw():
        shown.clear()
        panel.VIEW3D_PT_echomask.draw(type("P", (), {"layout": Recorder()})(), warm)
        labels = [text for name, text, _ in shown if name == "label"]
        buttons = [(text, idname) for name, text, idname in shown if name == "operator"]
        return labels, buttons

    _scene(warm, tmp_path)
    labels, buttons = draw()
    assert "Worker: off" in labels and ("Start Worker", "echomask.start_worker") in buttons
    run, _ = _generate(warm)
    assert run.phase == "FINISHED", run.error
    labels, buttons = draw()
    assert "Worker: warm (model loaded)" in labels and ("Stop Worker", "echomask.stop_worker") in buttons


def test_disabling_the_add_on_stops_the_warm_worker(warm, tmp_path):
    """unregister() (the add-on disabled, or Blender quitting) must not leave a generator process behind."""
    client, _, _, _ = _modules()
    from echomask.echomask_blender import settings, workflow

    _scene(warm, tmp_path)
    run, _ = _generate(warm)
    assert run.phase == "FINISHED", run.error
    worker = client.current_warm_worker()
    assert worker is not None and worker.alive
    pid = worker.pid
    try:
        workflow.unregister_properties()   # the part of the add-on's unregister() that ends its jobs
        assert not worker.alive and client.current_warm_worker() is None
        with pytest.raises(ProcessLookupError):   # the process has exited and been reaped
            os.kill(pid, 0)
    finally:
        settings.attach_properties()      # the module's other tests keep a registered add-on
