"""Motion tokenizers (RVQ-VAEs): shapes, gradients, RVQ round trip, official layout and parity,
safetensors save/load and its checks, and a short training run."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from conftest import requires_torch, shared_path

pytestmark = requires_torch

torch = pytest.importorskip("torch")

from echomask.core.errors import WeightsError  # noqa: E402
from echomask.core.model.config import FORMAT_VERSION, ModelConfig, get_config  # noqa: E402
from echomask.core.model.tokenizer import RVQVAE, TokenizerSet  # noqa: E402
from echomask.core.motion.skeleton import PART_DIMS, PARTS  # noqa: E402


@pytest.fixture(autouse=True)
def _few_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared: one thread is faster than oversubscribed two
    yield
    torch.set_num_threads(old)


def tiny(part):
    return RVQVAE(get_config("tiny").tokenizer_config(part))


@pytest.mark.parametrize("part", PARTS)
def test_shapes_and_gradients(part):
    torch.manual_seed(0)
    model = tiny(part)
    d, levels = PART_DIMS[part], model.num_levels
    x = torch.randn(3, 64, d)
    model.train()
    recon, losses = model(x)
    assert recon.shape == (3, 64, d)
    assert torch.isfinite(losses["total"])
    expected = {"rec", "vel", "acc", "geodesic", "commit", "total"}
    expected |= {"expr"} if part == "face" else {"pos"}
    expected |= {"contact", "trans"} if part == "lower" else set()
    assert expected <= set(losses)
    losses["total"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder.model[0].weight.grad.abs().sum() > 0  # straight-through reaches the encoder
    model.eval()
    codes = model.encode(x)
    assert codes.shape == (3, 16, levels) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < model.cfg.nb_code
    assert model.decode(codes).shape == (3, 64, d)
    latent = model.encode_latent(x)
    assert latent.shape == (3, 16, model.cfg.code_dim)
    codes2, quantized = model.quantize(latent)
    assert torch.equal(codes2, codes)
    per = model.latent_per_level(codes)
    assert per.shape == (3, 16, levels, model.cfg.code_dim)
    torch.testing.assert_close(model.codes_to_latent(codes), per.sum(-2))
    torch.testing.assert_close(quantized, model.codes_to_latent(codes), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.codes_to_latent(codes, levels=1), per[:, :, 0])
    with pytest.raises(ValueError):
        model.encode(torch.randn(1, 62, d))  # not a multiple of 4 frames


def test_detail_weight_blends_the_finer_levels():
    """decode(codes, detail): 1 = every level as coded, 0 = level 0 alone, per token (pauses show the coarse
    motion only, core.generation.loop)."""
    torch.manual_seed(0)
    model = tiny("upper").eval()
    codes = model.encode(torch.randn(2, 64, PART_DIMS["upper"]))
    coarse = codes.clone()
    coarse[..., 1:] = -1
    with torch.no_grad():
        torch.testing.assert_close(model.decode(codes, torch.ones(16)), model.decode(codes))
        torch.testing.assert_close(model.decode(codes, torch.zeros(2, 16)), model.decode(coarse))
        half = model.decode_latent(model.latent_per_level(codes)[..., 0, :] + 0.5 * model.latent_per_level(codes)[..., 1:, :].sum(-2))
        torch.testing.assert_close(model.decode(codes, torch.full((16,), 0.5)), half)


def test_residual_levels_refine():
    """Each extra level quantises what the previous ones left: the residual error shrinks."""
    torch.manual_seed(0)
    model = tiny("upper").train()
    x = torch.randn(8, 64, PART_DIMS["upper"])
    for _ in range(3):  # initialise codebooks from encoder outputs, a few EMA updates
        model(x)
    model.eval()
    with torch.no_grad():
        latent = model.encode_latent(x)
        codes = model.encode(x)
        errs = [float((latent - model.codes_to_latent(codes, levels=k)).pow(2).mean()) for k in range(1, 7)]
    assert errs[-1] < errs[0]
    assert all(b <= a + 1e-6 for a, b in zip(errs, errs[1:]))


def test_ema_update_and_dead_code_reset():
    from echomask.core.model.tokenizer import EMACodebook

    torch.manual_seed(0)
    cb = EMACodebook(nb_code=4, code_dim=2, decay=0.5, dead_threshold=0.5)
    data = torch.tensor([[1.0, 0.0]] * 8 + [[0.0, 1.0]] * 8)
    cb.init_from(data)
    cb.codebook.copy_(torch.tensor([[0.5, 0.0], [0.0, 0.5], [9.0, 9.0], [-9.0, -9.0]]))
    cb.ema_sum.copy_(cb.codebook)
    cb.ema_count.fill_(0.5)  # after the EMA step unused codes sit at 0.25 < 0.5
    idx = cb.nearest(data)
    assert idx[:8].eq(0).all() and idx[8:].eq(1).all()
    reset_share = cb.update(data, idx)
    # used codes move toward their data (EMA), the two unused ones fall below the threshold and are reset
    assert float(cb.codebook[0, 0]) > 0.5 and float(cb.codebook[1, 1]) > 0.5
    assert reset_share == 0.5
    for k in (2, 3):
        assert any(torch.allclose(cb.codebook[k], row) for row in data)


def test_rvq_round_trip_beats_the_mean():
    """Trained briefly on a small smooth signal, encode -> decode reconstructs it far better than its mean."""
    torch.manual_seed(0)
    model = tiny("upper")
    t = torch.arange(64).float() / 30.0
    freqs = torch.linspace(0.3, 2.0, 78)
    signals = torch.stack([torch.sin(2 * np.pi * freqs * (t[:, None] + s)) for s in (0.0, 0.4, 0.9, 1.3)])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        _, losses = model(signals)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        recon = model.decode(model.encode(signals))
    err = float((recon - signals).pow(2).mean())
    baseline = float((signals.mean(dim=(0, 1), keepdim=True) - signals).pow(2).mean())
    assert err < 0.5 * baseline, (err, baseline)


def test_paper_config_matches_official_layout():
    folder = shared_path("official_parity")
    cfg = get_config("paper")
    for part in PARTS:
        rows = [line.rstrip("\n").split("\t") for line in open(folder / f"rvq_{part}.tsv")][1:]
        model = RVQVAE(cfg.tokenizer_config(part))
        sd = model.state_dict()
        assert list(sd) == [r[0] for r in rows]
        assert [tuple(v.shape) for v in sd.values()] == [tuple(json.loads(r[1].replace("(", "[").replace(",)", "]").replace(")", "]"))) for r in rows]


def _seeded_state(model_name, state_dict):
    """The parity fixtures' public seeding recipe (official_parity/README.md §2)."""
    out = {}
    for name, t in state_dict.items():
        seed = int.from_bytes(hashlib.sha256(f"{model_name}/{name}".encode()).digest()[:8], "little")
        z = np.random.Generator(np.random.PCG64(seed)).standard_normal(tuple(t.shape))
        out[name] = torch.from_numpy((z * 0.02).astype(np.float32))
    return out


