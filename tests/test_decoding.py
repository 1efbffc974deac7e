"""Choosing a window's tokens (core.generation.decoding) and the post-processing of generated takes, on a
tiny random-weight bundle: every pass sees what the passes before it chose, given tokens are kept, the
options validate, smoothing removes jerk but keeps the gesture and the jaw."""
import numpy as np
import pytest

from conftest import requires_torch
from model_helpers import fake_features, one_thread, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    import torch

    from echomask.core.generation.inference import resolve_model, neutral_seed_codes
    from echomask.core.motion.motion_repr import parts_to_motion337, take_to_parts
    from echomask.core.generation.post import neutral_standing

    model = resolve_model(str(tiny_bundle(tmp_path_factory.mktemp("w") / "tiny.safetensors")), "cpu")
    g, tok = model.generator, model.tokenizers
    low, high = fake_features(np.random.default_rng(0).standard_normal(64 * 16000 // 30).astype(np.float32) * 0.1)
    with torch.inference_mode():
        cond = g.mam.speech_branch(torch.from_numpy(low[None]), torch.from_numpy(high[None]))
    motion = np.zeros((64, 337), np.float32)
    motion[:4] = parts_to_motion337(take_to_parts(neutral_standing(4)))
    known = np.zeros(64, bool)
    known[:4] = True
    seed = neutral_seed_codes(tok)
    given = {p: torch.full((16, g.levels), -1, dtype=torch.long) for p in seed}
    for p in seed:
        given[p][:1] = seed[p][:, :g.levels]
    return model, motion, known, cond, given


def _spy(model, monkeypatch):
    calls = []
    real = model.generator.forward

    def spy(motion, mask, low, high, *a, **k):
        calls.append({"mask": mask.clone(), "known": k.get("known")})
        return real(motion, mask, low, high, *a, **k)

    monkeypatch.setattr(model.generator, "forward", spy)
    return calls


@pytest.mark.parametrize("strategy", ["refine", "commit"])
def test_each_pass_sees_the_earlier_choices_and_given_tokens_stay(window, monkeypatch, strategy):
    from echomask.core.generation.decoding import decode_window, refine_window

    model, motion, known, cond, given = window
    calls = _spy(model, monkeypatch)
    fn = refine_window if strategy == "refine" else decode_window
    codes = fn(model.generator, model.tokenizers, motion, known, cond, steps=4, known_codes=given)
    assert len(calls) == 4
    hidden = [int(c["mask"][0].reshape(16, 4).all(1).sum()) for c in calls]
    assert hidden[0] == 15                       # the first pass sees the seed only
    assert all(a > b for a, b in zip(hidden, hidden[1:])) and hidden[-1] >= 1   # then more and more
    assert calls[0]["known"]["upper"][0, 0].abs().sum() > 0    # the seed's token is given as a known token
    for p, c in codes.items():
        assert c.shape == (16, model.generator.levels) and (c[:, 0] >= 0).all()
        assert (c[0] == given[p][0]).all()       # the given seed token is kept


def test_one_pass_is_the_papers_single_pass(window, monkeypatch):
    from echomask.core.generation.decoding import refine_window

    model, motion, known, cond, given = window
    calls = _spy(model, monkeypatch)
    refine_window(model.generator, model.tokenizers, motion, known, cond, steps=1, known_codes=given)
    assert len(calls) == 1 and not calls[0]["mask"][0, :4].any() and calls[0]["mask"][0, 4:].all()


def test_nucleus_sampling_keeps_to_the_likely_codes():
    import torch

    from echomask.core.generation.decoding import choose_tokens

    logits = torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05]))[None, None, None].repeat(1, 200, 1, 1)
    gen = torch.Generator().manual_seed(0)
    codes = choose_tokens(logits, 1.0, gen, top_p=0.8)
    assert set(codes.flatten().tolist()) == {0, 1}
    assert set(choose_tokens(logits, 1.0, gen).flatten().tolist()) == {0, 1, 2, 3}
    assert (choose_tokens(logits, 0.0).flatten() == 0).all()


