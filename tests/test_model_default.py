"""The shipped default weights load and generate from real speech features; the generate job writes its
files only when everything succeeded."""
import pathlib

import numpy as np
import pytest

from conftest import ROOT, requires_torch
from model_helpers import one_thread, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)
DEFAULT = ROOT / "weights" / "echomask_small.safetensors"


def test_default_weights_load_and_generate():
    if not DEFAULT.is_file():
        pytest.skip("weights/echomask_small.safetensors is not in this checkout")
    from echomask.core.model.checkpoint import load_model
    from echomask.core.generation.inference import generate

    model = load_model(DEFAULT)
    assert model.config.name == "small"
    assert DEFAULT.stat().st_size < 50 * 2 ** 20
    assert model.meta.get("step", 0) > 0 and "val" in model.meta
    sr = 16000
    t = np.arange(int(2.5 * sr)) / sr
    speech = (0.2 * np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    take = generate(speech)                   # default model, built-in speech features, CPU
    assert take.num_frames == 75 and take.meta["config"] == "small"
    assert np.isfinite(take.poses).all() and np.abs(take.poses).max() < np.pi + 1e-3
    assert 1.0 < take.trans[:, 1].mean() < 1.5          # standing on the floor
    assert np.abs(take.poses[1:] - take.poses[:-1]).max() < 1.5   # no explosive jumps between frames



def test_a_pause_in_the_speech_is_calmer_than_the_speech():
    """The default Variation applies where someone speaks; in a pause the model's calmest motion plays."""
    if not DEFAULT.is_file():
        pytest.skip("weights/echomask_small.safetensors is not in this checkout")
    from echomask.core.generation.inference import generate
    from echomask.core.metrics.kinematics import take_positions
    from echomask.core.speech.audio import load_speech

    speech = load_speech(str(ROOT / "examples" / "example_speech.wav"))[: 16000 * 8]
    audio = np.concatenate([speech, np.zeros(16000 * 4, np.float32), speech])   # 8 s, 4 s pause, 8 s
    take = generate(audio, seed=0)
    pos = take_positions(take, with_translation=False)
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=-1).mean(-1) * 30          # (frames-1,) m/s
    talking, pause = speed[30:230].mean(), speed[260:350].mean()               # away from the edges
    assert pause < 0.5 * talking, (pause, talking)
    assert pause > 0.0                                                          # calm, not frozen solid

def test_generate_job_writes_all_or_nothing(tmp_path, monkeypatch):
    import soundfile as sf

    from echomask.core.generation import inference
    from echomask.core.errors import EchoMaskError, WeightsError
    from echomask.core.jobs.generate_job import generate_files
    from model_helpers import fake_features

    bundle = tiny_bundle(tmp_path / "tiny.safetensors")
    wav = tmp_path / "speech.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32), 16000)
    real = inference.generate
    monkeypatch.setattr(inference, "generate", lambda *a, **k: real(*a, feature_fn=fake_features, **k))
    out = tmp_path / "out"
    res = generate_files(str(wav), str(out), weights=str(bundle), blend=False, device="cpu")
    assert (out / "take.npz").is_file() and res["take"].num_frames == 90
    assert sorted(p.name for p in out.iterdir()) == ["take.npz"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".echomask_")]   # temp folder removed
    bad = tmp_path / "bad_out"
    with pytest.raises(WeightsError):
        generate_files(str(wav), str(bad), weights=str(wav), blend=False, device="cpu")
    assert not bad.exists()

    def failing_blender(*a, **k):
        raise EchoMaskError("Blender crashed")

    monkeypatch.setattr("echomask.core.jobs.blender_bridge.run_blender_task", failing_blender)
    half = tmp_path / "half"
    with pytest.raises(EchoMaskError, match="crashed"):
        generate_files(str(wav), str(half), weights=str(bundle), blend=True, device="cpu")
    assert not half.exists()   # take.npz was written to the temp folder only
