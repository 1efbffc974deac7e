"""Generator, MAM, SQA and EMA on the tiny config: shapes, gradients, mask selection, layer parity of the
paper config with the official release's manifest."""
import ast

import numpy as np
import pytest

from conftest import requires_torch, shared_path
from model_helpers import one_thread

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)

B, T = 2, 64


def _tiny():
    import torch

    from echomask.core.model.config import get_config
    from echomask.core.model.generator import EchoMaskGenerator

    torch.manual_seed(0)
    cfg = get_config("tiny")
    return cfg, EchoMaskGenerator(cfg)


def _inputs(g, b=B):
    import torch

    return (torch.randn(b, T, 337), torch.randn(b, T, g.low_dim), torch.randn(b, T, g.high_dim))


def test_generator_shapes_and_gradients():
    import torch

    from echomask.core.motion.skeleton import PARTS

    cfg, g = _tiny()
    motion, low, high = _inputs(g)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, 4:] = True
    out = g(motion, mask, low, high, need_scores=True)
    # The model predicts its active levels (the finer ones decode as absent).
    n, lv, k, d = T // 4, cfg.generator.active_levels or cfg.tokenizer.num_quantizers, cfg.tokenizer.nb_code, cfg.tokenizer.code_dim
    assert g.levels == lv
    for p in PARTS:
        assert out["logits"][p].shape == (B, n, lv, k)
        assert out["features"][p].shape == (B, n, lv, d)
        assert out["cond"][p].shape == (B, T, d)
    assert out["score"].shape == (B, T)
    # Scores are attention averages: non-negative, and sum to the mean fusion weight (1 at init).
    assert torch.allclose(out["score"].sum(1), torch.ones(B), atol=1e-4)
    loss = sum(v.logsumexp(-1).mean() for v in out["logits"].values()) + out["features"]["face"].pow(2).mean()
    loss.backward()
    for name in ("mask_embeddings", "mam.speech_query_hands", "sqa.fusion_weights",
                 "predict_res_lower.cross_attn_1.layers.0.linear1.weight", "face_decoder.layers.0.linear1.weight",
                 "upper_classifier.mlp.0.weight", "mam.speech_low.proj.weight"):
        grad = dict(g.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_masked_frames_do_not_leak():
    """Whatever a masked frame held, the output is the same: it is replaced by the mask embedding."""
    import torch

    _, g = _tiny()
    g.eval()
    motion, low, high = _inputs(g, 1)
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[:, 4:] = True
    other = motion.clone()
    other[:, 4:] = torch.randn_like(other[:, 4:]) * 10
    a = g(motion, mask, low, high)["logits"]["upper"]
    b = g(other, mask, low, high)["logits"]["upper"]
    assert torch.equal(a, b)
    c = g(other, torch.zeros_like(mask), low, high)["logits"]["upper"]
    assert not torch.allclose(a, c)


def test_injection_switch_changes_body_only_through_sqa():
    import torch

    _, g = _tiny()
    g.eval()
    motion, low, high = _inputs(g, 1)
    mask = torch.ones(1, T, dtype=torch.bool)
    face_latents = []
    hook = g.face1d_2.register_forward_hook(lambda m, i, o: face_latents.append(o))
    on = g(motion, mask, low, high, inject=True)
    off = g(motion, mask, low, high, inject=False)
    hook.remove()
    assert on["score"] is None and off["score"] is None
    assert not torch.allclose(on["logits"]["upper"], off["logits"]["upper"])
    # The face branch's latent is computed before the SQA block: identical with and without injection.
    assert torch.equal(face_latents[0], face_latents[1])


def test_mam_losses_and_gradients_reach_shared_encoders():
    import torch

    from echomask.core.motion.skeleton import PARTS

    cfg, g = _tiny()
    _, low, high = _inputs(g)
    cond = g.mam.speech_branch(low, high)
    latents = {p: torch.randn(B, T // 4, cfg.tokenizer.code_dim) for p in PARTS}
    losses = g.mam.losses(cond, latents)
    assert set(losses) == {"mam_nce", "mam_mse"}
    assert all(torch.isfinite(v) and float(v) > 0 for v in losses.values())
    (losses["mam_nce"] + losses["mam_mse"]).backward()
    params = dict(g.named_parameters())
    assert params["mam.motion_encoder_face_1.layers.0.linear1.weight"].grad.abs().sum() > 0
    assert params["mam.predict_motion_upper.mlp.0.weight"].grad.abs().sum() > 0
    assert params["mam.speech_query_lower"].grad.abs().sum() > 0


def test_body_speech_bands_hides_fine_spectrum_and_phones_from_the_body_only():
    """body_speech="bands": the body's condition is blind to detail inside a mel band and to the phones,
    yet follows band energy; the face still reads every feature."""
    import dataclasses

    import torch

    from echomask.core.model.config import get_config
    from echomask.core.model.generator import EchoMaskGenerator
    from echomask.core.speech.builtin import MEL, PHONE_POSTERIORS

    cfg = get_config("tiny")
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, body_speech="bands"))
    torch.manual_seed(0)
    g = EchoMaskGenerator(cfg).eval()
    _, low, high = _inputs(g)
    # Same band means, different bins inside each band; different phones.
    detail = torch.randn(B, T, 8, 10)
    detail = detail - detail.mean(-1, keepdim=True)
    low2, high2 = low.clone(), high.clone()
    low2[..., MEL] = low[..., MEL] + detail.reshape(B, T, 80)
    high2[..., PHONE_POSTERIORS] = torch.randn_like(high[..., PHONE_POSTERIORS])
    louder = low.clone()
    louder[..., MEL] = low[..., MEL] + 1.0
    with torch.no_grad():
        a, b, c = (g.mam.speech_branch(*x) for x in ((low, high), (low2, high2), (louder, high)))
    for p in ("upper", "hands", "lower"):
        assert torch.allclose(a[p], b[p], atol=1e-5)
        assert (a[p] - c[p]).abs().max() > 1e-3
    assert (a["face"] - b["face"]).abs().max() > 1e-3
    paper = get_config("paper")
    with pytest.raises(ValueError, match="built-in speech"):
        EchoMaskGenerator(dataclasses.replace(paper, generator=dataclasses.replace(paper.generator,
                                                                                   body_speech="bands")))


def test_body_speech_prosody_leaves_the_body_only_onset_loudness_pitch_and_voicing():
    """body_speech="prosody": the body's condition ignores the spectrum and the phones entirely, yet follows
    loudness and pitch; the face still reads the spectrum."""
    import dataclasses

    import torch

    from echomask.core.model.config import get_config
    from echomask.core.model.generator import EchoMaskGenerator
    from echomask.core.speech.builtin import LOG_F0, MEL, PHONE_POSTERIORS, RMS

    cfg = get_config("tiny")
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, body_speech="prosody"))
    torch.manual_seed(0)
    g = EchoMaskGenerator(cfg).eval()
    _, low, high = _inputs(g)
    other_spectrum = low.clone()
    other_spectrum[..., MEL] = torch.randn_like(low[..., MEL])
    other_phones = high.clone()
    other_phones[..., PHONE_POSTERIORS] = torch.randn_like(high[..., PHONE_POSTERIORS])
    louder, higher = low.clone(), low.clone()
    louder[..., RMS] += 1.0
    higher[..., LOG_F0] += 1.0
    with torch.no_grad():
        a, b, c, d, e = (g.mam.speech_branch(*x) for x in ((low, high), (other_spectrum, high), (low, other_phones),
                                                             (louder, high), (higher, high)))
    for p in ("upper", "hands", "lower"):
        assert torch.allclose(a[p], b[p], atol=1e-5) and torch.allclose(a[p], c[p], atol=1e-5)
        assert (a[p] - d[p]).abs().max() > 1e-3 and (a[p] - e[p]).abs().max() > 1e-3
    assert (a["face"] - b["face"]).abs().max() > 1e-3


