"""The worker job state machine (plain Python, no bpy): run, progress, cancel, errors, deaths, timeouts."""
import json
import os
import pathlib
import sys
import time

import numpy as np

from echomask.core.jobs.client import (JobState, JobTimeouts, WorkerJob, explain_exit, python_command,
                                       worker_environment, write_request)
from echomask.core.motion.take import load_take
from conftest import write_pcm16_wav

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAKE_WORKER = str(ROOT / "tests" / "fake_worker.py")


def _wav(path, seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return write_pcm16_wav(path, 0.3 * np.sin(2 * np.pi * 180 * t) * (t % 0.5 < 0.3), rate)


def _job(tmp_path, mode="ok", steps=5, delay=0.01, timeouts=None, **request):
    env = worker_environment(str(ROOT))
    env.update(ECHOMASK_FAKE_MODE=mode, ECHOMASK_FAKE_STEPS=str(steps), ECHOMASK_FAKE_DELAY=str(delay))
    req = {"audio": _wav(tmp_path / "speech.wav"), "output": str(tmp_path / "take.npz"), "fps": 30, "seed": 3}
    req.update(request)
    path = write_request(str(tmp_path / "job"), req)
    return WorkerJob(python_command(sys.executable, ["--request", path], FAKE_WORKER), cwd=str(tmp_path),
                     env=env, timeouts=timeouts)


def test_a_job_reports_progress_and_its_result(tmp_path):
    job = _job(tmp_path, steps=4, delay=0.05)
    assert job.start().state == JobState.RUNNING
    fractions, messages = [], []
    end = time.monotonic() + 30
    while time.monotonic() < end:
        status = job.tick()
        for event in status.events:
            if event["event"] == "progress":
                fractions.append(event["fraction"])
        messages.append(status.message)
        if status.state.finished:
            break
        time.sleep(0.01)
    job.close()
    assert status.state == JobState.DONE, status.error
    assert status.fraction == 1.0
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("Generating gestures" in m for m in messages)
    take = load_take(status.result["result"])
    assert take.num_frames == status.result["frames"] == 30 and take.fps == 30


def test_tick_never_blocks_even_while_the_worker_is_busy(tmp_path):
    job = _job(tmp_path, steps=20, delay=0.05)
    job.start()
    worst = 0.0
    status = job.tick()
    while not status.state.finished:
        t0 = time.perf_counter()
        status = job.tick()
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.005)
    job.close()
    assert status.state == JobState.DONE
    assert worst < 0.02, f"one tick blocked for {worst * 1000:.1f} ms"


def test_cancel_terminates_and_reports_cancelled(tmp_path):
    job = _job(tmp_path, steps=200, delay=0.05)
    job.start()
    while not job.tick().events:   # wait until it is really running
        time.sleep(0.01)
    job.cancel()
    assert job.tick().state == JobState.CANCELLING
    status = job.wait(10)
    job.close()
    assert status.state == JobState.CANCELLED
    assert not os.path.exists(tmp_path / "take.npz")


def test_a_worker_that_ignores_terminate_is_killed_after_the_grace_period(tmp_path):
    job = _job(tmp_path, mode="stubborn", steps=400, delay=0.05, timeouts=JobTimeouts(kill_grace=0.3))
    job.start()
    while not job.tick().events:
        time.sleep(0.01)
    t0 = time.monotonic()
    job.cancel()
    status = job.wait(10)
    job.close()
    assert status.state == JobState.CANCELLED
    assert 0.25 < time.monotonic() - t0 < 5


def test_a_worker_error_is_shown_as_its_message(tmp_path):
    job = _job(tmp_path, mode="fail")
    job.start()
    status = job.wait(20)
    job.close()
    assert status.state == JobState.ERROR
    assert status.error == "The speech file is silent: there is nothing to animate."
    assert status.error_kind == "AudioError"


def test_a_worker_that_dies_becomes_a_plain_message(tmp_path):
    job = _job(tmp_path, mode="die")
    job.start()
    status = job.wait(20)
    job.close()
    assert status.state == JobState.ERROR and status.error_kind == "WorkerDied"
    assert "stopped by the system" in status.error and "memory" in status.error


def test_a_runtime_without_torch_says_to_install_the_runtime(tmp_path):
    job = _job(tmp_path, mode="notorch")
    job.start()
    status = job.wait(20)
    job.close()
    assert status.state == JobState.ERROR
    assert "no torch" in status.error and "Preferences" in status.error


def test_non_json_output_and_a_crash_give_the_last_console_line(tmp_path):
    job = _job(tmp_path, mode="garbage")
    job.start()
    status = job.wait(20)
    job.close()
    assert status.state == JobState.ERROR
    assert "exit code 1" in status.error and "Segmentation fault" in status.error


def test_a_hung_worker_times_out_and_is_stopped(tmp_path):
    job = _job(tmp_path, mode="hang", timeouts=JobTimeouts(stall_timeout=0.5, kill_grace=0.2))
    job.start()
    status = job.wait(15)
    assert status.state == JobState.ERROR and status.error_kind == "Timeout"
    assert "stopped responding" in status.error
    job.close()
    assert job._proc.poll() is not None  # the process is gone, not left running


def test_a_missing_python_is_an_error_not_an_exception(tmp_path):
    job = WorkerJob(["/nonexistent/python3", "-m", "core.jobs.worker"])
    status = job.start()
    assert status.state == JobState.ERROR
    assert "was not found" in status.error and "Preferences" in status.error


def test_exit_explanations_are_in_plain_words():
    assert "exit code 3" in explain_exit(3, ["boom"])
    assert "out of memory" in explain_exit(1, ["RuntimeError: CUDA out of memory. Tried to allocate"])
    assert "SIGKILL" in explain_exit(-9, [])


def test_request_file_round_trips(tmp_path):
    path = write_request(str(tmp_path / "a" / "b"), {"audio": "x.wav", "seed": 1})
    assert json.loads(pathlib.Path(path).read_text()) == {"audio": "x.wav", "seed": 1}
