"""Does the generator learn from its inputs? (A falling loss alone proves nothing.)

* The project's own training step overfits a handful of windows (losses, targets and gradients work).
* The bundled model, on held-out BEAT2 windows, reads its inputs: showing it more of the motion lowers the
  cross-entropy of the hidden tokens, it beats the token-frequency baseline, and another window's speech
  makes its face prediction worse (core.training.diagnostics; the numbers are in weights/MODEL_CARD.md).
"""
import math

import numpy as np
import pytest

from conftest import ROOT, requires_torch, shared_path
from model_helpers import data_fitted_tiny_bundle, fake_feature_fn_path, one_thread, synthetic_takes

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)
BODY = ("upper", "hands", "lower")


def tiny_model_and_windows(tmp_path):
    """(bundle, training data of two synthetic takes, a fresh tiny generator with the data's input
    statistics, 8 window indices): what the training-step tests start from."""
    import torch

    from echomask.core.training import train as T
    from echomask.core.model.checkpoint import load_model
    from echomask.core.training.data import folder_manifest
    from echomask.core.model.generator import EchoMaskGenerator

    torch.manual_seed(0)
    data = tmp_path / "data"
    data.mkdir()
    synthetic_takes(data, n_takes=2, frames=450)
    m = load_model(data_fitted_tiny_bundle(tmp_path / "b.safetensors", data))
    train = T.GeneratorData(folder_manifest(str(data)), m.tokenizers, m.config, fake_feature_fn_path, "train",
                            log=lambda *a: None)
    g = EchoMaskGenerator(m.config)
    g.motion_input.set_stats(*train.motion_stats(), floor=0.05)
    low_mean, low_std, high_mean, high_std = train.speech_stats()
    g.mam.speech_low.set_stats(low_mean, low_std)
    g.mam.speech_high.set_stats(high_mean, high_std)
    return m, train, g, np.arange(0, len(train), len(train) // 8)[:8]


def test_training_step_overfits_eight_windows(tmp_path):
    import torch

    from echomask.core.training import train as T
    from echomask.core.training.diagnostics import run_probes
    from echomask.core.model.ema import EMATeacher

    m, train, g, windows = tiny_model_and_windows(tmp_path)
    teacher = EMATeacher(g, 0.9)
    tcfg = T.TrainConfig(lr=3e-3)
    opt = torch.optim.Adam(g.parameters(), lr=tcfg.lr, betas=tcfg.betas)
    before = run_probes(g, train, "cpu", indices=windows, tokenizers=m.tokenizers)["ce0"]
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        loss, _ = T.training_step(g, teacher.model, m.tokenizers, train.batch(windows, "cpu"), tcfg, 1.0, gen)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(g.parameters(), tcfg.grad_clip)
        opt.step()
        teacher.update(g)
    after = run_probes(g, train, "cpu", indices=windows, tokenizers=m.tokenizers)["ce0"]
    chance = math.log(m.config.tokenizer.nb_code)
    for p in BODY:
        assert before[p]["vis4"] > 0.9 * chance
        assert after[p]["vis4"] < 0.7 * chance, (p, after[p])


def test_speech_contrast_makes_the_body_depend_on_the_speech(tmp_path):
    """--speech-contrast: the hinge opens a gap between the body's CE under another window's speech and
    under its own (a tiny model whose speech branch starts nearly constant: the gap starts at ~0)."""
    import torch

    from echomask.core.training import train as T
    from echomask.core.model.ema import EMATeacher

    m, train, g, windows = tiny_model_and_windows(tmp_path)
    batch = train.batch(windows, "cpu")
    teacher = EMATeacher(g, 0.9)
    gen = torch.Generator().manual_seed(0)
    _, logs = T.training_step(g, teacher.model, m.tokenizers, dict(batch), T.TrainConfig(), 1.0, gen)
    assert "speech_gap" not in logs                 # off by default: no 4th pass
    tcfg = T.TrainConfig(speech_contrast=20.0, contrast_margin=0.5)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    base, _ = T.training_step(g, teacher.model, m.tokenizers, dict(batch), T.TrainConfig(), 1.0, gen)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    with_term, logs = T.training_step(g, teacher.model, m.tokenizers, dict(batch), tcfg, 1.0, gen)
    hinge = max(0.0, 0.5 - logs["speech_gap"])      # all windows teach and weigh alike here
    assert float((with_term - base).detach()) == pytest.approx(20.0 * hinge, rel=1e-3)
    # The term's own gradient makes the body read the speech (alone: in a full step at this tiny size the
    # token losses' gradients are far larger while the speech branch is still nearly constant).
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    fmask = T.full_mask(8, 64, g.seed_frames, "cpu")
    gaps = []
    for _ in range(25):
        cond = g.mam.speech_branch(batch["low"], batch["high"])
        own = g(batch["motion"], fmask, None, None, cond=cond)["logits"]
        term, gap = T.speech_contrast_term(g, batch["motion"], fmask, cond, None, batch["codes"], batch, own, 0.5)
        opt.zero_grad()
        term.backward()
        opt.step()
        gaps.append(float(gap))
    assert abs(gaps[0]) < 0.05 and max(gaps[-5:]) > 0.3, gaps


def test_speech_dropout_hides_the_speech_from_the_passes_only(tmp_path):
    """--speech-dropout 1: the three passes' token losses no longer depend on the speech (another window's
    speech gives the same CE), while the MAM losses still see it; 0 (the default) keeps the speech."""
    import torch

    from echomask.core.training import train as T
    from echomask.core.model.ema import EMATeacher

    m, train, g, windows = tiny_model_and_windows(tmp_path)
    batch = train.batch(windows, "cpu")
    swapped = dict(batch, low=batch["low"].roll(1, 0), high=batch["high"].roll(1, 0))
    teacher = EMATeacher(g, 0.9)

    def logs_of(b, tcfg):
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        return T.training_step(g, teacher.model, m.tokenizers, dict(b), tcfg, 1.0, gen)[1]

    drop = T.TrainConfig(speech_dropout=1.0)
    own, other = logs_of(batch, drop), logs_of(swapped, drop)
    assert float(own["full_ce"]) == pytest.approx(float(other["full_ce"]), abs=1e-5)
    assert float(own["mam_mse"]) != pytest.approx(float(other["mam_mse"]), abs=1e-6)
    keep = T.TrainConfig()
    assert float(logs_of(batch, keep)["full_ce"]) != pytest.approx(float(logs_of(swapped, keep)["full_ce"]), abs=1e-5)


@pytest.fixture(scope="module")
def bundled_probes():
    """Probes of the bundled weights on the held-out tails of the BEAT2 ground truth (never trained on)."""
    shared_path("beat2_samples", "smplxflame_30")
    import torch

    from echomask.core.training import train as T
    from echomask.core.model.checkpoint import load_model
    from echomask.core.training.data import shared_training_manifest
    from echomask.core.training.diagnostics import run_probes, token_baselines

    torch.manual_seed(0)
    m = load_model(ROOT / "weights" / "echomask_small.safetensors")
    features = T.builtin_feature_fn(m.config.generator.speech_backend, T.default_cache_dir())
    entries = shared_training_manifest()
    train = T.GeneratorData(entries, m.tokenizers, m.config, features, "train", log=lambda *a: None)
    val = T.GeneratorData(entries, m.tokenizers, m.config, features, "val", takes=train.ds.takes, log=lambda *a: None)
    probes = run_probes(m.generator, val, "cpu", max_windows=256, tokenizers=m.tokenizers)
    return probes["ce0"], token_baselines(train.codes, val.codes, m.config.tokenizer.nb_code)


def test_bundled_model_reads_the_motion_context(bundled_probes):
    ce, base = bundled_probes
    for p in BODY:
        assert ce[p]["vis60"] < ce[p]["vis4"] - 0.5, (p, ce[p])   # more visible frames, better guesses
        assert ce[p]["vis24"] < base[p]["unigram"] - 1.0, (p, ce[p], base[p])


def test_bundled_model_reads_the_speech(bundled_probes):
    ce, _ = bundled_probes
    assert ce["face"]["other_speech"] > ce["face"]["vis4"] + 0.05, ce["face"]   # another window's speech hurts