def test_body_speech_window_keeps_the_body_condition_local():
    """body_speech_window w: a body frame's condition depends on the speech within about 4 w frames (the
    stacked blocks), not on speech at the other end of the window, nor on the frame's place in the window; the
    face still reads the whole window."""
    import dataclasses

    import torch

    from echomask.core.model.config import get_config
    from echomask.core.model.generator import EchoMaskGenerator
    from echomask.core.motion.skeleton import PARTS

    cfg = get_config("tiny")
    cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, body_speech_window=2))
    torch.manual_seed(0)
    g = EchoMaskGenerator(cfg).eval()
    _, low, high = _inputs(g)
    low2, high2 = low.clone(), high.clone()
    low2[:, :4] += 3.0          # the first 4 frames' speech only
    high2[:, :4] += 3.0
    with torch.no_grad():
        a, b = g.mam.speech_branch(low, high), g.mam.speech_branch(low2, high2)
    for p in ("upper", "hands", "lower"):
        assert (a[p][:, :4] - b[p][:, :4]).abs().max() > 1e-3        # near the change: it follows
        assert torch.allclose(a[p][:, 20:], b[p][:, 20:], atol=1e-5)  # far away: untouched
    assert (a["face"][:, 20:] - b["face"][:, 20:]).abs().max() > 1e-4
    # No position encoding in the body's streams: speech that does not change gives a condition that does not.
    steady_low, steady_high = low[:, :1].expand(-1, T, -1), high[:, :1].expand(-1, T, -1)
    with torch.no_grad():
        steady = g.mam.speech_branch(steady_low, steady_high)
    for p in ("upper", "hands", "lower"):
        assert torch.allclose(steady[p], steady[p][:, :1].expand(-1, T, -1), atol=1e-5)
    # The MAM losses run with the local motion branch too.
    latents = {p: torch.randn(B, T // 4, cfg.tokenizer.code_dim) for p in PARTS}
    losses = g.mam.losses(a, latents)
    assert all(torch.isfinite(v) for v in losses.values())


def test_sqa_mask_top_share_plus_random_share():
    import torch

    from echomask.core.model.sqa import mask_counts, select_sqa_mask

    total, top = mask_counts(64, 0.375, 0.20)
    assert (total, top) == (24, 13)
    scores = torch.rand(8, 64)
    scores[:, :4] = 10.0  # the seeds get the highest attention, yet must never be masked
    gen = torch.Generator().manual_seed(0)
    mask = select_sqa_mask(scores, 0.375, 0.20, gen, seed_frames=4, hardness=1.0)
    assert mask.dtype == torch.bool and mask.shape == (8, 64)
    assert (mask.sum(1) == 24).all()
    assert not mask[:, :4].any()
    for b in range(8):
        s = scores[b].clone()
        s[:4] = -1
        top_frames = set(s.topk(13).indices.tolist())
        assert top_frames <= set(mask[b].nonzero().flatten().tolist())
    # The random share differs between draws; the attention share does not.
    mask2 = select_sqa_mask(scores, 0.375, 0.20, gen, seed_frames=4, hardness=1.0)
    assert not torch.equal(mask, mask2)
    # Same generator seed -> same mask.
    m_a = select_sqa_mask(scores, generator=torch.Generator().manual_seed(5))
    m_b = select_sqa_mask(scores, generator=torch.Generator().manual_seed(5))
    assert torch.equal(m_a, m_b)


def test_sqa_soft_to_hard_schedule():
    import torch

    from echomask.core.model.sqa import hardness, select_sqa_mask

    assert hardness(0, 100) == 0.0 and hardness(50, 100) == 0.5 and hardness(500, 100) == 1.0
    scores = torch.linspace(0.0, 1.0, 64).repeat(400, 1) + 1e-3  # later frames more attended
    gen = torch.Generator().manual_seed(1)

    def top_hit_rate(h):
        mask = select_sqa_mask(scores, 0.375, 0.20, gen, 4, hardness=h)
        return float(mask[:, -13:].float().mean())

    soft, mid, hard = top_hit_rate(0.0), top_hit_rate(0.6), top_hit_rate(1.0)
    assert hard == 1.0
    assert soft < 0.6 < hard and soft < mid
    assert abs(soft - 24 / 60) < 0.05  # nearly uniform over the 60 non-seed frames at the start


def test_ema_teacher_update():
    import torch

    from echomask.core.model.ema import EMATeacher

    _, g = _tiny()
    ema = EMATeacher(g, decay=0.9)
    name = "mask_embeddings"
    before = dict(ema.model.named_parameters())[name].detach().clone()
    with torch.no_grad():
        dict(g.named_parameters())[name].add_(1.0)
    d = ema.update(g)
    assert d == pytest.approx(min(0.9, 1 / 10))
    after = dict(ema.model.named_parameters())[name]
    assert torch.allclose(after, before * d + (before + 1.0) * (1 - d), atol=1e-6)
    assert not after.requires_grad
    for _ in range(200):
        ema.update(g)
    assert ema.effective_decay() == pytest.approx(0.9)
    assert torch.allclose(dict(ema.model.named_parameters())[name], dict(g.named_parameters())[name], atol=1e-4)


def test_paper_config_matches_official_manifest():
    """Every tensor the official generator uses at inference exists here with the same shape (by name,
    through official_key), and the paper config has exactly that many parameters plus MAM's predictors."""
    import torch

    from echomask.core.model.config import get_config
    from echomask.core.model.generator import EchoMaskGenerator, official_key

    tsv = shared_path("official_parity", "echomask_state_dict.tsv")
    cfg = get_config("paper")
    cfg.generator.speech_low_dim = cfg.generator.speech_high_dim = 256   # HuBERT projected to 256-d
    with torch.device("meta"):
        g = EchoMaskGenerator(cfg)
    mine = {official_key(k): tuple(v.shape) for k, v in g.state_dict().items() if official_key(k)}
    official = {}
    for line in tsv.read_text().splitlines()[1:]:
        name, shape, _, used = line.split("\t")
        official[name] = (ast.literal_eval(shape), used)
    used = {k: s for k, (s, u) in official.items() if u == "yes"}
    missing = [k for k in used if k not in mine]
    assert not missing, missing[:10]
    wrong = [(k, mine[k], s) for k, s in used.items() if mine[k] != s]
    assert not wrong, wrong[:10]
    extra = [k for k in mine if k not in official]
    assert not extra, extra[:10]
    n_params = sum(p.numel() for p in g.parameters())
    assert n_params == 222_204_244 + 4 * 131_584  # official inference params + MAM.predict_motion_* (training)


def test_mam_losses_skip_windows_whose_part_is_missing():
    import torch

    from echomask.core.motion.skeleton import PARTS

    cfg, g = _tiny()
    g.eval()
    _, low, high = _inputs(g, 4)
    cond = g.mam.speech_branch(low, high)
    latents = {p: torch.randn(4, T // 4, cfg.tokenizer.code_dim) for p in PARTS}
    keep = {p: torch.ones(4, dtype=torch.bool) for p in PARTS}
    keep["face"] = torch.tensor([True, True, False, False])
    with torch.no_grad():
        masked = g.mam.losses(cond, latents, keep)
        sub = g.mam.losses({p: c[:2] if p == "face" else c for p, c in cond.items()},
                           {p: v[:2] if p == "face" else v for p, v in latents.items()})
    # Face terms use only the kept windows; the other parts all four.
    assert torch.allclose(masked["mam_mse"], sub["mam_mse"], atol=1e-6)
