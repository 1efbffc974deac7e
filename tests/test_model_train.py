"""A two-step generator training run on synthetic takes (tiny config): losses logged, validation, bundle
saved and loadable, resume continues, same seed -> same weights."""
import json

import numpy as np
import pytest

from conftest import requires_torch
from model_helpers import one_thread, fake_feature_fn_path, synthetic_takes, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    data.mkdir()
    synthetic_takes(data, n_takes=2, frames=450)
    bundle = tiny_bundle(root / "bundle.safetensors")
    # A tokenizer file = the bundle's tokenizers (the tokenizer loader reads its own kind of file).
    from echomask.core.model.checkpoint import load_model

    m = load_model(bundle)
    m.tokenizers.save(root / "tok.safetensors")
    return root, data


def _run(root, data, out, steps, seed=0, resume=False, stop_after=0, random_masking=False):
    from echomask.core.training.train import TrainConfig, train_generator

    tcfg = TrainConfig(steps=steps, batch_size=3, val_every=2, ckpt_every=2, log_every=1, seed=seed, warmup=1,
                       stop_after=stop_after, random_masking=random_masking)
    return train_generator(str(data), "tiny", str(root / "tok.safetensors"), str(out), tcfg, device="cpu",
                           resume=resume, feature_fn=fake_feature_fn_path, log=lambda *a: None,
                           progress_bar=False)


def test_two_steps_resume_and_repeatable(setup):
    import torch

    from echomask.core.model.checkpoint import load_model

    root, data = setup
    out = root / "run"
    res = _run(root, data, out, steps=3, stop_after=2)   # interrupted after 2 of 3 steps
    assert res["steps"] == 2
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    train = [x for x in lines if x["split"] == "train"]
    val = [x for x in lines if x["split"] == "val"]
    assert [x["step"] for x in train] == [1, 2]
    for key in ("loss", "mam_nce", "full_ce", "sqa_noinj_ce", "sqa_inj_ce", "full_mse", "hardness"):
        assert np.isfinite(train[-1][key]), key
    assert val and val[-1]["val_windows"] > 0
    for key in ("val_token_ce", "val_acc_level0", "val_acc_all", "val_rot_err_deg"):
        assert np.isfinite(val[-1][key])
    model = load_model(out / "model.safetensors")
    assert model.meta["step"] == 2 and not model.meta["final"]
    # The speech standardisation learned from the data is part of the weights.
    assert float(model.generator.mam.speech_low.std.mean()) != 1.0
    # So are the token bigram prior's tables (core.generation.token_prior), off until asked for or recorded.
    assert model.token_prior is not None and model.token_prior.meta["takes"] == ["take0.npz", "take1.npz"]
    assert all(model.token_prior.counts[p].sum() > 0 for p in model.token_prior.counts)
    assert "token_prior" not in (model.meta.get("decoding") or {})

    # Resume from step 2 to 3, compare with an uninterrupted 3-step run of the same seed.
    _run(root, data, out, steps=3, resume=True)
    resumed = load_model(out / "model.safetensors")
    assert resumed.meta["step"] == 3 and resumed.meta["final"]
    straight = root / "straight"
    _run(root, data, straight, steps=3)
    fresh = load_model(straight / "model.safetensors")
    a, b = resumed.generator.state_dict(), fresh.generator.state_dict()
    diffs = {k: float((a[k] - b[k]).abs().max()) for k in a if a[k].dtype.is_floating_point}
    assert max(diffs.values()) < 1e-5, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
    # A different seed trains differently.
    other = root / "other"
    _run(root, data, other, steps=3, seed=1)
    c = load_model(other / "model.safetensors").generator.state_dict()
    assert any(not torch.allclose(a[k], c[k], atol=1e-5) for k in a if a[k].dtype.is_floating_point)


def test_random_masking_ablation_trains_and_is_recorded(setup):
    """The paper's key ablation (random instead of SQA-chosen masks) is one flag away."""
    from echomask.core.model.checkpoint import load_model
    from echomask.core.model.sqa import mask_counts

    assert mask_counts(64, 0.375, 0.0) == (24, 0)  # 24 masked, none chosen by attention: all random
    root, data = setup
    res = _run(root, data, root / "ablation", steps=1, random_masking=True)
    assert res["steps"] == 1
    meta = load_model(root / "ablation" / "model.safetensors").meta
    assert meta["train_config"]["random_masking"] is True


def test_speech_sampling_follows_time_stretch():
    from echomask.core.training.train import sample_rows

    feats = np.arange(20, dtype=np.float32)[:, None].repeat(3, 1)
    rows = sample_rows(feats, np.arange(5) / 1.1 + 2)   # a window stretched by 1.1 starting at frame 2
    assert np.allclose(rows[:, 0], np.arange(5) / 1.1 + 2)
    near = sample_rows(feats, np.array([0.4, 0.6, 25.0]), nearest=True)
    assert near[:, 0].tolist() == [0, 1, 19]


def test_dropout_option_is_trained_with_and_recorded(setup):
    """`train --dropout X` builds the generator with that dropout, and its bundle records it."""
    from echomask.core.model.checkpoint import load_model
    from echomask.core.training.train import TrainConfig, train_generator

    root, data = setup
    tcfg = TrainConfig(steps=1, batch_size=3, val_every=1, ckpt_every=1, log_every=1, warmup=1)
    res = train_generator(str(data), "tiny", str(root / "tok.safetensors"), str(root / "drop"), tcfg, device="cpu",
                          feature_fn=fake_feature_fn_path, log=lambda *a: None, progress_bar=False, dropout=0.3)
    assert load_model(res["model"]).config.generator.dropout == 0.3


def test_body_speech_is_recorded_kept_on_resume_and_a_change_refused(setup):
    from echomask.core.errors import EchoMaskError
    from echomask.core.model.checkpoint import load_model
    from echomask.core.training.train import TrainConfig, train_generator

    root, data = setup
    out = root / "bands"

    def run(steps, resume=False, body_speech=None, stop_after=0):
        tcfg = TrainConfig(steps=steps, batch_size=3, val_every=2, ckpt_every=1, log_every=1, warmup=1,
                           stop_after=stop_after)
        return train_generator(str(data), "tiny", str(root / "tok.safetensors"), str(out), tcfg, device="cpu",
                               resume=resume, feature_fn=fake_feature_fn_path, log=lambda *a: None,
                               progress_bar=False, body_speech=body_speech)

    run(2, body_speech="bands", stop_after=1)
    assert load_model(out / "model.safetensors").config.generator.body_speech == "bands"
    with pytest.raises(EchoMaskError, match="body-speech bands"):
        run(2, resume=True, body_speech="full")
    run(2, resume=True)                     # left out: the run keeps what it was trained with
    resumed = load_model(out / "model.safetensors")
    assert resumed.meta["step"] == 2 and resumed.config.generator.body_speech == "bands"
    assert resumed.generator.mam.body_speech == "bands"


def test_impossible_body_speech_is_refused_before_anything_is_written(setup):
    from echomask.core.errors import EchoMaskError
    from echomask.core.training.train import TrainConfig, train_generator

    root, data = setup
    out = root / "never"
    with pytest.raises(EchoMaskError, match="body speech window"):
        train_generator(str(data), "tiny", str(root / "tok.safetensors"), str(out), TrainConfig(steps=1),
                        device="cpu", feature_fn=fake_feature_fn_path, log=lambda *a: None, progress_bar=False,
                        body_speech_window=-1)
    assert not out.exists()