def test_options_validate_with_clear_messages():
    from echomask.core.errors import EchoMaskError
    from echomask.core.generation.options import GenerationOptions

    for bad, word in (({"temperature": -1}, "Variation"), ({"steps": 0}, "passes"), ({"top_p": 0}, "top_p"),
                      ({"strategy": "beam"}, "strategy"), ({"parts": ("tail",)}, "body parts"),
                      ({"smoothing": -1}, "Smoothing"), ({"intensity": 3}, "Intensity"),
                      ({"coherence": 1.0}, "Coherence")):
        with pytest.raises(EchoMaskError, match=word):
            GenerationOptions(**bad)
    opts = GenerationOptions.from_dict({"seed": 3, "audio": "x.wav", "lipsync": None})
    assert opts.seed == 3 and opts.lipsync == GenerationOptions().lipsync


def test_levels_and_smoothing_options(tmp_path):
    from echomask.core.generation.inference import generate

    bundle = str(tiny_bundle(tmp_path / "t.safetensors"))
    audio = (0.1 * np.random.default_rng(1).standard_normal(16000 * 4)).astype(np.float32)
    raw = generate(audio, model=bundle, feature_fn=fake_features, temperature=1.0, levels=0, smoothing=0)
    smooth = generate(audio, model=bundle, feature_fn=fake_features, temperature=1.0, levels=0, smoothing=1.5)
    jerk = lambda t: np.abs(np.diff(t.poses[:, 3:66], 3, axis=0)).mean()
    assert jerk(smooth) < 0.6 * jerk(raw)
    upper = [c for j in (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21) for c in range(3 * j, 3 * j + 3)]   # not the stance
    assert np.corrcoef(smooth.poses[:, upper].ravel(), raw.poses[:, upper].ravel())[0, 1] > 0.8   # same gesture (random weights: very jerky)
    np.testing.assert_allclose(smooth.poses[:, 66:69], raw.poses[:, 66:69], atol=1e-6)          # the jaw as it was
    coarse = generate(audio, model=bundle, feature_fn=fake_features, temperature=1.0, levels=1, smoothing=0)
    assert coarse.meta["levels"] == 1 and not np.allclose(coarse.poses, raw.poses)


def test_pauses_get_their_share_of_the_variation():
    from echomask.core.generation.loop import PAUSE_MARGIN_S, token_temperatures

    fps, unit = 30.0, 4
    flag = np.zeros(64)
    flag[:20] = 1.0                          # speech, then a pause of 44 frames
    t = token_temperatures(flag, unit, 1.0, 0.0, fps)
    assert t.shape == (16,)
    margin_tokens = int(np.ceil((20 + PAUSE_MARGIN_S * fps) / unit))
    assert np.all(t[:5] == 1.0)              # speaking: the full Variation
    assert np.all(t[margin_tokens:] == 0.0)  # well into the pause: arg-max
    assert np.all(token_temperatures(flag, unit, 0.8, 1.0, fps) == np.float32(0.8))   # share 1 = off
    half = token_temperatures(np.zeros(64), unit, 1.0, 0.5, fps)
    assert np.allclose(half, 0.5)


def test_per_token_temperature_takes_the_argmax_where_it_is_zero_and_samples_elsewhere():
    import torch

    from echomask.core.generation.decoding import choose_tokens

    torch.manual_seed(0)
    logits = torch.randn(1, 8, 1, 32)
    temperature = np.array([0, 0, 0, 0, 5, 5, 5, 5], np.float32)
    draws = torch.stack([choose_tokens(logits, temperature, torch.Generator().manual_seed(s)) for s in range(20)])
    argmax = logits.argmax(-1)
    assert torch.equal(draws[:, :, :4], argmax[None, :, :4].expand(20, 1, 4, 1))   # exact arg-max
    assert len(torch.unique(draws[:, 0, 4:, 0])) > 4                              # sampled: varied
    # the same draws as a scalar temperature where every position samples (pauses change nothing else)
    full = np.full(8, 0.7, np.float32)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(choose_tokens(logits, full, g1), choose_tokens(logits, 0.7, g2))