@pytest.mark.parametrize("part", ["face", "lower"])
def test_paper_config_reproduces_official_numbers(part):
    """With the official tensors (seeded), our RVQ-VAE gives the official encoder output, indices and decodes."""
    fx = np.load(shared_path("official_parity", "rvq_parity.npz"))
    model = RVQVAE(get_config("paper").tokenizer_config(part)).eval()
    model.load_state_dict(_seeded_state(f"rvq_{part}", model.state_dict()))
    x = torch.from_numpy(fx[f"{part}_x"])
    with torch.no_grad():
        latent = model.encode_latent(x).transpose(1, 2)
        codes = model.encode(x)
        decoded = model.decode(codes)
        random_decoded = model.decode(torch.from_numpy(fx[f"{part}_random_indices"]))
        forward_rec, _ = model(x)
    np.testing.assert_allclose(latent.numpy(), fx[f"{part}_latent"], atol=1e-6)
    np.testing.assert_array_equal(codes.numpy(), fx[f"{part}_indices"])
    np.testing.assert_allclose(decoded.numpy(), fx[f"{part}_decoded"], atol=1e-6)
    np.testing.assert_allclose(random_decoded.numpy(), fx[f"{part}_random_decoded"], atol=1e-6)
    np.testing.assert_allclose(forward_rec.numpy(), fx[f"{part}_forward_rec"], atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# TokenizerSet persistence

def _trained_tiny_set():
    from echomask.core.motion.motion_repr import NormStats

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    stats = NormStats({p: rng.normal(size=PART_DIMS[p]).astype(np.float32) for p in PARTS},
                      {p: rng.uniform(0.5, 2, PART_DIMS[p]).astype(np.float32) for p in PARTS})
    tokset = TokenizerSet("tiny", stats).train()
    for p in PARTS:  # one training pass so the codebooks are initialised and non-trivial
        tokset[p](torch.randn(2, 64, PART_DIMS[p]))
    return tokset.eval()


def test_save_load_round_trip(tmp_path):
    tokset = _trained_tiny_set()
    path = tmp_path / "tok.safetensors"
    tokset.save(path, {"note": "test"})
    loaded = TokenizerSet.load(path, expected_config="tiny")
    assert loaded.config.name == "tiny" and loaded.meta["note"] == "test"
    raw = {p: torch.randn(2, 32, PART_DIMS[p]) for p in PARTS}
    codes = tokset.encode_parts(raw)
    codes2 = loaded.encode_parts(raw)
    for p in PARTS:
        assert torch.equal(codes[p], codes2[p])
        np.testing.assert_array_equal(loaded.stats.std[p], tokset.stats.std[p])
    dec, dec2 = tokset.decode_parts(codes), loaded.decode_parts(codes)
    for p in PARTS:
        torch.testing.assert_close(dec[p], dec2[p])
    # the safetensors file holds no code: plain tensors and string metadata only
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert meta["format_version"] == str(FORMAT_VERSION) and meta["config_name"] == "tiny"


def test_load_checks(tmp_path):
    tokset = _trained_tiny_set()
    path = tmp_path / "tok.safetensors"
    tokset.save(path)
    with pytest.raises(WeightsError, match="'tiny' model config.*'small' was asked for"):
        TokenizerSet.load(path, expected_config="small")
    changed = get_config("tiny")
    changed.tokenizer = dataclasses.replace(changed.tokenizer, nb_code=32)
    with pytest.raises(WeightsError, match="nb_code"):
        TokenizerSet.load(path, expected_config=changed)
    with pytest.raises(WeightsError, match="not found"):
        TokenizerSet.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a weights file at all")
    with pytest.raises(WeightsError, match="not a readable"):
        TokenizerSet.load(bad)
    # another format version
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    meta["format_version"] = str(FORMAT_VERSION + 1)
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata=meta)
    with pytest.raises(WeightsError, match="format version"):
        TokenizerSet.load(old)


