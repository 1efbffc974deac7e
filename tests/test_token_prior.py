"""The token bigram prior (core.generation.token_prior): tables of consecutive level-0 tokens from training takes,
stored in the weights bundle, sampled per window from the window's seed token and seeded by the take's seed,
strong enough to steer the decoder, off at 0, absent from pauses, and clear errors for weights without it."""
import shutil

import numpy as np
import pytest

from conftest import requires_torch
from model_helpers import fake_features, one_thread, synthetic_takes, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)
PARTS = ("face", "upper", "hands", "lower")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tiny_bundle(tmp_path_factory.mktemp("w") / "tiny.safetensors")
    return path


def _cycle_prior(n_codes=8, length=400):
    """A prior whose training tokens cycle 0 -> 1 -> ... -> n_codes - 1 -> 0 in every part."""
    from echomask.core.generation.token_prior import TokenPrior

    seq = np.arange(length) % n_codes
    return TokenPrior.from_sequences({p: [seq] for p in PARTS}, n_codes, {"takes": ["cycle.npz"]})


def test_counts_and_chains_follow_the_training_transitions():
    from echomask.core.generation.token_prior import TokenPrior, prior_rng

    prior = _cycle_prior()
    assert prior.counts["upper"][3, 4] == 50 and prior.counts["upper"][3].sum() == 50
    assert np.allclose(prior.transitions["hands"].sum(1), 1.0)
    start = {p: np.r_[5, np.full(199, -1)] for p in PARTS}
    chain = prior.sample(200, prior_rng(0), start)
    for p in PARTS:
        assert chain[p][0] == 5                                        # starts from the seed token
        follows = np.mean(chain[p][1:] == (chain[p][:-1] + 1) % 8)
        assert follows > 0.95                                          # the training transitions, nearly always
    again = prior.sample(200, prior_rng(0), start)
    other = prior.sample(200, prior_rng(1))
    assert all(np.array_equal(chain[p], again[p]) for p in PARTS)     # same seed, same chain
    assert any(not np.array_equal(chain[p], other[p]) for p in PARTS)
    with pytest.raises(Exception, match="too short"):
        TokenPrior.from_sequences({p: [np.array([1])] for p in PARTS}, 8)


def test_chains_pass_through_pinned_tokens():
    """An animator's kept tokens later in the window: the chain is drawn conditioned on them, so it reaches them
    (here: the cycle must get from 1 at position 0 to 6 at position 9) and goes on from them."""
    from echomask.core.generation.token_prior import prior_rng

    prior = _cycle_prior()
    pins = np.full(12, -1)
    pins[0], pins[9] = 1, 6
    leaves = []
    for seed in range(20):
        chain = prior.sample(12, prior_rng(seed), {p: pins for p in PARTS})
        for p in PARTS:
            assert chain[p][0] == 1 and chain[p][9] == 6
            leaves.append(int(np.sum(chain[p][1:10] != (chain[p][:9] + 1) % 8)))
    # Nine cycle steps from 1 land on 2: the way to 6 leaves the cycle once (anywhere on the way), exactly as the
    # smoothed bigram weighs it (twice in about 2 % of chains); an unconditioned chain would miss the pin.
    assert min(leaves) >= 1 and sum(x == 1 for x in leaves) >= 0.9 * len(leaves) and max(leaves) <= 3


def test_a_strong_prior_decides_the_level0_tokens(tiny):
    from echomask.core.generation.decoding import refine_window
    from echomask.core.generation.token_prior import prior_rng
    from echomask.core.model.checkpoint import load_model

    model = load_model(tiny)
    k = model.config.tokenizer.nb_code
    from echomask.core.generation.token_prior import TokenPrior

    prior = TokenPrior.from_sequences({p: [np.arange(600) % k] for p in PARTS}, k)
    t = model.config.window
    n_tok = t // model.tokenizers["upper"].downsample
    rng = np.random.default_rng(0)
    import torch

    with torch.inference_mode():
        cond = model.generator.mam.speech_branch(torch.from_numpy(rng.standard_normal((1, t, 84)).astype(np.float32)),
                                                 torch.from_numpy(rng.standard_normal((1, t, 43)).astype(np.float32)))
    known = np.zeros(t, bool)
    known[:model.config.seed_frames] = True
    args = (model.generator, model.tokenizers, np.zeros((t, 337), np.float32), known, cond)
    logits = prior.window_prior(n_tok, 1e3, prior_rng(0), {p: np.r_[3, np.full(n_tok - 1, -1)] for p in PARTS})
    steered = refine_window(*args, level0_prior=logits)
    plain = refine_window(*args)
    for p in PARTS:
        assert np.array_equal(steered[p][:, 0].numpy(), logits[p].argmax(-1).numpy())
    assert any(not np.array_equal(plain[p][:, 0].numpy(), steered[p][:, 0].numpy()) for p in PARTS)