def test_smoothing_holds_the_stance_steadier_than_the_gesture():
    """Pelvis and legs get STANCE_SMOOTHING_FACTOR times the body's sigma: token jitter there shakes the whole
    body (the pelvis is the root) and slides planted feet, while the arms keep their gesture."""
    from echomask.core.generation.post import smooth_body
    from echomask.core.motion.skeleton import STANCE_JOINTS
    from echomask.core.motion.take import neutral_take
    from echomask.core.metrics.kinematics import take_positions
    from echomask.core.metrics.plausibility import foot_skating

    rng = np.random.default_rng(0)
    n = 300
    take = neutral_take(n)
    slow = np.sin(np.linspace(0, 6 * np.pi, n))[:, None]
    take.poses = (0.3 * slow + 0.05 * rng.standard_normal((n, 165))).astype(np.float32)   # gesture + token jitter
    raw = take.poses.copy()
    out = smooth_body(take, 1.0).poses.reshape(n, 55, 3)
    raw = raw.reshape(n, 55, 3)
    jitter = lambda x: np.abs(np.diff(x, 3, axis=0)).mean()
    stance, arms = list(STANCE_JOINTS), [16, 17, 18, 19]
    assert jitter(out[:, stance]) < 0.1 * jitter(raw[:, stance])
    assert jitter(out[:, stance]) < 0.5 * jitter(out[:, arms])
    assert np.corrcoef(out[:, arms].ravel(), raw[:, arms].ravel())[0, 1] > 0.8     # the gesture is kept
    np.testing.assert_allclose(out[:, 22], raw[:, 22], atol=1e-6)                  # the jaw as it was
    def skating(poses):
        placed = neutral_take(n)
        placed.poses, placed.trans[:, 1] = poses.reshape(n, -1).astype(np.float32), 1.3
        return foot_skating(take_positions(placed, True), 30.0)

    assert skating(out) < 0.5 * skating(raw)


def test_weights_carry_their_measured_levels_and_the_cli_records_them(tmp_path):
    """`python -m core set-decoding W --levels 0` records the levels measured best for W; generate uses them
    when --levels is not given (an explicit value wins), the coarse level otherwise; tensors stay the same."""
    from safetensors import safe_open

    from echomask.core.jobs.cli import main
    from echomask.core.errors import WeightsError
    from echomask.core.generation.inference import generate
    from echomask.core.model.checkpoint import decoding_defaults, load_model, write_decoding_defaults

    path = tiny_bundle(tmp_path / "tiny.safetensors")
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    assert decoding_defaults(load_model(path).meta) == {}
    assert generate(audio, model=str(path), feature_fn=fake_features).meta["levels"] == 1
    with safe_open(str(path), framework="pt") as f:
        before = {k: f.get_tensor(k) for k in f.keys()}
    assert main(["set-decoding", str(path), "--levels", "0", "--note", "test"]) == 0
    meta = load_model(path).meta
    assert decoding_defaults(meta) == {"levels": 0} and meta["decoding"]["note"] == "test"
    with safe_open(str(path), framework="pt") as f:
        assert all(np.array_equal(f.get_tensor(k).numpy(), v.numpy()) for k, v in before.items())
    take = generate(audio, model=str(path), feature_fn=fake_features)
    assert take.meta["levels"] == 0
    assert generate(audio, model=str(path), feature_fn=fake_features, levels=1).meta["levels"] == 1
    with pytest.raises(WeightsError, match="whole number"):
        write_decoding_defaults(path, levels=-1)
    with pytest.raises(WeightsError, match="Unknown decoding default"):
        write_decoding_defaults(path, temperature=3)
    assert decoding_defaults(load_model(path).meta) == {"levels": 0}    # a refused change writes nothing
    assert main(["set-decoding", str(path), "--levels", "unset"]) == 0
    assert decoding_defaults(load_model(path).meta) == {}