# ---------------------------------------------------------------------------------------------------------
# Training

def _take_folder(tmp_path, n_takes=2, frames=500):
    from test_motion_repr import synthetic_take
    from echomask.core.motion.take import save_take

    for i in range(n_takes):
        save_take(synthetic_take(n=frames, seed=i), tmp_path / f"t{i}.npz")
    return tmp_path


def test_two_step_training_run_resume_and_seed(tmp_path):
    from echomask.core.training.data import folder_manifest
    from echomask.core.training.train_tokenizers import TokenizerTrainOptions, train_tokenizers

    (tmp_path / "data").mkdir()
    entries = folder_manifest(_take_folder(tmp_path / "data"))
    opts = TokenizerTrainOptions(steps=2, batch_size=4, seed=7, val_every=1, save_every=1, device="cpu",
                                 stretch_factors=(1.1,))
    out_a = str(tmp_path / "a" / "tok.safetensors")
    result = train_tokenizers(entries, "tiny", out_a, opts, progress=False)
    assert np.isfinite(result["mpjpe"]) and result["mpjpe"] > 0 and "expr_mse" in result
    log = [json.loads(line) for line in open(out_a + ".log.jsonl")]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == [1, 2] and all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    loaded = TokenizerSet.load(out_a, expected_config="tiny")
    assert loaded.meta["steps"] == 2 and "mpjpe" in loaded.meta["validation"]

    # same seed -> the same weights
    out_b = str(tmp_path / "b" / "tok.safetensors")
    train_tokenizers(entries, "tiny", out_b, opts, progress=False)
    from safetensors.torch import load_file

    a, b = load_file(out_a), load_file(out_b)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # resume: 2 more steps continue from the checkpoint (step 3, 4 logged after 1, 2)
    more = dataclasses.replace(opts, steps=4)
    train_tokenizers(entries, "tiny", out_a, more, resume=True, progress=False)
    log = [json.loads(line) for line in open(out_a + ".log.jsonl")]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert TokenizerSet.load(out_a).meta["steps"] == 4


def test_cli_bad_input(tmp_path):
    from echomask.core.jobs.cli import main

    assert main(["train-tokenizers", "--manifest", str(tmp_path), "--config", "tiny",
                 "--out", str(tmp_path / "x.safetensors"), "--steps", "1"]) == 2  # no takes in the folder
    if not torch.cuda.is_available():  # asking for an absent GPU is a clear error, not a crash
        _take_folder(tmp_path, 1, 200)
        assert main(["train-tokenizers", "--manifest", str(tmp_path), "--config", "tiny", "--device", "cuda",
                     "--out", str(tmp_path / "x.safetensors"), "--steps", "1"]) == 2


def test_bundled_small_tokenizers_reconstruct_held_out_motion():
    """The committed weights load as 'small' and reconstruct held-out ground truth far better than the mean pose."""
    import pathlib

    from echomask.core.training.data import MotionWindows, shared_training_manifest
    from echomask.core.training.train_tokenizers import validate

    path = pathlib.Path(__file__).resolve().parent.parent / "weights" / "tokenizers_small.safetensors"
    if not path.is_file():
        pytest.skip("weights/tokenizers_small.safetensors is not there (train it with `python -m core train-tokenizers`)")
    tokset = TokenizerSet.load(path, expected_config="small")
    val = MotionWindows(shared_training_manifest(shared_path()), "val")
    metrics = validate(tokset, val, "cpu")
    # measured at training time: 70.9 mm and 0.0245; the mean pose scores 170 mm and 0.288
    assert metrics["mpjpe"] < 100.0 and metrics["expr_mse"] < 0.1
    assert metrics["contact_acc"] > 0.9