def test_prior_lives_in_the_bundle_and_survives_other_rewrites(tiny, tmp_path):
    from echomask.core.model.checkpoint import load_model, write_decoding_defaults, write_token_prior

    path = tmp_path / "with_prior.safetensors"
    write_token_prior(tiny, path, _cycle_prior(n_codes=16))
    assert load_model(tiny).token_prior is None                       # the source is untouched
    write_decoding_defaults(path, token_prior=6.0)
    m = load_model(path)
    assert m.token_prior is not None and m.token_prior.meta["takes"] == ["cycle.npz"]
    assert m.token_prior.counts["lower"][15, 0] > 0 and m.meta["decoding"]["token_prior"] == 6.0
    write_token_prior(path, path, _cycle_prior(n_codes=16, length=100))   # replaced in place
    assert load_model(path).token_prior.counts["lower"].sum() == 99
    from echomask.core.errors import WeightsError
    from echomask.core.model.token_prior import TokenPrior

    bad = _cycle_prior(n_codes=16)
    bad.counts["hands"][0, 0] = float("nan")
    with pytest.raises(Exception, match="non-finite"):
        TokenPrior(bad.counts)
    broken = tmp_path / "broken.safetensors"
    write_token_prior(tiny, broken, _cycle_prior(n_codes=16))
    from echomask.core.model.checkpoint import _bundle_tensors, _save_bundle, read_header

    tensors = _bundle_tensors(str(broken))
    del tensors["token_prior.hands.bigram"]
    _save_bundle(tensors, str(broken), read_header(broken))
    with pytest.raises(WeightsError, match="lacks hands"):
        load_model(broken)                                             # damaged: said, never silently off


def test_generate_reads_the_recorded_strength_and_is_off_at_zero(tiny, tmp_path):
    from echomask.core.errors import EchoMaskError
    from echomask.core.generation.inference import generate
    from echomask.core.generation.options import GenerationOptions
    from echomask.core.generation.token_prior import TokenPrior
    from echomask.core.model.checkpoint import load_model, write_decoding_defaults, write_token_prior

    k = load_model(tiny).config.tokenizer.nb_code
    prior = TokenPrior.from_sequences({p: [np.random.default_rng(2).integers(0, k, 500)] for p in PARTS}, k)
    path = tmp_path / "w.safetensors"
    write_token_prior(tiny, path, prior)
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 5)).astype(np.float32)
    kw = dict(device="cpu", feature_fn=fake_features, pause_variation=1.0)
    plain = generate(audio, model=str(tiny), **kw)
    assert plain.meta["token_prior"] == 0.0
    assert np.array_equal(generate(audio, model=str(path), **kw).poses, plain.poses)   # no record: off
    steered = generate(audio, model=str(path), token_prior=16.0, **kw)
    assert steered.meta["token_prior"] == 16.0 and np.isfinite(steered.poses).all()
    assert not np.allclose(steered.poses, plain.poses)
    assert np.array_equal(generate(audio, model=str(path), token_prior=16.0, **kw).poses, steered.poses)
    assert not np.allclose(generate(audio, model=str(path), token_prior=16.0, seed=1, **kw).poses, steered.poses)
    recorded = tmp_path / "recorded.safetensors"
    shutil.copy(path, recorded)
    write_decoding_defaults(recorded, token_prior=16.0)
    assert np.array_equal(generate(audio, model=str(recorded), **kw).poses, steered.poses)   # the record
    assert np.array_equal(generate(audio, model=str(recorded), token_prior=0.0, **kw).poses, plain.poses)
    with pytest.raises(EchoMaskError, match="no token prior"):
        generate(audio, model=str(tiny), token_prior=8.0, **kw)
    with pytest.raises(EchoMaskError, match="Token prior strength"):
        GenerationOptions(token_prior=-1)


def _priors_seen(tiny, tmp_path, monkeypatch, speaking: bool) -> tuple[list, object]:
    """The level-0 priors the decoder receives, window by window, for 3 s whose built-in speech flag says someone
    speaks throughout (speaking) or nobody does; and the model (the tiny bundle with a cycle prior, no face head)."""
    from echomask.core.generation import loop
    from echomask.core.generation.inference import generate
    from echomask.core.generation.token_prior import TokenPrior
    from echomask.core.model.checkpoint import load_model, write_token_prior
    from echomask.core.speech.builtin import SPEECH_FLAG

    k = load_model(tiny).config.tokenizer.nb_code
    path = tmp_path / "w.safetensors"
    write_token_prior(tiny, path, TokenPrior.from_sequences({p: [np.arange(300) % k] for p in PARTS}, k))
    model = load_model(path)
    if model.config.generator.speech_backend != "builtin" or model.config.generator.speech_high_dim <= SPEECH_FLAG:
        pytest.skip("the tiny config has no built-in speech flag")
    seen = []
    real = loop.refine_window

    def spy(*a, level0_prior=None, **kw):
        seen.append({p: v.clone() for p, v in level0_prior.items()})
        return real(*a, level0_prior=level0_prior, **kw)

    def flagged_features(audio, fps=30.0):
        low, high = fake_features(audio, fps)
        high[:, SPEECH_FLAG] = 1.0 if speaking else 0.0
        return low, high

    monkeypatch.setattr(loop, "refine_window", spy)
    monkeypatch.setattr(loop, "default_feature_fn", lambda backend: flagged_features)
    audio = (0.1 * np.random.default_rng(4).standard_normal(16000 * 3)).astype(np.float32)
    generate(audio if speaking else np.zeros_like(audio), model=model, device="cpu", token_prior=8.0)
    assert seen
    return seen, model


