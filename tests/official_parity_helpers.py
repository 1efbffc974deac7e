"""Helpers for tests/test_official_parity.py: build release-shaped files from the seeded recipe, a tiny
seeded HuBERT folder, and capture this project's generator intermediates under the fixture's key names."""
from __future__ import annotations

import json
import pathlib

import numpy as np

# README §2: sha256 of all tensors of each model, concatenated in init_<model>.tsv order.
README_SHA256 = {
    "echomask": "732c4b0f54e3210b0982ed075098d18b4ecbc611608862518caef3615cb74b80",
    "rvq_face": "ef423f28ade9939fc461c0c60c438eb9192471b5634835e557548e5b3cb4873f",
    "rvq_upper": "b792d04738e4d71390e3cd213f21d1b7b2555a52d2b8f3becdc9bcb5349e1450",
    "rvq_hands": "bc8cd35a17c41b89728d12f7ea69aa402b2370ab4cfe67d646e507582ffb2b0e",
    "rvq_lower": "132d7144ae983b48811d95f95f4173ab3448700f00ce83e357479811b6312b51",
    "global_motion": "8d243d54b7e2b63a412580095398286298b13f674ae14aea998339223f6c20fd",
    "hubert_tiny": "1ca49069807c8db83636a2501b0b7b6db2401cbb121536836ea4458ddca8dcd3",
}
# README §2 check values: (model, tensor, shape, rule, seed, first four values).
README_CHECK_VALUES = [
    ("echomask", "face_classifier.mlp.0.weight", (768, 256), "normal_0.02", 16675000409951860546,
     (0.026101403, 0.0059085274, 0.020197848, 0.0021907259)),
    ("echomask", "MAM.motion_encoder_face_1.layers.0.norm1.weight", (256,), "one_plus_normal_0.02",
     13374922846866300051, (0.98383325, 0.98780447, 0.99399734, 1.0083416)),
    ("echomask", "mask_generator.shared_transformer_decoder.layers.0.multihead_attn.in_proj_bias", (2304,),
     "normal_0.02", 13231915348780683565, (-0.011616320, -0.028781146, 0.0049405834, 0.0079618944)),
    ("rvq_face", "quantizer.layers.0.codebook", (256, 256), "normal_0.02", 10199227882235537141,
     (0.034521226, -0.024053549, 0.0065145525, 0.0063751028)),
    ("hubert_tiny", "encoder.layers.0.attention.k_proj.bias", (1024,), "normal_0.02", 6151522307724481541,
     (-0.00096849143, -0.018100353, 0.037181497, 0.017508816)),
]
RVQ_FILES = {"face": "rvq_face_600.bin", "upper": "rvq_upper_500.bin", "hands": "rvq_hands_500.bin",
             "lower": "rvq_lower_600.bin"}


def save_projection_like_release(path, rop: np.ndarray) -> None:
    """Store a (1024, 256) matrix as the release does: a column-major view into a 1024 x 1024 storage."""
    import torch

    full = torch.zeros(1024, 1024).T          # column-major storage, like the Q factor of torch.linalg.qr
    full[:, :256] = torch.from_numpy(rop)
    view = full[:, :256]
    assert not view.is_contiguous()
    torch.save(view, path)


def build_seeded_release(root: pathlib.Path, parity: pathlib.Path) -> dict:
    """Write the seeded release files under root/weights/ in the release's layout; returns the sha256 of
    each model's tensors (computed while building, README §2)."""
    import torch

    from echomask.core.official.seeded import seeded_state_dict

    weights = root / "weights"
    (weights / "pretrained_vq").mkdir(parents=True, exist_ok=True)
    digests = {}
    for part, fname in RVQ_FILES.items():
        sd, digests[f"rvq_{part}"] = seeded_state_dict(f"rvq_{part}", parity / f"init_rvq_{part}.tsv", digest=True)
        torch.save({"model_state": sd}, weights / "pretrained_vq" / fname)
    sd, digests["global_motion"] = seeded_state_dict("global_motion", parity / "init_global_motion.tsv", digest=True)
    torch.save({"model_state": sd}, weights / "pretrained_vq" / "last_1700_foot.bin")
    rop = np.load(parity / "hubert_feature_parity.npz")["rop_1024_256"]
    save_projection_like_release(weights / "rop_1024_256.pt", rop)
    stored = dict(np.load(parity / "echomask_buffers.npz"))
    sd, digests["echomask"] = seeded_state_dict("echomask", parity / "init_echomask.tsv", stored=stored, digest=True)
    torch.save({"model_state": {"module." + k: v for k, v in sd.items()}}, weights / "best_echomask.bin")
    del sd
    return digests


