"""Retrieval-augmented decoding (core.generation.retrieval): a bank of training windows keyed by their speech
steers the level-0 tokens towards the nearest window's, belongs to one set of weights, and leaves pauses calm."""
import numpy as np
import pytest

from conftest import requires_torch
from model_helpers import fake_features, one_thread, synthetic_takes, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from echomask.core.model.checkpoint import load_model

    path = tiny_bundle(tmp_path_factory.mktemp("w") / "tiny.safetensors")
    return path, load_model(path)


def _windows(model, n=3, seed=0):
    rng = np.random.default_rng(seed)
    t = model.config.window
    n_tok = t // model.tokenizers["upper"].downsample
    low = rng.standard_normal((n, t, 84)).astype(np.float32)
    high = rng.standard_normal((n, t, 43)).astype(np.float32)
    tokens = {p: rng.integers(0, model.config.tokenizer.nb_code, (n, n_tok)) for p in ("face", "upper", "hands", "lower")}
    return low, high, tokens


def _cond(model, low, high, i):
    import torch

    with torch.inference_mode():
        return model.generator.mam.speech_branch(torch.from_numpy(low[i:i + 1]), torch.from_numpy(high[i:i + 1]))


def test_a_strong_prior_takes_the_nearest_windows_tokens(tiny):
    from echomask.core.generation.decoding import refine_window
    from echomask.core.generation.retrieval import RetrievalBank
    from echomask.core.motion.skeleton import PARTS

    _, model = tiny
    low, high, tokens = _windows(model)
    bank = RetrievalBank.from_windows(model, low, high, tokens)
    for i in range(3):
        assert bank.nearest(_cond(model, low, high, i)) == i      # each window's own speech finds it
    cond = _cond(model, low, high, 1)
    t = model.config.window
    known = np.zeros(t, bool)
    known[:model.config.seed_frames] = True
    motion = np.zeros((t, 337), np.float32)
    args = (model.generator, model.tokenizers, motion, known, cond)
    plain = refine_window(*args)
    steered = refine_window(*args, level0_prior=bank.token_prior(cond, 1e3, model.config.tokenizer.nb_code))
    for p in PARTS:
        assert np.array_equal(steered[p][:, 0].numpy(), tokens[p][1])
    assert any(not np.array_equal(plain[p][:, 0].numpy(), tokens[p][1]) for p in PARTS)   # the prior did it


def test_bank_belongs_to_its_weights_and_bad_files_say_so(tiny, tmp_path):
    from echomask.core.errors import EchoMaskError
    from echomask.core.generation.retrieval import RetrievalBank, load_bank
    from echomask.core.model.checkpoint import load_model

    path, model = tiny
    low, high, tokens = _windows(model)
    bank = RetrievalBank.from_windows(model, low, high, tokens, {"takes": ["a.npz"]})
    f = tmp_path / "bank.safetensors"
    bank.save(f)
    again = load_bank(f, model.generator)
    assert len(again) == 3 and again.meta == {"takes": ["a.npz"]}
    assert np.allclose(again.keys.numpy(), bank.keys.numpy(), atol=1e-3)
    other = load_model(tiny_bundle(tmp_path / "other.safetensors", seed=1))
    with pytest.raises(EchoMaskError, match="built for other weights"):
        load_bank(f, other.generator)
    with pytest.raises(EchoMaskError, match="not a retrieval bank"):
        load_bank(path)                                              # a model file, not a bank
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EchoMaskError, match="rebuild it"):
        load_bank(tmp_path / "broken.safetensors")
    with pytest.raises(EchoMaskError, match="not found"):
        load_bank(tmp_path / "missing.safetensors")


def test_generate_with_a_bank_changes_the_take_and_checks_its_options(tiny, tmp_path):
    from echomask.core.errors import EchoMaskError
    from echomask.core.generation.inference import generate
    from echomask.core.generation.options import GenerationOptions
    from echomask.core.generation.retrieval import RetrievalBank

    path, model = tiny
    low, high, tokens = _windows(model, n=4, seed=3)
    f = tmp_path / "bank.safetensors"
    RetrievalBank.from_windows(model, low, high, tokens).save(f)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32)
    kw = dict(model=path, device="cpu", feature_fn=fake_features, temperature=0.0)
    plain = generate(audio, **kw)
    steered = generate(audio, retrieval_bank=str(f), retrieval_weight=30.0, **kw)
    off = generate(audio, retrieval_bank=str(f), retrieval_weight=0.0, **kw)
    assert steered.num_frames == plain.num_frames and np.isfinite(steered.poses).all()
    assert not np.allclose(steered.poses, plain.poses)
    assert np.allclose(off.poses, plain.poses)                       # weight 0 = the model alone
    with pytest.raises(EchoMaskError, match="Retrieval weight"):
        GenerationOptions(retrieval_weight=-1)
    with pytest.raises(EchoMaskError, match="Retrieval bank not found"):
        generate(audio, retrieval_bank=str(tmp_path / "nope.safetensors"), **kw)


def test_build_retrieval_bank_command_on_a_folder(tiny, tmp_path, capsys):
    from echomask.core.generation.retrieval import load_bank
    from echomask.core.jobs.cli import main

    path, model = tiny
    (tmp_path / "data").mkdir()
    (tmp_path / "empty").mkdir()
    data = synthetic_takes(tmp_path / "data", n_takes=2, frames=300)
    out = tmp_path / "bank.safetensors"
    assert main(["build-retrieval-bank", "--manifest", str(data), "--weights", str(path), "-o", str(out)]) == 0
    bank = load_bank(out, model.generator)
    assert len(bank) > 0 and bank.meta["takes"] == ["take0.npz", "take1.npz"]
    assert "windows from 2 takes" in capsys.readouterr().out
    assert main(["build-retrieval-bank", "--manifest", str(tmp_path / "empty"), "--weights", str(path),
                 "-o", str(tmp_path / "b2.safetensors")]) == 2          # a clear error, nothing written
    assert not (tmp_path / "b2.safetensors").exists()


def test_a_bank_keeps_the_levels_the_weights_record(tiny, tmp_path):
    """With a bank the take keeps the RVQ levels the weights record as measured best (the bundled weights: every
    level, better with a bank too), else the coarse level; an explicit --levels wins."""
    import shutil

    from echomask.core.generation.inference import generate
    from echomask.core.generation.retrieval import RetrievalBank
    from echomask.core.model.checkpoint import write_decoding_defaults

    path, model = tiny
    low, high, tokens = _windows(model, n=4, seed=5)
    bank = tmp_path / "bank.safetensors"
    RetrievalBank.from_windows(model, low, high, tokens).save(bank)
    audio = (0.1 * np.random.default_rng(1).standard_normal(16000 * 3)).astype(np.float32)
    kw = dict(device="cpu", feature_fn=fake_features, retrieval_bank=str(bank))
    assert generate(audio, model=path, **kw).meta["levels"] == 1          # no record: the coarse level
    recorded = tmp_path / "recorded.safetensors"
    shutil.copy(path, recorded)
    write_decoding_defaults(recorded, levels=0)
    assert generate(audio, model=str(recorded), **kw).meta["levels"] == 0
    assert generate(audio, model=str(recorded), levels=1, **kw).meta["levels"] == 1
