"""The worker protocol (core/jobs/protocol.py) and the warm worker's serve loop (core.jobs.worker.serve), in
process with a stand-in job: what a client reads, cancel, quit, the idle timeout. No torch."""
import io
import json
import os
import threading
import time

from echomask.core.jobs import protocol, worker


def _events(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_one_emitter_writes_one_json_line_per_event_and_tags_jobs():
    out = io.StringIO()
    protocol.emit("progress", stream=out, fraction=0.5, message="half")
    with protocol.tagged("j1"):
        protocol.emit("done", stream=out, result="x.npz")
    assert _events(out.getvalue()) == [{"event": "progress", "fraction": 0.5, "message": "half"},
                                       {"event": "done", "result": "x.npz", "job": "j1"}]
    assert protocol.parse_event('{"event": "warning", "message": "m"}\n') == {"event": "warning", "message": "m"}
    assert protocol.parse_event("a library's print()") is None and protocol.parse_event('{"no": 1}') is None
    assert json.loads(protocol.request_line("cancel", job="j1")) == {"op": "cancel", "job": "j1"}


class _Pipe:
    """A stdin the test writes request lines into while serve() runs in a thread."""

    def __init__(self):
        r, w = os.pipe()
        self.reader, self.writer = os.fdopen(r, "r"), os.fdopen(w, "w")

    def send(self, op, **fields):
        self.writer.write(protocol.request_line(op, **fields))
        self.writer.flush()


def _serve(capsys, run, idle_timeout=30.0):
    pipe = _Pipe()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", worker.serve(
        run, idle_timeout=idle_timeout, load=lambda w, d: None, models=lambda: ["m @ cpu"], stdin=pipe.reader)))
    thread.start()
    return pipe, thread, result


def test_serve_answers_requests_in_order_cancels_the_running_job_and_quits(capsys):
    started = threading.Event()

    def run(request, cancelled):
        if request.get("slow"):
            started.set()
            end = time.monotonic() + 10
            while not cancelled() and time.monotonic() < end:
                time.sleep(0.01)
            if cancelled():
                raise worker.JobCancelled()
        return {"result": request["output"], "frames": 3}

    pipe, thread, result = _serve(capsys, run)
    pipe.send("generate", job="a", request={"output": "a.npz"})
    pipe.send("generate", job="b", request={"output": "b.npz", "slow": True})
    assert started.wait(10)
    pipe.send("cancel", job="b")        # read while job b runs
    pipe.send("load", job="c", weights=None, device="cpu")
    pipe.send("quit")
    thread.join(10)
    assert result["rc"] == 0
    events = _events(capsys.readouterr().out)
    kinds = [(e["event"], e.get("job")) for e in events]
    assert kinds == [("ready", None), ("started", "a"), ("done", "a"), ("idle", "a"), ("started", "b"),
                     ("cancelled", "b"), ("idle", "b"), ("loaded", "c"), ("idle", "c"), ("exiting", None)]
    assert events[0]["models"] == ["m @ cpu"] and events[0]["protocol"] == protocol.PROTOCOL_VERSION
    assert events[2]["result"] == "a.npz" and events[-1]["reason"] == "quit"


def test_a_job_error_is_an_event_and_the_worker_keeps_serving(capsys):
    from echomask.core.errors import AudioError

    def run(request, cancelled):
        if request.get("silent"):
            raise AudioError("No speech found in x.wav")
        return {"result": "ok.npz"}

    pipe, thread, result = _serve(capsys, run)
    pipe.send("generate", job="a", request={"silent": True})
    pipe.send("generate", job="b", request={})
    pipe.send("quit")
    thread.join(10)
    events = _events(capsys.readouterr().out)
    assert {"event": "error", "message": "No speech found in x.wav", "kind": "AudioError", "job": "a"} in events
    assert {"event": "done", "result": "ok.npz", "job": "b"} in events


def test_a_forgotten_worker_exits_on_its_idle_timeout_and_when_stdin_closes(capsys):
    pipe, thread, result = _serve(capsys, lambda request, cancelled: {}, idle_timeout=0.2)
    thread.join(10)
    assert not thread.is_alive() and result["rc"] == 0
    assert _events(capsys.readouterr().out)[-1] == {"event": "exiting", "reason": "idle"}
    pipe, thread, result = _serve(capsys, lambda request, cancelled: {})
    pipe.writer.close()                 # Blender quit or crashed
    thread.join(10)
    assert _events(capsys.readouterr().out)[-1] == {"event": "exiting", "reason": "stdin closed"}


def test_speech_features_of_the_same_line_are_computed_once_per_process(monkeypatch):
    import numpy as np

    from echomask.core import speech
    from echomask.core.generation import features

    calls = []
    real = speech.compute_speech_features

    def counting(audio, fps=30.0, backend="builtin", cache_dir=None):
        calls.append(len(audio))
        return real(audio, fps=fps, backend=backend)

    monkeypatch.setattr(speech, "compute_speech_features", counting)
    monkeypatch.setattr(features, "_FEATURE_MEMO", type(features._FEATURE_MEMO)())
    rng = np.random.default_rng(0)
    line = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    other = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    fn = features.default_feature_fn("builtin")
    low, high, phones = fn(line, 30.0)
    again = fn(line.copy(), 30.0)                 # the same samples, another array: remembered
    fn(other, 30.0)
    assert calls == [16000, 16000]
    np.testing.assert_array_equal(low, again[0])
    np.testing.assert_array_equal(high, again[1])
    assert again[2] == phones and again[2] is not phones
