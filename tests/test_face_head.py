"""The speech face head (core.model.face_head, stage 3): stored in the bundle, used by the window loop, learns a
face that follows the speech, and the bundled one does on held-out speech."""
import numpy as np
import pytest

from conftest import ROOT, requires_torch, shared_path
from model_helpers import fake_feature_fn_path, fake_features, one_thread, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)
DEFAULT = ROOT / "weights" / "echomask_small.safetensors"


def _head_for(bundle_path, seed=0):
    import torch

    from echomask.core.model.checkpoint import load_model
    from echomask.core.model.face_head import FaceHeadConfig, SpeechFaceHead

    mdl = load_model(bundle_path)
    torch.manual_seed(seed)
    cfg = FaceHeadConfig(cond_dim=mdl.generator.mam.d, low_dim=mdl.generator.low_dim, high_dim=mdl.generator.high_dim,
                         width=16, dilations=(1, 2))
    return SpeechFaceHead(cfg)


def test_face_head_is_stored_in_the_bundle_and_loads_back(tmp_path):
    import torch

    from echomask.core.errors import WeightsError
    from echomask.core.model.checkpoint import load_model, write_face_head

    src = tiny_bundle(tmp_path / "tiny.safetensors")
    assert load_model(src).face_head is None            # bundles without a head keep the token face
    head = _head_for(src)
    out = tmp_path / "with_head.safetensors"
    write_face_head(src, out, head, {"config": head.cfg.to_dict(), "val_loss": 1.0})
    mdl = load_model(out)
    assert mdl.face_head is not None and mdl.face_head.cfg == head.cfg
    for k, v in head.state_dict().items():
        assert torch.equal(mdl.face_head.state_dict()[k], v)
    assert mdl.meta["face_head"]["val_loss"] == 1.0 and mdl.meta["note"] == "test fixture"   # info kept
    # A head without its configuration is refused with what to do, never guessed
    write_face_head(src, tmp_path / "broken.safetensors", head, {"val_loss": 1.0})
    with pytest.raises(WeightsError, match="train-face-head"):
        load_model(tmp_path / "broken.safetensors")


def test_the_window_loop_takes_the_face_from_the_head(tmp_path):
    import torch

    from echomask.core.errors import EchoMaskError
    from echomask.core.generation.inference import generate
    from echomask.core.model.checkpoint import load_model, write_face_head

    src = tiny_bundle(tmp_path / "tiny.safetensors")
    head = _head_for(src)
    with torch.no_grad():
        for prm in head.parameters():   # a visible face: the random head's output scaled up
            prm.mul_(3.0)
    out = tmp_path / "with_head.safetensors"
    write_face_head(src, out, head, {"config": head.cfg.to_dict()})
    mdl = load_model(out)
    rng = np.random.default_rng(0)
    speech = (0.1 * rng.standard_normal(16000 * 5)).astype(np.float32)
    kw = dict(model=mdl, feature_fn=fake_features, lipsync=0.0, seed=3)
    by_head = generate(speech, face_source="head", **kw)
    auto = generate(speech, **kw)
    by_tokens = generate(speech, face_source="tokens", **kw)
    assert by_head.meta["face"] == "head" and auto.meta["face"] == "head" and by_tokens.meta["face"] == "tokens"
    np.testing.assert_array_equal(auto.expressions, by_head.expressions)
    np.testing.assert_array_equal(by_head.poses[:, 3:66], by_tokens.poses[:, 3:66])   # same body, same seed
    assert np.abs(by_head.expressions - by_tokens.expressions).mean() > 1e-3
    assert np.isfinite(by_head.expressions).all()
    # Window joins cross-fade: no jump at the 60-frame hops larger than the face's own frame-to-frame steps
    steps = np.abs(np.diff(by_head.expressions, axis=0)).mean(1)
    assert steps[59:61].max() < 4 * np.percentile(steps, 95) + 1e-6
    with pytest.raises(EchoMaskError, match="no speech face head"):
        generate(speech, model=load_model(src), feature_fn=fake_features, face_source="head")


