"""Phone recognition in the helper process (core.speech.phone_process): the same features as in-process
recognition, row for row; falls back when the helper dies or is off; never outlives its parent."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from echomask.core.generation import features
from echomask.core.speech import get_backend, num_frames, phone_process
from echomask.core.speech.audio import load_speech
from echomask.core.speech.phones import RecogniserConfig, recognise_phone_pieces, recognise_phones

ROOT = pathlib.Path(__file__).resolve().parent.parent
FPS = 30.0


@pytest.fixture(scope="module")
def speech_61s():
    """The bundled example speech twice (61 s): two ~30 s recogniser pieces in one 60 s feature chunk."""
    one = load_speech(str(ROOT / "examples" / "example_speech.wav"))
    return np.concatenate([one, one])


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(features, "_FEATURE_MEMO", type(features._FEATURE_MEMO)())


def _serial_fn(seg, fps):
    return get_backend("builtin").compute(seg, fps, num_frames(len(seg), fps))


def _stream_rows(fn, audio, chunk_frames):
    n = num_frames(len(audio), FPS) + 4
    stream = features.FeatureStream(audio, n, FPS, fn, chunk_frames)
    rows = [stream.rows(s, min(n, s + 64)) for s in range(0, n - 4, 60)]
    return rows, stream.phones


@pytest.mark.parametrize("chunk_frames", [1800, 600])
def test_streamed_features_equal_in_process_features(speech_61s, chunk_frames):
    """Rows handed out while the helper is still decoding are final: they equal, bit for bit, the features
    computed in this process (the model's input must not depend on where the phones were recognised)."""
    phone_process.submit_phones(speech_61s[:1600], RecogniserConfig()).finish()   # the helper is up
    assert phone_process._HELPER is not None, "the helper process did not start"
    ref_rows, ref_phones = _stream_rows(_serial_fn, speech_61s, chunk_frames)
    rows, phones = _stream_rows(features.BuiltinFeatures(), speech_61s, chunk_frames)
    assert phones == ref_phones and len(phones) > 300
    assert len(rows) == len(ref_rows)
    for (low, high), (ref_low, ref_high) in zip(rows, ref_rows):
        assert np.array_equal(low, ref_low) and np.array_equal(high, ref_high)


def test_pieces_arrive_in_order_before_the_clip_is_done(speech_61s):
    pieces = list(recognise_phone_pieces(speech_61s))
    assert len(pieces) == 2
    assert [s for _, segs in pieces for s in segs] == recognise_phones(speech_61s)
    job = phone_process.submit_phones(speech_61s, RecogniserConfig())
    job.wait_until(1.0)
    assert job.helper is not None and not job.done
    assert job.covered_s == pytest.approx(pieces[0][0])      # the first piece, not the whole clip
    assert job.segments == pieces[0][1]
    assert job.finish() == recognise_phones(speech_61s)


def test_a_dead_helper_falls_back_to_the_same_phones(speech_61s):
    job = phone_process.submit_phones(speech_61s, RecogniserConfig())
    helper = job.helper
    assert helper is not None
    job.wait_until(1.0)             # part of the clip came from the helper...
    helper.proc.kill()              # ...then it dies (a crash, an out-of-memory kill)
    assert job.finish() == recognise_phones(speech_61s)
    assert helper.broken and phone_process._HELPER is not helper
    again = phone_process.submit_phones(speech_61s[:48000], RecogniserConfig())   # a new helper next time
    assert again.helper is not None and again.helper is not helper
    assert again.finish() == recognise_phones(speech_61s[:48000])


def test_switched_off_recognises_here(speech_61s, monkeypatch):
    monkeypatch.setenv(phone_process.ENV_SWITCH, "0")
    job = phone_process.submit_phones(speech_61s[:80000], RecogniserConfig())
    assert job.helper is None
    assert job.finish() == recognise_phones(speech_61s[:80000])


def test_an_abandoned_stream_does_not_delay_the_next(speech_61s):
    """A cancelled generation leaves the helper decoding for nobody: it is replaced, and the next stream
    gets correct phones."""
    n = num_frames(len(speech_61s), FPS)
    stream = features.FeatureStream(speech_61s, n, FPS, features.BuiltinFeatures(), 1800)
    stream.rows(0, 64)
    helper = phone_process._HELPER
    del stream                       # the generation stopped here (cancel raised in the window loop)
    assert helper.broken
    rows, phones = _stream_rows(features.BuiltinFeatures(), speech_61s[:160000], 1800)
    assert phones == _stream_rows(_serial_fn, speech_61s[:160000], 1800)[1]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, maybe not at once)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:   # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


@pytest.mark.skipif(os.name != "posix", reason="kills a process with SIGKILL")
def test_the_helper_exits_with_its_parent(tmp_path):
    """Cancel kills the worker; its helper must not keep running (it reads EOF on its stdin and exits)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT.parent)!r})\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import conftest\n"
        "import numpy as np\n"
        "from echomask.core.speech import phone_process\n"
        "from echomask.core.speech.phones import RecogniserConfig\n"
        "rng = np.random.default_rng(0)\n"
        "job = phone_process.submit_phones((0.1 * rng.standard_normal(16000 * 120)).astype(np.float32),\n"
        "                                  RecogniserConfig())\n"
        "print(job.helper.proc.pid, flush=True)\n"
        "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script), str(ROOT / "tests")], stdout=subprocess.PIPE,
                              text=True)
    try:
        helper_pid = int(parent.stdout.readline())
        os.kill(helper_pid, 0)                  # it runs
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 20        # it finishes the piece it is decoding, then sees EOF
        while time.monotonic() < deadline and _running(helper_pid):
            time.sleep(0.1)
        if _running(helper_pid):
            os.kill(helper_pid, signal.SIGKILL)
            pytest.fail("the phone helper kept running after its parent was killed")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdout.close()


def test_generation_is_the_same_with_and_without_the_helper(speech_61s, monkeypatch):
    """The bundled model on real features: the same take whether the phones came from the helper or not
    (20 s in 5 s chunks, so windows wait on chunks the helper is still decoding)."""
    pytest.importorskip("torch")
    from echomask.core.generation.inference import generate
    from echomask.core.paths import DEFAULT_MODEL

    if not pathlib.Path(DEFAULT_MODEL).exists():
        pytest.skip(f"needs the bundled weights ({DEFAULT_MODEL})")
    audio = speech_61s[:16000 * 20]
    with_helper = generate(audio, model=str(DEFAULT_MODEL), device="cpu", seed=3, chunk_frames=150)
    assert phone_process._HELPER is not None and not phone_process._HELPER.broken
    monkeypatch.setenv(phone_process.ENV_SWITCH, "0")
    monkeypatch.setattr(features, "_FEATURE_MEMO", type(features._FEATURE_MEMO)())
    submitted = []
    monkeypatch.setattr(phone_process.PhoneHelper, "submit", lambda *a: submitted.append(a))
    here = generate(audio, model=str(DEFAULT_MODEL), device="cpu", seed=3, chunk_frames=150)
    assert submitted == []
    assert np.array_equal(with_helper.poses, here.poses)
    assert np.array_equal(with_helper.expressions, here.expressions)
    assert np.array_equal(with_helper.trans, here.trans)
