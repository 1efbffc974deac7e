"""Inference on a tiny random-weight bundle: determinism, sampling seeds, windowing and stitching,
bad audio, devices, weights checks, root motion."""
import json

import numpy as np
import pytest

from conftest import requires_torch, shared_path
from model_helpers import one_thread, fake_features, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(tiny_bundle(tmp_path_factory.mktemp("w") / "tiny.safetensors"))


def _speech(seconds, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * np.arange(n) / 16000)
    return (0.1 * env * rng.standard_normal(n)).astype(np.float32)


def _gen(bundle, audio, **kw):
    from echomask.core.generation.inference import generate

    return generate(audio, model=bundle, device="cpu", feature_fn=fake_features, **kw)


def test_same_seed_same_take_and_argmax_ignores_seed(bundle):
    audio = _speech(5)
    a = _gen(bundle, audio, seed=1, temperature=0.0)
    b = _gen(bundle, audio, seed=2, temperature=0.0)
    assert a.num_frames == 150 and a.fps == 30.0
    assert np.array_equal(a.poses, b.poses) and np.array_equal(a.expressions, b.expressions)
    s1 = _gen(bundle, audio, seed=7, temperature=1.0)
    s2 = _gen(bundle, audio, seed=7, temperature=1.0)
    s3 = _gen(bundle, audio, seed=8, temperature=1.0)
    assert np.array_equal(s1.poses, s2.poses) and np.array_equal(s1.trans, s2.trans)
    assert np.abs(s1.poses - s3.poses).max() > 1e-3
    assert np.abs(s1.poses - a.poses).max() > 1e-3
    assert a.meta["seed"] == 1 and a.meta["generator"] == "echomask"


def test_windows_are_seeded_by_previous_window_and_stitch(bundle, monkeypatch):
    """Window i+1's 4 seed frames are window i's last 4 decoded frames; tokens are concatenated as
    16 + 15 + 15...; the chunked decode equals one decode of the whole token sequence."""
    import torch

    from echomask.core.generation import inference as inf
    from echomask.core.motion.motion_repr import parts_to_motion337
    from echomask.core.motion.skeleton import PARTS

    model = inf.resolve_model(bundle, "cpu")
    calls = []
    real_forward = model.generator.forward

    def spy(motion, mask, low, high, *a, **k):
        out = real_forward(motion, mask, low, high, *a, **k)
        calls.append({"motion": motion.clone(), "mask": mask.clone(),
                      "codes": {p: out["logits"][p].argmax(-1)[0] for p in PARTS}})
        return out

    monkeypatch.setattr(model.generator, "forward", spy)
    torch.set_grad_enabled(False)
    audio = _speech(7)           # 210 frames -> 4 windows
    # the paper's single pass (arg-max), every level the model predicts, no smoothing: the plain stitched decode
    take = inf.generate(audio, model=model, feature_fn=fake_features, steps=1, levels=0, smoothing=0, temperature=0)
    assert len(calls) == 4 and take.num_frames == 210
    for c in calls:
        assert not c["mask"][0, :4].any() and c["mask"][0, 4:].all()
    for prev, nxt in zip(calls, calls[1:]):
        dec = model.tokenizers.decode_parts({p: prev["codes"][p][None] for p in PARTS})
        expected = parts_to_motion337({p: dec[p][0, -4:].numpy() for p in PARTS})
        assert np.allclose(nxt["motion"][0, :4].numpy(), expected, atol=1e-5)
    # Stitching: window 0 keeps 16 tokens, later windows their last 15.
    # (window 0's first token is the neutral seed's own token; the seed tokens are given, not predicted)
    seed = inf.neutral_seed_codes(model.tokenizers)
    seq = {p: torch.cat([seed[p][:, :calls[0]["codes"][p].shape[-1]], calls[0]["codes"][p][1:]]
                        + [c["codes"][p][1:] for c in calls[1:]]) for p in PARTS}
    assert len(seq["upper"]) == 16 + 15 * 3
    whole = model.tokenizers.decode_parts({p: seq[p][None] for p in PARTS})
    chunked = np.concatenate([f for _, f in inf.decode_chunked(model.tokenizers["upper"],
                              lambda x: model.tokenizers.denormalize("upper", x), seq["upper"],
                              chunk_tokens=8, context=32)])
    assert np.allclose(chunked, whole["upper"][0].numpy(), atol=1e-5)
    # And the take's poses come from that single decode (no seam at window boundaries).
    from echomask.core.motion.motion_repr import parts_to_take

    # (the face shows its coarse RVQ level only: core.generation.loop.COARSE_LEVEL_PARTS)
    coarse = {p: seq[p].clone() for p in PARTS}
    for p in inf.COARSE_LEVEL_PARTS:
        coarse[p][:, 1:] = -1
    whole = model.tokenizers.decode_parts({p: coarse[p][None] for p in PARTS})
    ref = parts_to_take({p: whole[p][0].numpy()[:210] for p in PARTS})
    assert np.allclose(take.poses, ref.poses, atol=1e-4)
    torch.set_grad_enabled(True)