def _speech_driven_takes(folder, n_takes=3, frames=600, seed=0):
    """Takes whose jaw and expressions follow the loudness of their 'speech' (bursts of noise at random
    syllable-like times), so a head that reads the speech can predict them and one that does not cannot."""
    import soundfile as sf

    from echomask.core.motion.take import Take, save_take

    rng = np.random.default_rng(seed)
    sr = 16000
    for k in range(n_takes):
        n = frames * sr // 30
        env = np.zeros(frames)
        for start in rng.choice(frames - 8, frames // 12, replace=False):
            env[start:start + rng.integers(3, 8)] = 1.0
        env_audio = np.repeat(env, -(-n // frames))[:n]
        sf.write(folder / f"take{k}.wav", (0.2 * env_audio * rng.standard_normal(n) + 1e-4 * rng.standard_normal(n))
                 .astype(np.float32), sr)
        smooth = np.convolve(env, np.ones(3) / 3, mode="same")
        poses = np.zeros((frames, 165), np.float32)
        poses[:, 66] = 0.25 * smooth           # the jaw opens with the sound
        expr = np.zeros((frames, 100), np.float32)
        expr[:, 0] = 1.5 * smooth
        trans = np.zeros((frames, 3), np.float32)
        trans[:, 1] = 1.3
        save_take(Take(poses=poses, trans=trans, expressions=expr), folder / f"take{k}.npz")
    return folder


def test_face_head_learns_a_face_that_follows_the_speech(tmp_path):
    from echomask.core.training.data import TakeEntry
    from echomask.core.training.train_face_head import FaceHeadTrainConfig, train_face_head

    data = _speech_driven_takes(tmp_path)
    entries = [TakeEntry(npz=str(data / f"take{k}.npz"), wav=str(data / f"take{k}.wav"), holdout=0.25) for k in range(3)]
    src = tiny_bundle(tmp_path / "tiny.safetensors")
    cfg = FaceHeadTrainConfig(steps=150, batch_size=16, val_every=50, patience=0, speech_aug=0.0)
    res = train_face_head(str(src), str(tmp_path / "out"), cfg, entries, log=lambda *a: None,
                          feature_fn=fake_feature_fn_path)
    # Held-out windows: better than a still face, and the jaw opens when the (unseen) sound does
    assert res["val_loss"] < 0.2 * res["val_loss_still_face"]
    assert res["val_jaw_corr"] > 0.9   # an untrained head: 0.53 (the stand-in features are the loudness)
    from echomask.core.model.checkpoint import load_model

    assert load_model(res["path"]).face_head is not None


def test_bundled_face_head_follows_held_out_speech():
    """On the held-out tails of both BEAT2 takes (never trained on), the bundled model's own face (lip sync 0)
    opens its jaw with the capture's (docs/LIPSYNC.md: correlation 0.76 for the head, 0.00 for the tokens)."""
    data = shared_path("beat2_samples")
    if not DEFAULT.is_file():
        pytest.skip("weights/echomask_small.safetensors is not in this checkout")
    from echomask.core.face.fit import beat2_take
    from echomask.core.face.signals import JAW, face_vector
    from echomask.core.generation.inference import generate
    from echomask.core.model.checkpoint import load_model
    from echomask.core.speech.audio import load_speech

    mdl = load_model(DEFAULT)
    if mdl.face_head is None:
        pytest.fail("the bundled weights have no speech face head (python -m core train-face-head)")
    corr = {"head": [], "tokens": []}
    for name in ("2_scott_0_1_1", "2_scott_0_2_2"):
        gt = beat2_take(name, str(data.parent))
        n = len(gt.face)
        tail = int(round(0.85 * n))             # the held-out 15 % (core.training.data: holdout 0.15)
        gt_jaw = np.linalg.norm(gt.face[tail:, JAW], axis=1)
        speech = load_speech(str(data / "wave16k" / f"{name}.wav"))
        for src in corr:
            take = generate(speech, model=mdl, lipsync=0.0, face_source=src, seed=0)
            jaw = np.linalg.norm(face_vector(take)[tail:n, JAW], axis=1)
            corr[src].append(np.corrcoef(jaw, gt_jaw[:len(jaw)])[0, 1])
    assert min(corr["head"]) > 0.5, corr
    assert np.mean(corr["head"]) > np.mean(corr["tokens"]) + 0.3, corr