def test_pauses_get_no_prior(tiny, tmp_path, monkeypatch):
    """With the default pause Variation (0) the prior is scaled away where nobody speaks, as a bank's is."""
    seen, _ = _priors_seen(tiny, tmp_path, monkeypatch, speaking=False)
    assert all(float(v.abs().sum()) == 0.0 for w in seen for v in w.values())


def test_a_face_shown_from_its_tokens_gets_no_prior(tiny, tmp_path, monkeypatch):
    """Without a speech face head the take's face is its tokens, which keep the model's own choice; the body's get
    the prior where someone speaks."""
    seen, model = _priors_seen(tiny, tmp_path, monkeypatch, speaking=True)
    assert model.face_head is None
    assert all(float(w["face"].abs().sum()) == 0.0 for w in seen)
    assert all(float(w[p].sum()) == 8.0 * w[p].shape[0] for w in seen for p in ("upper", "hands", "lower"))


def test_build_token_prior_command_on_a_folder(tiny, tmp_path, capsys):
    from echomask.core.jobs.cli import main
    from echomask.core.model.checkpoint import load_model

    (tmp_path / "data").mkdir()
    (tmp_path / "short").mkdir()
    data = synthetic_takes(tmp_path / "data", n_takes=2, frames=300)
    out = tmp_path / "w.safetensors"
    assert main(["build-token-prior", "--manifest", str(data), "--weights", str(tiny), "-o", str(out)]) == 0
    prior = load_model(out).token_prior
    assert prior.meta["takes"] == ["take0.npz", "take1.npz"]
    assert "token prior from 2 takes" in capsys.readouterr().out
    per_take = 300 // 4 - 1
    assert all(0 < prior.counts[p].sum() <= 2 * per_take for p in PARTS)
    synthetic_takes(tmp_path / "short", n_takes=1, frames=40)             # shorter than a window
    out2 = tmp_path / "w2.safetensors"
    assert main(["build-token-prior", "--manifest", str(tmp_path / "short"), "--weights", str(tiny),
                 "-o", str(out2)]) == 2                                # a clear error, nothing written
    assert not out2.exists()


def test_kept_frames_pin_the_chain_and_stay_exact(tiny, tmp_path, monkeypatch):
    """Re-keying with the prior: the animator's frames come back unchanged, and at every token whose frames are all
    kept the prior's chain takes that token's own code (it leads into the keys)."""
    from echomask.core.generation import loop
    from echomask.core.generation.inference import generate
    from echomask.core.generation.token_prior import TokenPrior
    from echomask.core.model.checkpoint import load_model, write_token_prior
    from echomask.core.motion.take import Take

    k = load_model(tiny).config.tokenizer.nb_code
    path = tmp_path / "w.safetensors"
    write_token_prior(tiny, path, TokenPrior.from_sequences({p: [np.random.default_rng(5).integers(0, k, 600)]
                                                            for p in PARTS}, k))
    seen = []
    real = loop.refine_window

    def spy(generator, tokenizers, motion, known, *a, level0_prior=None, known_codes=None, **kw):
        seen.append((np.asarray(known).copy(), {p: v.clone() for p, v in known_codes.items()},
                     {p: v.clone() for p, v in level0_prior.items()}))
        return real(generator, tokenizers, motion, known, *a, level0_prior=level0_prior, known_codes=known_codes, **kw)

    monkeypatch.setattr(loop, "refine_window", spy)
    n = 150
    rng = np.random.default_rng(0)
    kept = Take(poses=(0.2 * rng.standard_normal((n, 165))).astype(np.float32),
                trans=np.tile(np.float32([0, 1.3, 0]), (n, 1)), expressions=np.zeros((n, 100), np.float32))
    mask = np.zeros(n, bool)
    mask[70:100] = True
    audio = (0.1 * rng.standard_normal(16000 * 5)).astype(np.float32)
    take = generate(audio, model=str(path), device="cpu", feature_fn=fake_features, token_prior=8.0,
                    pause_variation=1.0, known_take=kept, known_mask=mask)
    assert np.allclose(take.poses[72:98, 3:66], kept.poses[72:98, 3:66], atol=1e-4)
    pinned_later = 0
    for known, codes, prior in seen:
        full = known.reshape(-1, 4).all(1)
        for p in ("upper", "hands", "lower"):
            assert np.array_equal(prior[p].argmax(-1).numpy()[full], codes[p][full, 0].numpy())
        pinned_later += int(full[1:].sum())
    assert pinned_later > 0                                              # keys inside a window were pinned