def test_long_audio_feature_stream_is_chunked(bundle):
    """Features are computed chunk by chunk (never the whole clip) and a chunked stream gives the same
    rows as one computation where the features are local."""
    from echomask.core.generation.inference import FeatureStream

    audio = _speech(20)
    n = 600
    lens = []

    def fn(seg, fps):
        lens.append(len(seg))
        return fake_features(seg, fps)

    stream = FeatureStream(audio, n, 30.0, fn, chunk_frames=120, margin=15)
    rows = [stream.rows(s, s + 64)[0] for s in range(0, n - 64 + 1, 60)]
    assert max(lens) <= int((120 + 30) * 16000 / 30) + 1
    assert len(stream._chunks) <= 2
    whole = fake_features(audio, 30.0)[0]
    for i, r in enumerate(rows):
        assert np.allclose(r, whole[i * 60:i * 60 + 64], atol=1e-4)


def test_silence_gives_calm_finite_idle(bundle):
    take = _gen(bundle, np.zeros(16000 * 4, np.float32))
    assert np.isfinite(take.poses).all() and np.isfinite(take.trans).all()
    assert np.abs(take.poses).max() < np.pi * 1.01
    assert np.abs(take.trans[:, [0, 2]]).max() < 1.0   # stays in place by default


def test_short_clip_is_padded_and_trimmed(bundle):
    take = _gen(bundle, _speech(0.3))
    assert take.num_frames == 9


@pytest.mark.parametrize("audio, words", [
    (np.zeros(0, np.float32), "empty"),
    (np.zeros(800, np.float32), "ms long"),
    (np.full(16000, np.nan, np.float32), "invalid"),
    (np.zeros((2, 16000), np.float32), "one channel"),
])
def test_bad_audio_errors(bundle, audio, words):
    from echomask.core.errors import AudioError

    with pytest.raises(AudioError, match=words):
        _gen(bundle, audio)


def test_corrupt_and_missing_files(bundle, tmp_path):
    from echomask.core.errors import AudioError

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(AudioError):
        _gen(bundle, str(bad))
    with pytest.raises(AudioError, match="not found"):
        _gen(bundle, str(tmp_path / "nothing.wav"))