def test_speech_guidance_contrasts_the_window_with_and_without_speech(window):
    """window_logits: guidance 1 is the plain forward pass; otherwise log p_none + g (log p_speech - log p_none),
    where p_none is the same window with zero speech conditions (what --speech-dropout training shows)."""
    import torch

    from echomask.core.generation.decoding import refine_window, window_logits

    model, motion, known, cond, given = window
    g = model.generator
    hidden = ~known
    with torch.inference_mode():
        plain = g(torch.from_numpy(motion)[None], torch.from_numpy(hidden)[None], None, None, cond=cond)["logits"]
        none = g(torch.from_numpy(motion)[None], torch.from_numpy(hidden)[None], None, None,
                 cond={p: torch.zeros_like(c) for p, c in cond.items()})["logits"]
        one = window_logits(g, motion, hidden, cond, guidance=1.0)
        two = window_logits(g, motion, hidden, cond, guidance=2.0)
        zero = window_logits(g, motion, hidden, cond, guidance=0.0)
    for p in plain:
        assert torch.equal(one[p], plain[p])
        ls, ln = torch.log_softmax(plain[p], -1), torch.log_softmax(none[p], -1)
        assert torch.allclose(two[p], ln + 2.0 * (ls - ln), atol=1e-5)
        assert torch.allclose(zero[p], ln, atol=1e-5)
        assert not torch.allclose(two[p], ls, atol=1e-3)     # the speech moved the logits: guidance acts
    a = refine_window(g, model.tokenizers, motion, known, cond, known_codes=given, guidance=1.0)
    b = refine_window(g, model.tokenizers, motion, known, cond, known_codes=given, guidance=3.0)
    assert any(not torch.equal(a[p], b[p]) for p in a)


def test_weights_carry_their_measured_guidance(tmp_path):
    """set-decoding --guidance records it; generate uses it unless --guidance is given; bad values are refused."""
    from echomask.core.errors import EchoMaskError, WeightsError
    from echomask.core.generation.inference import generate
    from echomask.core.generation.options import GenerationOptions
    from echomask.core.jobs.cli import main
    from echomask.core.model.checkpoint import decoding_defaults, load_model, write_decoding_defaults

    path = tiny_bundle(tmp_path / "tiny.safetensors")
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    assert generate(audio, model=str(path), feature_fn=fake_features).meta["guidance"] == 1.0
    assert main(["set-decoding", str(path), "--guidance", "2.5"]) == 0
    assert decoding_defaults(load_model(path).meta) == {"guidance": 2.5}
    assert generate(audio, model=str(path), feature_fn=fake_features).meta["guidance"] == 2.5
    assert generate(audio, model=str(path), feature_fn=fake_features, guidance=1).meta["guidance"] == 1.0
    with pytest.raises(WeightsError, match="number from"):
        write_decoding_defaults(path, guidance=9.0)
    with pytest.raises(EchoMaskError, match="guidance"):
        GenerationOptions(guidance=-1)
    assert main(["set-decoding", str(path)]) == 2        # nothing to record: nothing written
    assert main(["set-decoding", str(path), "--guidance", "unset"]) == 0
    assert decoding_defaults(load_model(path).meta) == {}


