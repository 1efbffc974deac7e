"""Parity with the official EchoMask release, on the seeded fixtures of ../shared/data/official_parity.

Every tensor is re-created from the init_*.tsv manifests by the README's recipe (sha256 checked against the
README's table), stored the way the release stores it (generator {'model_state': {'module.' + name}}, the
RVQ-VAEs and the global-motion net {'model_state': {name}}, the projection as a column-major view), run
through `convert-official`, loaded with this project's own code, and compared with what the official code
computed, at the README's tolerances (§5):
  indices / tokens exact; RVQ and global motion atol 1e-6; generator logits 2e-5, intermediates 5e-5;
  e2e decodes and global-motion input 2e-5, expressions / trans 1e-5, poses as rotation matrices 1e-3;
  HuBERT input_values 1e-5, features 1e-4.
The seeded generator (1.2 GB) is built and converted once per module.
"""
import json
import os

import numpy as np
import pytest

from conftest import requires_torch, shared_path
from official_parity_helpers import (README_CHECK_VALUES, README_SHA256, build_seeded_release,
                                     build_tiny_hubert, capture_window)

pytestmark = requires_torch
PARTS4 = ("face", "upper", "lower", "hands")


def _has_transformers():
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


requires_transformers = pytest.mark.skipif(
    not _has_transformers(), reason="HuBERT parity needs the 'transformers' package (requirements/dev.txt pins it)")


def maxdiff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def parity():
    return shared_path("official_parity")


@pytest.fixture(scope="module")
def release(parity, tmp_path_factory):
    root = tmp_path_factory.mktemp("official_release")
    digests = build_seeded_release(root, parity)
    return root, digests


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    from echomask.core.model.checkpoint import load_model
    from echomask.core.official.convert import BUNDLE_NAME, convert_release, load_official_extras

    out = tmp_path_factory.mktemp("echomask_paper")
    report = convert_release(release[0], out, verify=False, log=lambda m: None)
    model = load_model(out / BUNDLE_NAME, expected_config="paper")
    gm, proj = load_official_extras(out / BUNDLE_NAME)
    return {"report": report, "model": model, "global_motion": gm, "projection": proj,
            "path": out / BUNDLE_NAME, "out": out}


# ---------------------------------------------------------------------------------------------------------
# The recipe and the converter

def test_seeded_recipe_matches_readme(parity, release):
    from echomask.core.official.seeded import read_init_manifest, rule_for, seeded_value, tensor_seed

    for model, name, shape, rule, seed, first in README_CHECK_VALUES:
        assert tensor_seed(model, name) == seed
        assert rule_for(name, shape) == rule
        np.testing.assert_array_equal(seeded_value(model, name, shape, rule).ravel()[:4], np.float32(first))
    for model in ("echomask", "rvq_face", "rvq_upper", "rvq_hands", "rvq_lower", "global_motion"):
        assert release[1][model] == README_SHA256[model], model
    # The rule column agrees with the rule derived from name and shape for every seeded tensor.
    for model in ("echomask", "rvq_lower", "global_motion", "hubert_tiny"):
        for name, shape, _, rule, _ in read_init_manifest(parity / f"init_{model}.tsv"):
            assert rule == "stored" or rule == rule_for(name, shape), (model, name)


def test_converter_maps_every_tensor(converted, parity):
    from echomask.core.model.generator import official_key

    report = converted["report"]
    assert report.ok
    gen = report.models["generator"]
    # Every tensor inference uses (the manifest's 'yes' rows) was taken from the file, none filled in.
    rows = [line.split("\t") for line in (parity / "echomask_state_dict.tsv").read_text().splitlines()[1:]]
    used = {r[0] for r in rows if r[3] == "yes"}
    mapped = {official_key(k) for k in converted["model"].generator.state_dict() if official_key(k)}
    assert used <= mapped
    assert gen.filled == [] and gen.missing == [] and gen.misshaped == [] and gen.unexpected == []
    assert gen.loaded == len(mapped) and gen.loaded + gen.ignored_unused == len(rows) == 2553
    for part in ("face", "upper", "hands", "lower"):
        m = report.models[f"rvq_{part}"]
        assert (m.loaded, m.filled, m.unexpected) == (72, [], [])
    assert report.models["global_motion"].loaded == 42
    assert "'module.' prefix stripped from 2553 keys" in gen.notes
    saved = json.loads((converted["out"] / "conversion_report.json").read_text())
    assert saved["ok"] and saved["models"]["generator"]["loaded"] == gen.loaded
    # The bundle is a normal 'paper' model of this project, marked as the release's pipeline.
    model = converted["model"]
    assert model.config.name == "paper" and model.meta["pipeline"] == "official-release"
    np.testing.assert_array_equal(converted["projection"].numpy(),
                                  np.load(parity / "hubert_feature_parity.npz")["rop_1024_256"])


