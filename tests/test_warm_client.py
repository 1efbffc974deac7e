"""The warm worker's client (core/jobs/client.py, no bpy) against tests/fake_worker.py --serve: reuse, the
idle timeout seen from Blender's side, a missing Python, one shared worker per runtime, stopping it."""
import pathlib
import sys
import time

import numpy as np

from echomask.core.jobs import client
from conftest import write_pcm16_wav

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAKE_WORKER = str(ROOT / "tests" / "fake_worker.py")


def _wav(path, seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return write_pcm16_wav(path, 0.3 * np.sin(2 * np.pi * 180 * t) * (t % 0.25 < 0.15), rate)


def _worker(idle_timeout=900.0, **env):
    environment = client.worker_environment(str(ROOT))
    environment.update(ECHOMASK_FAKE_DELAY="0.005", **env)
    command = client.python_command(sys.executable, client.serve_args(idle_timeout), FAKE_WORKER)
    return client.WarmWorker(command, cwd=str(ROOT), env=environment, idle_timeout=idle_timeout)


def _generate(worker, tmp_path, name):
    job = client.WarmWorkerJob(worker, {"audio": _wav(tmp_path / f"{name}.wav"),
                                        "output": str(tmp_path / f"{name}.npz"), "fps": 30})
    job.start()
    status = job.wait(20)
    job.close()
    return job, status


def test_jobs_reuse_one_process_and_report_its_state(tmp_path):
    worker = _worker()
    try:
        assert worker.describe() == "Worker: off"
        first, status = _generate(worker, tmp_path, "a")
        assert status.state == client.JobState.DONE and first.fresh_worker
        second, status = _generate(worker, tmp_path, "b")
        assert status.state == client.JobState.DONE and not second.fresh_worker
        assert worker.processes_started == 1 and (tmp_path / "b.npz").exists()
        end = time.monotonic() + 5
        while worker.describe() != "Worker: warm (model loaded)" and time.monotonic() < end:
            time.sleep(0.01)                     # the 'idle' event follows 'done'
        assert worker.describe() == "Worker: warm (model loaded)"
    finally:
        worker.stop()
    assert not worker.alive and worker.describe() == "Worker: off"


def test_a_worker_that_left_on_its_idle_timeout_is_replaced_and_that_is_said(tmp_path):
    worker = _worker(idle_timeout=6.0)   # the client replaces one within 5 s of its timeout itself
    try:
        _, status = _generate(worker, tmp_path, "a")
        assert status.state == client.JobState.DONE
        worker.process.wait(15)              # it exits by itself
        assert worker.describe() == "Worker: off (stopped after being idle)"
        job, status = _generate(worker, tmp_path, "b")
        assert status.state == client.JobState.DONE and job.fresh_worker
        assert job.replaced_note == "The previous generator stopped after being idle; started a fresh one."
    finally:
        worker.stop()


def test_a_missing_python_is_an_error_in_the_preferences_words(tmp_path):
    worker = client.WarmWorker(["/nonexistent/python3", "-m", "core.jobs.worker", "--serve"])
    job = client.WarmWorkerJob(worker, {"audio": "x.wav", "output": "x.npz"})
    status = job.start()
    assert status.state == client.JobState.ERROR and status.error_kind == "RuntimeMissing"
    assert "was not found" in status.error and "Preferences" in status.error


def test_one_shared_worker_per_runtime_and_stopping_it_ends_the_process(tmp_path):
    first = _shared(ECHOMASK_FAKE_STEPS="2")
    try:
        assert _shared(ECHOMASK_FAKE_STEPS="2") is first
        first.ensure_started()
        other = _shared(ECHOMASK_FAKE_STEPS="3")   # other settings
        assert other is not first and not first.alive                                 # the old one stopped
        other.ensure_started()
        assert client.current_warm_worker() is other and other.alive
    finally:
        client.stop_warm_worker()
    assert not other.alive and client.current_warm_worker() is None


def _shared(**env):
    environment = client.worker_environment(str(ROOT))
    environment.update(env)
    return client.shared_warm_worker(client.python_command(sys.executable, client.serve_args(), FAKE_WORKER),
                                     cwd=str(ROOT), env=environment)


def test_a_warm_worker_that_stops_answering_is_given_up_on_quickly_and_killed(tmp_path, monkeypatch):
    """Ready, then deaf (a deadlock between jobs): a warm worker has nothing to import, so no 'started' within
    WARM_ANSWER_TIMEOUT means stuck; the job fails with the timeout and the process is killed."""
    monkeypatch.setattr(client, "WARM_ANSWER_TIMEOUT", 0.5)
    deaf = ("import json, time; print(json.dumps({'event': 'ready', 'pid': 0, 'protocol': 2, 'models': []}), "
            "flush=True); time.sleep(60)")
    worker = client.WarmWorker([sys.executable, "-c", deaf])
    try:
        worker.ensure_started()
        end = time.monotonic() + 20
        while not worker.ready and time.monotonic() < end:
            time.sleep(0.01)
        job = client.WarmWorkerJob(worker, {"audio": "x.wav", "output": str(tmp_path / "x.npz")})
        job.start()
        assert not job.fresh_worker
        t0 = time.monotonic()
        status = job.wait(10)
        assert status.state == client.JobState.ERROR and status.error_kind == "Timeout"
        assert time.monotonic() - t0 < 5 and "A fresh generator starts with the next Generate." in status.error
        assert not worker.alive
        assert worker.describe() == "Worker: off (had stopped responding)"
    finally:
        worker.stop()