def test_weights_carry_their_gesture_gain_and_it_scales_arms_and_hands_only(tmp_path):
    """set-decoding --gesture-gain records the arm-and-hand amplitude measured for the weights; generate applies
    it unless --gesture-gain is given: the arms and hands move further from their mean pose, the legs, the pelvis
    and the face stay as decoded; bad values are refused."""
    from echomask.core.errors import EchoMaskError, WeightsError
    from echomask.core.generation.inference import generate
    from echomask.core.generation.options import GenerationOptions
    from echomask.core.jobs.cli import main
    from echomask.core.model.checkpoint import decoding_defaults, load_model, write_decoding_defaults
    from echomask.core.motion.take_parts import PART_JOINT_INDICES

    path = tiny_bundle(tmp_path / "tiny.safetensors")
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    plain = generate(audio, model=str(path), feature_fn=fake_features, temperature=1.0, seed=3)
    assert plain.meta["gesture_gain"] == 1.0
    assert main(["set-decoding", str(path), "--gesture-gain", "1.5"]) == 0
    assert decoding_defaults(load_model(path).meta) == {"gesture_gain": 1.5}
    gained = generate(audio, model=str(path), feature_fn=fake_features, temperature=1.0, seed=3)
    assert gained.meta["gesture_gain"] == 1.5

    from echomask.core.motion import rotations as R
    from echomask.core.motion.intensity import mean_quaternion

    def spread(take, part):   # mean angle (rad) of the part's joints from their mean rotation
        q = R.axis_angle_to_quaternion(take.joint_rotations()[:, list(PART_JOINT_INDICES[part])].astype(np.float64))
        angles = []
        for j in range(q.shape[1]):
            dots = np.abs(q[:, j] @ mean_quaternion(q[:, j]))
            angles.append(2 * np.arccos(np.clip(dots, 0, 1)))
        return float(np.mean(angles))

    for part in ("upper", "hands"):   # slerp by 1.5 about the mean rotation: 1.5x the angle (up to wrapping)
        assert spread(gained, part) > 1.3 * spread(plain, part), part
    lower = list(PART_JOINT_INDICES["lower"])
    assert np.allclose(gained.joint_rotations()[:, lower], plain.joint_rotations()[:, lower], atol=1e-6)
    assert np.allclose(gained.expressions, plain.expressions, atol=1e-6)
    explicit = generate(audio, model=str(path), feature_fn=fake_features, temperature=1.0, seed=3, gesture_gain=1)
    assert explicit.meta["gesture_gain"] == 1.0 and np.allclose(explicit.poses, plain.poses, atol=1e-6)
    with pytest.raises(WeightsError, match="number from"):
        write_decoding_defaults(path, gesture_gain=5.0)
    with pytest.raises(EchoMaskError, match="Gesture gain"):
        GenerationOptions(gesture_gain=-1)
    assert main(["set-decoding", str(path), "--gesture-gain", "unset"]) == 0
    assert decoding_defaults(load_model(path).meta) == {}


def test_coherent_sampling_keeps_each_tokens_distribution_and_couples_neighbours():
    """`coherence` correlates neighbouring positions' sampling noise: every position is still drawn from the
    model's distribution (the Gumbel marginals are exact), but neighbours repeat each other's code more."""
    import torch

    from echomask.core.generation.decoding import choose_tokens

    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits = torch.log(p)[None, None, None].repeat(1, 32, 1, 1)            # (1, N 32, L 1, K 4), all alike
    gen = torch.Generator().manual_seed(0)

    def draws(coherence):
        return torch.cat([choose_tokens(logits, 1.0, gen, coherence=coherence)[0, :, 0] for _ in range(300)])

    def repeats(codes):
        c = codes.reshape(300, 32)
        return (c[:, 1:] == c[:, :-1]).float().mean().item()

    free, coupled = draws(0.0), draws(0.95)
    for codes in (free, coupled):
        freq = torch.bincount(codes, minlength=4).float() / len(codes)
        assert torch.allclose(freq, p, atol=0.04), freq                      # the model's own distribution
    assert repeats(free) < 0.4 and repeats(coupled) > 0.7                    # independent: sum p^2 = 0.30
    # nucleus and per-token temperature behave as with independent draws
    assert set(choose_tokens(logits, 1.0, gen, top_p=0.6, coherence=0.9).flatten().tolist()) <= {0, 1}
    t = np.array([0.0] * 16 + [1.0] * 16, np.float32)
    assert (choose_tokens(logits, t, gen, coherence=0.9)[0, :16] == 0).all()