def test_converter_accepts_bare_and_prefixed_state_dicts(parity, tmp_path):
    import torch

    from echomask.core.official.convert import load_release_state_dict
    from echomask.core.official.seeded import seeded_state_dict

    sd = seeded_state_dict("global_motion", parity / "init_global_motion.tsv")
    for i, obj in enumerate(({"model_state": sd}, sd, {"module." + k: v for k, v in sd.items()},
                             {"model_state": {"module." + k: v for k, v in sd.items()}, "epoch": 3})):
        torch.save(obj, tmp_path / f"f{i}.bin")
        got, _ = load_release_state_dict(tmp_path / f"f{i}.bin")
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_converter_explains_missing_extra_and_misshaped_by_name(release, tmp_path):
    import torch

    from echomask.core.errors import WeightsError
    from echomask.core.official.convert import convert_release

    src = release[0] / "weights"
    bad = tmp_path / "release" / "weights"
    (bad / "pretrained_vq").mkdir(parents=True)
    for f in ("best_echomask.bin", "rop_1024_256.pt", "pretrained_vq/rvq_face_600.bin",
              "pretrained_vq/rvq_upper_500.bin", "pretrained_vq/rvq_hands_500.bin"):
        os.symlink(src / f, bad / f)
    lower = torch.load(src / "pretrained_vq/rvq_lower_600.bin", weights_only=True)["model_state"]
    del lower["decoder.model.6.bias"]                                    # needed by inference: fatal
    del lower["encoder.model.4.bias"]                                    # training-only: filled, reported
    lower["decoder.model.0.weight"] = torch.zeros(256, 256, 5)           # wrong shape: fatal
    lower["vq_ema_sum"] = torch.zeros(3)                                 # unknown: reported, skipped
    torch.save({"model_state": lower}, bad / "pretrained_vq/rvq_lower_600.bin")
    gm = torch.load(src / "pretrained_vq/last_1700_foot.bin", weights_only=True)
    torch.save(gm["model_state"], bad / "pretrained_vq/last_1700_foot.bin")  # bare: fine
    with pytest.raises(WeightsError) as err:
        convert_release(tmp_path / "release", tmp_path / "out", verify=False, log=lambda m: None)
    msg = str(err.value)
    assert "missing: decoder.model.6.bias" in msg
    assert "wrong shape: decoder.model.0.weight expected (256, 256, 3), file has (256, 256, 5)" in msg
    assert "unexpected (skipped): vq_ema_sum" in msg
    assert "filled in: encoder.model.4.bias" in msg
    saved = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert not saved["ok"] and saved["models"]["rvq_lower"]["missing"] == ["decoder.model.6.bias"]
    assert saved["models"]["generator"]["missing"] == [] and saved["models"]["global_motion"]["loaded"] == 42
    assert not (tmp_path / "out" / "model.safetensors").exists()
    os.remove(bad / "best_echomask.bin")
    with pytest.raises(WeightsError, match="best_echomask.bin"):
        convert_release(tmp_path / "release", tmp_path / "out", verify=False, log=lambda m: None)


