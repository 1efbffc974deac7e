"""Speed of the official release's pipeline (the `paper` model, 222 M parameters at inference): seconds of
compute per second of speech, split into HuBERT features and the generator (window loop, decoding,
translation).

    python bench/bench_paper.py                      # 20 s of speech, CPU, 2 threads
    python bench/bench_paper.py --seconds 60 --device cuda --json out.json

Model weights: the converted release (weights/echomask_paper/model.safetensors) when present, else the
`paper` architecture with random weights (weights do not change the amount of compute). HuBERT is timed
in up to three forms, each labelled: the real HuBERT-large when found locally; the HuBERT-large
ARCHITECTURE with random weights (same compute as the real one; no download needed); and the tiny seeded
HuBERT of the parity fixtures (NOT representative of HuBERT-large's cost; only when ../shared is present).
Wall and process-CPU seconds, best of --repeat; the load average is printed because other jobs on a shared
machine inflate wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARITY = ROOT.parent / "shared" / "data" / "official_parity"
BUNDLE = ROOT / "weights" / "echomask_paper" / "model.safetensors"


def speech(seconds: float) -> np.ndarray:
    """A speech-like test signal (voiced harmonics with moving pitch, syllable envelope, pauses)."""
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) * (np.sin(2 * np.pi * 0.2 * t) > -0.6)
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.01
    return (0.2 * voiced * env + noise).astype(np.float32)


def paper_model(device):
    """(generator, tokenizers, global-motion net, projection, label)."""
    import torch

    from core.official.convert import load_official_extras, paper_config
    from core.official.global_motion import GlobalMotionNet
    from core.speech.hubert import regenerate_projection

    if BUNDLE.is_file():
        from core.model.checkpoint import load_model

        m = load_model(BUNDLE, expected_config="paper", device=device)
        gm, proj = load_official_extras(BUNDLE, device=device)
        return m.generator, m.tokenizers, gm, proj, "converted official release"
    from core.model.generator import EchoMaskGenerator
    from core.model.tokenizer import TokenizerSet
    from core.motion.skeleton import PARTS

    torch.manual_seed(0)
    cfg = paper_config()
    tok = TokenizerSet(cfg)
    for p in PARTS:
        for layer in tok[p].quantizer.layers:
            layer.codebook.normal_(0, 0.02)
    gen = EchoMaskGenerator(cfg)
    return (gen.eval().to(device), tok.eval().to(device), GlobalMotionNet().eval().to(device),
            regenerate_projection().to(device), "paper architecture, random weights (speed only)")


def build_tiny_hubert(folder: pathlib.Path) -> pathlib.Path:
    """The parity fixtures' tiny seeded HubertModel (hidden 1024, 12 layers, FFN 128, 16-channel convs)."""
    from transformers import HubertConfig, HubertModel

    from core.official.seeded import seeded_state_dict

    cfg = HubertConfig(**json.loads((PARITY / "hubert_tiny_config.json").read_text()))
    model = HubertModel(cfg)
    model.load_state_dict(seeded_state_dict("hubert_tiny", PARITY / "init_hubert_tiny.tsv"), strict=True)
    model.save_pretrained(str(folder))
    return folder


def main(argv=None) -> int:
    import tempfile

    import torch

    from core.speech import hubert as H
    from core.official.pipeline import HOP, SEED, neutral_seed, run_release

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    audio = speech(args.seconds)
    n_frames = int(round(len(audio) * 30 / 16000))
    n_windows = max(1, int(np.ceil((n_frames - SEED) / HOP)))
    total = SEED + HOP * n_windows
    audio = np.concatenate([audio, np.zeros(max(0, int(round(total * 16000 / 30)) - len(audio)), np.float32)])
    print(f"{args.seconds:g} s of speech = {n_frames} frames, {n_windows} windows; device {dev}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    gen, tok, gm, proj, model_label = paper_model(dev)
    results = {"seconds": args.seconds, "device": str(dev), "threads": args.threads, "model": model_label,
               "hubert": {}, "load_average": os.getloadavg()[0]}

    def timed(fn):
        best = None
        for _ in range(args.repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            value = fn()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            best = (w, c, value) if best is None or w < best[0] else best
        return best

    feats = None
    with tempfile.TemporaryDirectory() as tmp:
        variants = []
        try:
            variants = hubert_variants(pathlib.Path(tmp))
        except Exception as exc:
            print(f"HuBERT timing skipped: {exc}")
        for label, folder in variants:
            H._MODELS.clear()
            H.load_hubert(folder, dev)  # load outside the timing
            fn = H.release_feature_fn(proj, str(folder), device=dev)
            wall, cpu, (hid, last) = timed(lambda: fn(audio, total))
            feats = feats or (hid, last)
            results["hubert"][label] = {"wall_s": wall, "cpu_s": cpu, "wall_per_speech_s": wall / args.seconds}
            print(f"HuBERT [{label}]: {wall:.2f} s wall ({cpu:.2f} s CPU) = {wall / args.seconds:.3f} s per s of speech")
    if feats is None:
        rng = np.random.default_rng(0)
        feats = (rng.standard_normal((total, 256)).astype(np.float32),) * 2
        print("HuBERT not timed (transformers missing): generator fed random features")
    seed, start = neutral_seed()
    wall, cpu, _ = timed(lambda: run_release(gen, tok, gm, feats[1], feats[0], seed, start, n_windows=n_windows,
                                             record=False))
    results["generator"] = {"wall_s": wall, "cpu_s": cpu, "wall_per_speech_s": wall / args.seconds,
                            "wall_per_window_s": wall / n_windows}
    print(f"generator [{model_label}]: {wall:.2f} s wall ({cpu:.2f} s CPU) = {wall / args.seconds:.3f} s per s of "
          f"speech ({wall / n_windows:.2f} s per window)")
    results["load_average_end"] = os.getloadavg()[0]
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def hubert_variants(tmp: pathlib.Path):
    """[(label, folder)]: real HuBERT-large if found, else its architecture with random weights; plus the
    tiny seeded HuBERT of the fixtures when ../shared is present."""
    from core.speech import hubert as H

    H.require_transformers()
    out = []
    try:
        out.append(("HuBERT-large (real weights)", H.find_hubert_folder()))
    except Exception:
        from transformers import HubertConfig, HubertModel

        cfg = HubertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                           conv_dim=(512,) * 7, do_stable_layer_norm=True, feat_extract_norm="layer",
                           conv_bias=True, feat_proj_layer_norm=True)
        folder = tmp / "hubert_large_random"
        HubertModel(cfg).save_pretrained(str(folder))
        out.append(("HuBERT-large architecture, RANDOM weights (real model absent; same compute)", folder))
    if PARITY.is_dir():
        out.append(("TINY seeded HuBERT of the parity fixtures (NOT HuBERT-large: not representative)",
                    build_tiny_hubert(tmp / "hubert_tiny")))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