def build_tiny_hubert(folder: pathlib.Path, parity: pathlib.Path) -> str:
    """The tiny seeded HubertModel of item 5 saved as a local model folder (with a processor config);
    returns the sha256 of its seeded tensors. Seeds use the transformers 4.39.3 names; older versions
    name the weight-normed positional conv weight_g / weight_v, so rename for those."""
    from transformers import HubertConfig, HubertModel

    from echomask.core.official.seeded import seeded_state_dict

    cfg = HubertConfig(**json.loads((parity / "hubert_tiny_config.json").read_text()))
    model = HubertModel(cfg)
    sd, digest = seeded_state_dict("hubert_tiny", parity / "init_hubert_tiny.tsv", digest=True)
    names = set(model.state_dict())
    renames = {"encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
               "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v"}
    sd = {(renames[k] if k not in names and k in renames else k): v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True, "sampling_rate": 16000}))
    return digest


def capture_window(generator, f):
    """Run one window of the fixture through this project's generator; returns {fixture key: array} for
    every output and intermediate the fixture holds (same layouts), plus the SQA inputs as tensors."""
    import torch

    from echomask.core.model.gen_layers import decoder_with_attention

    g = generator
    caps, handles = {}, []

    def hook(name, pick=lambda o: o):
        def h(mod, args, out):
            caps[name] = pick(out).detach()
        return h

    def add(mod, name, pick=lambda o: o):
        handles.append(mod.register_forward_hook(hook(name, pick)))

    for p in ("face", "hands", "upper", "lower"):
        add(getattr(g.mam, f"{p}_decoder_low"), f"mam_{p}_low")
        add(getattr(g.mam, f"{p}_decoder_high"), f"mam_{p}_high")
        add(getattr(g.mam, f"motion_encoder_{p}_3"), f"cond_{p}")
    add(g.motion_encoder, "body_hint")
    add(g.feature2face, "face_memory")
    add(g.face_decoder, "face_decoded")
    add(g.face1d_2, "face_latent_prezq", lambda o: o.transpose(1, 2))
    add(g.motion_self_encoder, "motion_self_encoded")
    add(g.body1d, "body1d_out", lambda o: o.transpose(1, 2))
    for p in ("upper", "hands", "lower"):
        add(getattr(g, f"{p}1d"), f"{p}_latent_prezq", lambda o: o.transpose(1, 2))
    for mod, p in (("hands_face_decoder", "hands"), ("face_hands_decoder", "face"),
                   ("upper_hands_decoder", "upper"), ("lower_hands_decoder", "lower")):
        add(getattr(g, mod), f"{p}_refined")
    sqa_in = {}

    def sqa_hook(mod, args, out):
        sqa_in["conds"], sqa_in["motion"] = args[0], args[1]
        caps["sqa_word_hints"] = out[0].detach()
    handles.append(g.sqa.register_forward_hook(sqa_hook))
    try:
        with torch.no_grad():
            out = g(torch.from_numpy(f["in_motion"]), torch.from_numpy(f["in_mask"][..., 0] > 0.5),
                    torch.from_numpy(f["in_hubert_hid"]), torch.from_numpy(f["in_hubert"]),
                    torch.from_numpy(f["in_id"][:, 0, 0]))
    finally:
        for h in handles:
            h.remove()
    res = {k: v.numpy() for k, v in caps.items()}
    for p in ("face", "upper", "lower", "hands"):
        logits = out["logits"][p]                                    # (B, N, L, K)
        res[f"cls_{p}"] = logits.permute(0, 1, 3, 2).numpy()         # (B, N, K, L)
        res[f"tokens_{p}"] = torch.log_softmax(logits, -1).argmax(-1).numpy()
        res[f"rec_{p}"] = out["features"][p].permute(0, 2, 1, 3).unsqueeze(2).numpy()  # (B, L, 1, N, d)
    res["sqa_motion_in"] = sqa_in["motion"].numpy()
    for p in ("hands", "upper", "lower"):
        res[f"sqa_cond_{p}"] = sqa_in["conds"][p].numpy()
    # need_weights path (what training uses): per-layer head-averaged cross-attention and frame scores.
    with torch.no_grad():
        fused = []
        for i, p in enumerate(("hands", "upper", "lower")):
            _, maps = decoder_with_attention(g.sqa.shared_transformer_decoder, sqa_in["conds"][p], sqa_in["motion"])
            res[f"sqa_cross_attn_{p}"] = maps.numpy()
            res[f"sqa_frame_score_{p}"] = maps.mean(dim=(0, 2)).numpy()
            fused.append(g.sqa.fusion_weights[i] * maps.mean(dim=(0, 2)))
        res["sqa_fused_frame_score"] = torch.stack(fused).mean(0).numpy()
        hints, score = g.sqa(sqa_in["conds"], sqa_in["motion"], need_scores=True)
        res["sqa_need_weights_hints"] = hints.numpy()
        res["sqa_block_score"] = score.numpy()
    return res