def test_cli_convert_official_reports_bad_folder(tmp_path, capsys):
    from echomask.core.jobs.cli import main

    assert main(["convert-official", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Item 1-2: the RVQ-VAEs and the global-motion net

@pytest.mark.parametrize("part", ["face", "upper", "hands", "lower"])
def test_rvq_parity(converted, parity, part):
    import torch

    f = np.load(parity / "rvq_parity.npz")
    tok = converted["model"].tokenizers[part]
    x = torch.from_numpy(f[f"{part}_x"])
    with torch.no_grad():
        latent = tok.encode_latent(x)
        codes, qsum = tok.quantize(latent)
        level_codes = tok.latent_per_level(codes).permute(2, 0, 3, 1)          # (L, B, C, N)
        decoded = tok.decode(torch.from_numpy(f[f"{part}_indices"]))
        rec, _ = tok(x)
        random_decoded = tok.decode(torch.from_numpy(f[f"{part}_random_indices"]))
    assert maxdiff(latent.transpose(1, 2), f[f"{part}_latent"]) <= 1e-6
    np.testing.assert_array_equal(codes.numpy(), f[f"{part}_indices"])
    assert maxdiff(level_codes, f[f"{part}_level_codes"]) <= 1e-6
    assert maxdiff(qsum.transpose(1, 2), f[f"{part}_quantized_sum"]) <= 1e-6
    assert maxdiff(decoded, f[f"{part}_decoded"]) <= 1e-6
    assert maxdiff(rec, f[f"{part}_forward_rec"]) <= 1e-6
    assert maxdiff(random_decoded, f[f"{part}_random_decoded"]) <= 1e-6


def test_global_motion_parity(converted, parity):
    import torch

    f = np.load(parity / "global_motion_parity.npz")
    net = converted["global_motion"]
    with torch.no_grad():
        x = torch.from_numpy(f["x"])
        assert maxdiff(net.encode(x), f["encoder_out"]) <= 1e-6
        assert maxdiff(net(x), f["rec_pose"]) <= 1e-6


# ---------------------------------------------------------------------------------------------------------
# Item 3: one generator window

WINDOW_INTERMEDIATES = (
    [f"mam_{p}_{lv}" for p in ("face", "hands", "upper", "lower") for lv in ("low", "high")]
    + [f"cond_{p}" for p in ("face", "hands", "upper", "lower")]
    + ["body_hint", "face_memory", "face_decoded", "face_latent_prezq", "motion_self_encoded", "sqa_motion_in",
       "sqa_cond_hands", "sqa_cond_upper", "sqa_cond_lower", "sqa_word_hints", "body1d_out",
       "upper_latent_prezq", "hands_latent_prezq", "lower_latent_prezq",
       "hands_refined", "face_refined", "upper_refined", "lower_refined"]
    + [f"rec_{p}" for p in PARTS4])
SQA_SCORES = ([f"sqa_cross_attn_{p}" for p in ("hands", "upper", "lower")]
              + [f"sqa_frame_score_{p}" for p in ("hands", "upper", "lower")] + ["sqa_fused_frame_score"])


@pytest.fixture(scope="module")
def window(converted, parity):
    f = np.load(parity / "generator_window_parity.npz")
    return f, capture_window(converted["model"].generator, f)


def test_generator_window_logits_and_tokens(window):
    f, mine = window
    for p in PARTS4:
        assert maxdiff(mine[f"cls_{p}"], f[f"cls_{p}"]) <= 2e-5, p
        np.testing.assert_array_equal(mine[f"tokens_{p}"], f[f"tokens_{p}"])


def test_generator_window_intermediates(window):
    f, mine = window
    covered = set(WINDOW_INTERMEDIATES) | set(SQA_SCORES) | {f"cls_{p}" for p in PARTS4} \
        | {f"tokens_{p}" for p in PARTS4} | {"in_hubert", "in_hubert_hid", "in_motion", "in_mask", "in_id"}
    assert covered == set(f.files)  # every array of the fixture is compared by one of the window tests
    worst = {k: maxdiff(mine[k], f[k]) for k in WINDOW_INTERMEDIATES}
    bad = {k: v for k, v in worst.items() if v > 5e-5}
    assert not bad, bad


def test_generator_window_sqa_scores(window):
    """The SQA attention on the need_weights path: per-layer cross-attention, frame scores, fused score."""
    f, mine = window
    for k in SQA_SCORES:
        assert maxdiff(mine[k], f[k]) <= 1e-6, k
    assert maxdiff(mine["sqa_block_score"], f["sqa_fused_frame_score"]) <= 1e-6
    assert maxdiff(mine["sqa_need_weights_hints"], f["sqa_word_hints"]) <= 5e-5


# ---------------------------------------------------------------------------------------------------------
# Item 4: the release's inference loop end to end (3 windows)

@pytest.fixture(scope="module")
def e2e(converted, parity):
    from echomask.core.official.pipeline import run_release

    f = np.load(parity / "end_to_end_parity.npz")
    m = converted["model"]
    run = run_release(m.generator, m.tokenizers, converted["global_motion"], f["in_hubert"][0],
                      f["in_hubert_hid"][0], f["seed_motion"][0], f["ref_tar_trans"][0, 0])
    return f, run


def test_e2e_windows_seeds_logits_tokens(e2e):
    f, run = e2e
    assert len(run.logits) == 3
    # Window 0 gets the seed clip's 4 frames (the rest is masked: its content does not matter).
    np.testing.assert_array_equal(run.in_motion[0][:4].numpy(), f["seed_motion"][0])
    np.testing.assert_array_equal(f["w0_in_motion"][0, :4], f["seed_motion"][0])
    for w in range(3):
        if w:  # seeds rebuilt from the previous window's decode (Gram-Schmidt, integrated x/z), zeros after
            assert maxdiff(run.in_motion[w], f[f"w{w}_in_motion"][0]) <= 2e-5, w
        for p in PARTS4:
            assert maxdiff(run.logits[w][p].permute(0, 2, 1), f[f"w{w}_cls_{p}"][0]) <= 2e-5, (w, p)
            np.testing.assert_array_equal(run.tokens[w][p].numpy(), f[f"w{w}_tokens_{p}"][0])
        for p in ("upper", "lower", "hands"):
            assert maxdiff(run.decoded[w][p], f[f"w{w}_decoded_{p}"][0]) <= 2e-5, (w, p)


def test_e2e_stitching_decodes_and_outputs(e2e):
    from echomask.core.motion import rotations as R

    f, run = e2e
    for p in PARTS4:
        np.testing.assert_array_equal(run.tokens_all[p].numpy(), f[f"tokens_all_{p}"][0])
        assert maxdiff(run.decoded_all[p], f[f"decoded_{p}"][0]) <= 2e-5, p
    assert maxdiff(run.global_motion_in, f["global_motion_in"][0]) <= 2e-5
    assert maxdiff(run.global_motion_out, f["global_motion_out"][0]) <= 2e-5
    assert maxdiff(run.expressions, f["expressions"]) <= 1e-5
    assert maxdiff(run.trans, f["trans"]) <= 1e-5
    # Poses as rotation matrices (the release's float32 axis-angle is the ill-conditioned part, README §5).
    ref = R.axis_angle_to_matrix(f["poses"].reshape(-1, 55, 3).astype(np.float64))
    assert maxdiff(run.rotmats, ref) <= 1e-3
    assert maxdiff(R.axis_angle_to_matrix(run.poses.reshape(-1, 55, 3).astype(np.float64)), ref) <= 1e-3
    np.testing.assert_array_equal(run.poses.reshape(-1, 55, 3)[:, 23:25], 0.0)  # eyes not generated
    covered = {"in_hubert", "in_hubert_hid", "ref_tar_pose", "ref_tar_trans", "ref_tar_contact", "ref_tar_exps",
               "ref_tar_id", "seed_motion", "global_motion_in", "global_motion_out", "poses", "expressions",
               "trans"} | {f"w{w}_{k}_{p}" for w in range(3) for k in ("cls", "tokens") for p in PARTS4} \
        | {f"w{w}_in_motion" for w in range(3)} | {f"w{w}_decoded_{p}" for w in range(3) for p in ("upper", "lower", "hands")} \
        | {f"tokens_all_{p}" for p in PARTS4} | {f"decoded_{p}" for p in PARTS4}
    assert covered == set(f.files)


# ---------------------------------------------------------------------------------------------------------
# Item 5: HuBERT features (tiny seeded HubertModel)

@pytest.fixture(scope="module")
def tiny_hubert(parity, tmp_path_factory):
    if not _has_transformers():
        pytest.skip("HuBERT needs the 'transformers' package (requirements/dev.txt pins it)")
    folder = tmp_path_factory.mktemp("hubert_tiny")
    digest = build_tiny_hubert(folder, parity)
    return folder, digest


@requires_transformers
def test_hubert_feature_parity(tiny_hubert, parity, monkeypatch):
    import torch

    from echomask.core.speech import hubert as H

    folder, digest = tiny_hubert
    assert digest == README_SHA256["hubert_tiny"]
    monkeypatch.setenv(H.ENV_DIR, str(folder))
    model, normalize = H.load_hubert(H.find_hubert_folder())
    assert normalize
    f = np.load(parity / "hubert_feature_parity.npz")
    audio16 = f["wav_int16"].astype(np.float32) / 32768.0    # the PCM_16 wav as soundfile reads it
    heard = H.to_heard_rate(audio16)                          # the 22.05 kHz quirk (librosa.load, soxr_hq)
    assert maxdiff(heard, f["audio_22050"]) <= 1e-6
    assert int(np.ceil(len(heard) * 16000 / 22050)) == len(f["audio_16k"])
    assert H.release_frame_count(len(heard)) == 90
    out = H.release_features_from_heard(f["audio_22050"], model, torch.from_numpy(f["rop_1024_256"]))
    assert maxdiff(out["input_values"][None], f["input_values"]) <= 1e-5
    for mine, ref in (("raw_last", "raw_last_hidden_state"), ("raw_hid", "raw_hidden_state_11"),
                      ("interp_last", "interp_last"), ("interp_hid", "interp_hid"), ("hubert", "hubert"),
                      ("hubert_hid", "hubert_hid")):
        assert maxdiff(out[mine], f[ref]) <= 1e-4, mine
    # From the 16 kHz wav through the product's feature function (same frame count as the release).
    hid, last = H.release_feature_fn(torch.from_numpy(f["rop_1024_256"]))(audio16, 90)
    assert maxdiff(last, f["hubert"][0]) <= 1e-4 and maxdiff(hid, f["hubert_hid"][0]) <= 1e-4


@requires_transformers
def test_hubert_long_audio_chunking():
    """Not covered by the fixtures: chunks of 320 080 samples every 320 000, a remainder of >= 400, each
    run independently; frames concatenated and cut to (L - 80) // 320."""
    import torch

    from echomask.core.speech import hubert as H

    from transformers import HubertConfig, HubertModel

    assert H.chunk_ranges(700_000) == [(0, 320_080), (320_000, 640_080), (640_000, 700_000)]
    assert H.chunk_ranges(640_300) == [(0, 320_080), (320_000, 640_080)]   # remainder of 300 < 400: dropped
    # A narrow 12-layer HuBERT (the chunking does not depend on the width): fast on long audio.
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=12, num_attention_heads=2,
                                     intermediate_size=32, conv_dim=(8,) * 7, do_stable_layer_norm=True,
                                     feat_extract_norm="layer", conv_bias=True, num_conv_pos_embeddings=16,
                                     num_conv_pos_embedding_groups=4)).eval()
    rng = np.random.default_rng(0)
    x = H.normalise_waveform(rng.standard_normal(700_000).astype(np.float32))
    last, hid = H.hubert_hidden(model, x)
    assert last.shape == hid.shape == ((700_000 - 80) // 320, 32) == (2187, 32)
    with torch.no_grad():
        for (a, b), rows in zip(H.chunk_ranges(700_000), (slice(0, 1000), slice(1000, 2000), slice(2000, 2187))):
            direct = model(torch.from_numpy(x[a:b])[None], output_hidden_states=True)
            assert torch.allclose(last[rows], direct.last_hidden_state[0], atol=1e-5)
            assert torch.allclose(hid[rows], direct.hidden_states[11][0], atol=1e-5)
    short_last, _ = H.hubert_hidden(model, x[:640_300])                     # the dropped tail is zero-padded
    assert short_last.shape[0] == (640_300 - 80) // 320 == 2000


def test_hubert_missing_pieces_say_what_to_do(tmp_path, monkeypatch):
    import sys

    from echomask.core.errors import EchoMaskError, WeightsError
    from echomask.core.speech import hubert as H

    monkeypatch.delenv(H.ENV_DIR, raising=False)
    with pytest.raises(WeightsError, match="never downloads"):
        H.find_hubert_folder(cache_dir=str(tmp_path / "empty_cache"))
    with pytest.raises(WeightsError, match="not found"):
        H.find_hubert_folder(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="no model weights"):
        H.find_hubert_folder(tmp_path / "half")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(EchoMaskError, match="pip install transformers"):
        H.require_transformers()


# ---------------------------------------------------------------------------------------------------------
# Product: generate() with the converted release (neutral seed, HuBERT backend)

@requires_transformers
def test_generate_with_converted_release(converted, tiny_hubert, parity, monkeypatch):
    from echomask.core.generation.inference import generate
    from echomask.core.official.pipeline import neutral_seed
    from echomask.core.speech import compute_speech_features, get_backend

    monkeypatch.setenv("ECHOMASK_HUBERT_DIR", str(tiny_hubert[0]))
    f = np.load(parity / "hubert_feature_parity.npz")
    audio = f["wav_int16"].astype(np.float32) / 32768.0                    # 3 s -> 90 frames, 2 windows
    progress = []
    take = generate(audio, model=converted["model"], device="cpu", progress=lambda x, m: progress.append(m))
    assert take.num_frames == 90 and take.fps == 30.0
    assert take.meta["generator"] == "echomask-official-release"
    assert any("(2/2)" in m for m in progress)
    assert np.isfinite(take.poses).all() and np.isfinite(take.trans).all()
    np.testing.assert_array_equal(take.poses.reshape(-1, 55, 3)[:, 23:25], 0.0)
    # Our neutral standing pose replaces the release's BEAT2 seed clip; the root stays where it stood.
    seed, start = neutral_seed()
    assert np.allclose(seed[:, :6], [1, 0, 0, 0, 1, 0]) and start[1] == pytest.approx(1.30)
    assert np.abs(take.trans[:, [0, 2]].mean(0) - start[[0, 2]]).max() < 0.05
    # The registered 'hubert' speech backend gives the same 256-d features as the release's function.
    monkeypatch.setattr(get_backend("hubert"), "_projection", converted["projection"])
    monkeypatch.setattr(get_backend("hubert"), "_dir", None)
    feats = compute_speech_features(audio, fps=30.0, backend="hubert")
    assert feats.low.shape == feats.high.shape == (90, 256)
    assert maxdiff(feats.high, f["hubert"][0]) <= 1e-4 and maxdiff(feats.low, f["hubert_hid"][0]) <= 1e-4


@requires_transformers
def test_generate_with_converted_release_keeps_parts(converted, tiny_hubert, parity, monkeypatch):
    """Re-keying only the face keeps the existing take's body, hands and root."""
    from echomask.core.generation.inference import generate
    from echomask.core.motion.take import neutral_take

    monkeypatch.setenv("ECHOMASK_HUBERT_DIR", str(tiny_hubert[0]))
    audio = np.load(parity / "hubert_feature_parity.npz")["wav_int16"][:24000].astype(np.float32) / 32768.0
    known = neutral_take(45)
    known.poses[:, 3:66] = 0.1
    known.trans[:] = (0.3, 1.2, -0.4)
    take = generate(audio, model=converted["model"], device="cpu", parts=["face"], known_take=known)
    assert take.num_frames == 45
    np.testing.assert_allclose(take.poses[:, 3:66], known.poses[:, 3:66], atol=1e-5)    # body kept
    np.testing.assert_allclose(take.poses[:, 75:], known.poses[:, 75:], atol=1e-5)      # hands kept
    np.testing.assert_allclose(take.trans, known.trans, atol=1e-6)                      # root kept
    assert np.abs(take.expressions).max() > 0 or np.abs(take.poses[:, 66:69]).max() > 0  # face generated


def test_model_folder_resolves_to_its_bundle(tmp_path):
    """`--weights weights/echomask_paper/` (the converter's output folder) means its model.safetensors."""
    from model_helpers import tiny_bundle

    from echomask.core.generation.inference import resolve_model

    tiny_bundle(tmp_path / "model.safetensors")
    assert resolve_model(str(tmp_path), "cpu").path == str(tmp_path / "model.safetensors")