def test_cancel_and_progress(bundle):
    from echomask.core.generation.inference import GenerationCancelled

    seen = []
    _gen(bundle, _speech(5), progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    with pytest.raises(GenerationCancelled):
        _gen(bundle, _speech(5), cancel=lambda: True)


def test_cuda_asked_but_absent():
    import torch

    from echomask.core.jobs.devices import resolve_device
    from echomask.core.errors import DeviceError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA"):
        resolve_device("cuda")
    assert str(resolve_device("auto")) in ("cpu", "mps")


def test_weights_checks(bundle, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from echomask.core.model.checkpoint import load_model
    from echomask.core.errors import WeightsError

    model = load_model(bundle)
    assert model.config.name == "tiny"
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file")
    with pytest.raises(WeightsError, match="readable"):
        load_model(junk)
    with pytest.raises(WeightsError, match="'small' was asked"):
        load_model(bundle, expected_config="small")
    with safe_open(bundle, framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    old = tmp_path / "old.safetensors"
    save_file(tensors, old, metadata={**meta, "format_version": "0"})
    with pytest.raises(WeightsError, match="format version"):
        load_model(old)
    cfg = json.loads(meta["config"])
    cfg["generator"]["hidden"] = 24
    other = tmp_path / "other.safetensors"
    save_file(tensors, other, metadata={**meta, "config": json.dumps(cfg)})
    with pytest.raises(WeightsError, match="does not fit"):
        load_model(other)
    cfg["generator"]["no_such_field"] = 1
    save_file(tensors, other, metadata={**meta, "config": json.dumps(cfg)})
    with pytest.raises(WeightsError, match="fields this version does not know"):
        load_model(other)
    tok_only = tmp_path / "tok.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.startswith("generator.")}, tok_only,
              metadata={**meta, "kind": "echomask-tokenizers"})
    with pytest.raises(WeightsError, match="only the motion tokenizers"):
        load_model(tok_only)


def test_root_motion_keeps_feet_planted_on_real_take():
    from echomask.core.motion.motion_repr import joint_positions, take_to_parts
    from echomask.core.motion.root_motion import root_translation
    from echomask.core.motion.take import load_take

    take = load_take(shared_path("beat2_samples", "smplxflame_30", "2_scott_0_1_1.npz")).slice(0, 900)
    lower = take_to_parts(take)["lower"]
    contacts = lower[:, 57:61] > 0.5
    for travel in (False, True):
        trans = root_translation(take.poses, lower[:, 54:57], lower[:, 57:61], travel=travel)
        feet = joint_positions(take.poses, trans)[:, [7, 8, 10, 11]]
        held = contacts[1:] & contacts[:-1]
        slide = np.linalg.norm((feet[1:] - feet[:-1])[..., [0, 2]], axis=-1)[held]
        # metres per frame; in place the slow drift removal costs a little slide on this walking take
        assert slide.mean() < (0.005 if not travel else 0.001)
        assert abs(trans[:, 1].mean() - take.trans[:, 1].mean()) < 0.03  # standing on the floor like the capture
        assert feet[..., 1].min(axis=1).mean() == pytest.approx(0.02, abs=0.01)
    still = root_translation(take.poses, lower[:, 54:57], lower[:, 57:61], travel=False)
    assert abs(still[:, 0].mean()) < 0.05 and abs(still[:, 2].mean()) < 0.05  # no drift in place


def test_intensity_scales_motion(bundle):
    audio = _speech(4)
    base = _gen(bundle, audio)
    calm = _gen(bundle, audio, intensity=0.3)
    spread = lambda t: np.std(t.poses[:, 3:66], axis=0).mean()
    assert spread(calm) < spread(base)


def test_known_frames_and_parts_are_kept(bundle, tmp_path):
    """In-betweening: frames marked known come back unchanged; parts not asked for are copied."""
    from echomask.core.motion.take import Take, save_take

    audio = _speech(4)
    n = 120
    rng = np.random.default_rng(0)
    known = Take(poses=(0.2 * rng.standard_normal((n, 165))).astype(np.float32),
                 trans=np.tile(np.float32([0, 1.3, 0]), (n, 1)), expressions=np.zeros((n, 100), np.float32))
    path = tmp_path / "known.npz"
    save_take(known, path)
    mask = np.zeros(n, bool)
    mask[30:50] = True
    take = _gen(bundle, audio, known_take=str(path), known_mask=mask.tolist())
    from echomask.core.motion import rotations as R

    def mats(p):
        return R.axis_angle_to_matrix(p.reshape(-1, 55, 3).astype(np.float64))

    body = [j for j in range(55) if j not in (23, 24)]
    assert np.allclose(mats(take.poses[30:50])[:, body], mats(known.poses[30:50])[:, body], atol=1e-4)
    assert not np.allclose(take.poses[60:], known.poses[60:], atol=1e-2)
    only_hands = _gen(bundle, audio, known_take=known, parts=["hands"])
    upper = [3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]
    assert np.allclose(mats(only_hands.poses)[:, upper], mats(known.poses)[:, upper], atol=1e-4)
    assert not np.allclose(only_hands.poses[:, 75:], known.poses[:, 75:], atol=1e-2)


def test_phone_accurate_mouth_is_combined_with_the_model_face():
    """generate() closes the lips on recognised bilabials; lipsync=0 leaves the model's face alone."""
    import numpy as np

    from echomask.core.errors import EchoMaskError
    from echomask.core.face.lipsync import apply_phone_mouth
    from echomask.core.generation.options import GenerationOptions
    from echomask.core.generation.post import apply_phone_mouth as _phone_accurate_mouth
    from echomask.core.motion.take import neutral_take

    take = neutral_take(90)
    phones = [(0.0, 0.5, "SIL"), (0.5, 0.9, "AA"), (0.9, 1.1, "B"), (1.1, 2.0, "AA"), (2.0, 3.0, "SIL")]
    off = _phone_accurate_mouth(neutral_take(90), phones, 0.0, None)
    np.testing.assert_array_equal(off.expressions, take.expressions)
    on = _phone_accurate_mouth(neutral_take(90), phones, 0.5, None)
    expected = apply_phone_mouth(neutral_take(90), phones, strength=0.5)
    np.testing.assert_allclose(on.expressions, expected.expressions)
    np.testing.assert_allclose(on.poses[:, 66:69], expected.poses[:, 66:69])
    assert np.abs(on.poses[:, 66:69]).max() > 0  # the jaw moves with the vowels
    known = np.zeros(90, bool)
    known[:30] = True  # re-keying: known frames keep their face exactly
    kept = _phone_accurate_mouth(neutral_take(90), phones, 0.5, known)
    np.testing.assert_array_equal(kept.poses[:30, 66:69], 0)
    with pytest.raises(EchoMaskError, match="Lip-sync strength"):
        GenerationOptions(lipsync=1.5)
