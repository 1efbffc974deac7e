"""The generation worker (core.jobs.worker.run_request) on a tiny random-weight bundle: what reaches Blender."""
import numpy as np
import pytest

from conftest import requires_torch
from model_helpers import fake_features, one_thread, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(tiny_bundle(tmp_path_factory.mktemp("w") / "tiny.safetensors"))


@pytest.fixture
def quick_features(monkeypatch):
    """Stand-in speech features (the real ones need minutes of CPU on this tiny model's budget)."""
    from echomask.core.generation import loop

    monkeypatch.setattr(loop, "default_feature_fn", lambda backend: fake_features)


def _speech_wav(path, seconds, seed=0):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * np.arange(n) / 16000)
    sf.write(str(path), (0.1 * env * rng.standard_normal(n)).astype(np.float32), 16000)
    return str(path)


def _request(tmp_path, bundle, audio, **fields):
    return {"audio": audio, "output": str(tmp_path / "take.npz"), "fps": 30.0, "seed": 0, "temperature": 0.0,
            "device": "cpu", "weights": bundle, **fields}


def test_rekey_accepts_speech_a_frame_longer_than_the_take(tmp_path, bundle, quick_features):
    """Scene Sound mixdowns and frame-rate conversion round: the known take is padded, not refused."""
    from echomask.core.jobs import worker
    from echomask.core.errors import EchoMaskError
    from echomask.core.motion.take import Take, load_take, save_take

    audio = _speech_wav(tmp_path / "speech.wav", seconds=61 / 30)    # 61 frames of speech
    rng = np.random.default_rng(1)
    known = Take(poses=(0.1 * rng.standard_normal((60, 165))).astype(np.float32),
                 trans=np.zeros((60, 3), np.float32), expressions=np.zeros((60, 100), np.float32))
    save_take(known, tmp_path / "known.npz")
    mask = np.ones((60, 5), bool)
    mask[20:40, 1] = False
    np.save(tmp_path / "mask.npy", mask)
    request = _request(tmp_path, bundle, audio, known_take=str(tmp_path / "known.npz"),
                       known_mask=str(tmp_path / "mask.npy"), parts=["upper"])
    done = worker.run_request(request)
    assert done["frames"] == 61
    take = load_take(done["result"])
    from echomask.core.motion import rotations as R

    def body(poses):   # rotation matrices of the 22 body joints (the axis-angle itself may differ)
        return R.axis_angle_to_matrix(poses.reshape(-1, 55, 3)[:, :22].astype(np.float64))

    np.testing.assert_allclose(body(take.poses[:20]), body(known.poses[:20]), atol=1e-4)   # known frames kept
    save_take(known.slice(0, 50), tmp_path / "known.npz")                            # 11 frames short
    np.save(tmp_path / "mask.npy", mask[:50])
    with pytest.raises(EchoMaskError, match="not the speech the take was made from"):
        worker.run_request(request)


def test_silence_is_refused_before_the_model_runs(tmp_path, bundle, quick_features):
    import soundfile as sf

    from echomask.core.jobs import worker
    from echomask.core.errors import AudioError

    sf.write(str(tmp_path / "silent.wav"), np.zeros(3 * 16000, np.float32), 16000)
    request = _request(tmp_path, bundle, str(tmp_path / "silent.wav"), audio_label="the sound strip 'Mic 2'")
    with pytest.raises(AudioError, match="No speech found in the sound strip 'Mic 2'"):
        worker.run_request(request)
    assert not (tmp_path / "take.npz").exists()
    del request["audio_label"]                                       # older requests: the file's name
    with pytest.raises(AudioError, match="No speech found in silent.wav"):
        worker.run_request(request)


def _events(text):
    import json

    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_music_is_a_warning_event_and_the_take_is_still_made(tmp_path, bundle, quick_features, capsys):
    """core.generation.inference warns (warnings.warn) on music-like audio; Blender only hears events on stdout."""
    import soundfile as sf

    from echomask.core.jobs import worker

    t = np.arange(32 * 16000) / 16000
    music = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.8 + 0.2 * np.sin(2 * np.pi * 2 * t))   # no pauses
    sf.write(str(tmp_path / "song.wav"), music.astype(np.float32), 16000)
    for attempt in range(2):                     # again in the same process: warned again, not swallowed
        done = worker.run_request(_request(tmp_path, bundle, str(tmp_path / "song.wav")))
        assert done["frames"] == 960 and (tmp_path / "take.npz").exists()
        warned = [e["message"] for e in _events(capsys.readouterr().out) if e["event"] == "warning"]
        assert warned == ["This audio looks like music rather than speech; gestures follow speech best."]


def test_other_libraries_warnings_stay_on_stderr(capsys, monkeypatch):
    import warnings

    from echomask.core.jobs import worker

    shown = []   # what Python's own warning display (stderr) receives
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kw: shown.append(str(message)))
    with worker.warnings_as_events():
        warnings.warn_explicit("a library's own notice", UserWarning, "/elsewhere/lib.py", 1)
    assert _events(capsys.readouterr().out) == [] and shown == ["a library's own notice"]
