"""Experiment (not a product feature): a retrieval-augmented token prior at decoding time. Each window's
speech, as the MAM speech branch encodes it, retrieves the nearest windows of the training *capture* (the
ground-truth takes without their held-out tails); their level-0 tokens are added to the generator's level-0
logits as a prior of weight `--lam` (one-hot, averaged over the `--topk` nearest). `--beta` adds a transition
cost: the distance between the window's seed frames and each candidate's first frames (standardised).
Scores the result on the held-out tails (`core eval`, the project's FGD) and on the speech-only clips (FGD
against the training capture: biased towards retrieval, whose bank is that capture). Needs ../shared/data.
Results: weights/MODEL_CARD.md, "Experiments after these weights".

    python bench/experiment_retrieval_prior.py --lam 0 4 --seeds 0 1 2 [--topk 1] [--beta 0] [--out DIR]
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

from common import ROOT, import_repo_as_package

GT_CLIPS = ("2_scott_0_1_1", "2_scott_0_2_2")
SPEECH_ONLY = ("2_scott_0_3_3", "2_scott_0_4_4", "2_scott_0_5_5")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "echomask_small.safetensors"))
    ap.add_argument("--lam", type=float, nargs="+", default=[0.0, 4.0], help="prior weights (0 = the model alone)")
    ap.add_argument("--topk", type=int, default=1)
    ap.add_argument("--beta", type=float, default=0.0, help="transition cost weight (0 = speech only)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--seconds", type=float, default=40.0, help="speech used per speech-only clip")
    ap.add_argument("--out", default=None, help="folder for the takes (default: a temp folder)")
    args = ap.parse_args(argv)
    import_repo_as_package()
    import numpy as np
    import torch

    from echomask.core.generation.inference import generate
    from echomask.core.metrics.evaluate import load_fgd_evaluator
    from echomask.core.metrics.fgd_evaluator import latents
    from echomask.core.metrics.frechet import frechet_distance
    from echomask.core.metrics.kinematics import take_positions
    from echomask.core.model.checkpoint import load_model
    from echomask.core.motion.skeleton import PARTS
    from echomask.core.motion.take import load_take, save_take
    from echomask.core.speech.audio import load_speech
    from echomask.core.training.data import default_shared_data_dir, shared_training_manifest
    from echomask.core.training.generator_data import GeneratorData, builtin_feature_fn, default_cache_dir

    torch.set_num_threads(1)
    data = default_shared_data_dir() / "beat2_samples"
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="echomask_retrieval_"))
    m = load_model(args.weights)
    gen, cfg = m.generator, m.config
    gt = [e for e in shared_training_manifest() if e.kind == "gt"]
    bank = GeneratorData(gt, m.tokenizers, cfg, builtin_feature_fn(cfg.generator.speech_backend, default_cache_dir()),
                         "train", log=lambda *a: None, mirror=False, stretch=())
    keys, starts = [], []
    with torch.inference_mode():
        for lo in range(0, len(bank), 64):
            b = bank.batch(np.arange(lo, min(len(bank), lo + 64)), "cpu")
            c = gen.mam.speech_branch(b["low"], b["high"])                # {part: (B, T, d)}
            keys.append(torch.cat([c[p].flatten(1) for p in PARTS], 1))
            starts.append(b["motion"][:, :cfg.seed_frames].flatten(1))    # (B, seed * 337)
    keys = torch.nn.functional.normalize(torch.cat(keys), dim=1)
    starts = torch.cat(starts)
    scale = starts.std(0).clamp_min(0.05)
    starts = starts / scale
    print(f"bank: {len(bank)} windows of the training capture; takes in {out}", flush=True)

    prior = {"lam": 0.0}
    model_forward = gen.forward

    def forward_with_prior(motion, *a, cond=None, **k):
        res = model_forward(motion, *a, cond=cond, **k)
        if prior["lam"] <= 0 or cond is None:
            return res
        q = torch.nn.functional.normalize(torch.cat([cond[p].flatten(1) for p in PARTS], 1), dim=1)
        score = (q @ keys.T)[0]
        if args.beta > 0:
            dist = ((starts - motion[0, :cfg.seed_frames].flatten()[None] / scale) ** 2).mean(1)
            score = score - args.beta * dist / dist.median()
        top = score.topk(args.topk).indices
        for p in PARTS:
            logits = res["logits"][p].clone()                             # (1, N, L, K)
            tokens = bank.codes[p][top][:, :, 0].to(logits.device)       # (k, N)
            onehot = torch.nn.functional.one_hot(tokens, logits.shape[-1]).to(logits.dtype).mean(0)
            logits[0, :, 0, :] += prior["lam"] * onehot
            res["logits"][p] = logits
        return res

    gen.forward = forward_with_prior
    capture = [load_take(e.npz) for e in gt]
    capture = [t.slice(0, t.num_frames - int(round(t.num_frames * e.holdout))) for t, e in zip(capture, gt)]
    evaluator, _ = load_fgd_evaluator(None)
    ref = latents(evaluator, capture)

    def speed_jerk(takes):
        s = [np.linalg.norm(np.diff(take_positions(t, with_translation=False), axis=0), axis=-1).mean() * t.fps
             for t in takes]
        j = [np.linalg.norm(np.diff(take_positions(t, with_translation=False), 3, axis=0), axis=-1).mean() * t.fps ** 3
             for t in takes]
        return float(np.mean(s)), float(np.mean(j))

    cap_speed, cap_jerk = speed_jerk(capture)
    systems = []
    for lam in args.lam:
        prior["lam"] = lam
        for seed in args.seeds:
            name = f"lam{lam:g}_k{args.topk}_beta{args.beta:g}_seed{seed}"
            (out / name).mkdir(parents=True, exist_ok=True)
            for clip in GT_CLIPS:
                save_take(generate(load_speech(data / "wave16k" / f"{clip}.wav"), model=m, seed=seed),
                          out / name / f"{clip}.npz")
            unseen = [generate(load_speech(data / "wave16k" / f"{c}.wav")[: int(args.seconds * 16000)],
                               model=m, seed=seed) for c in SPEECH_ONLY]
            speed, jerk = speed_jerk(unseen)
            fgd = frechet_distance(latents(evaluator, unseen), ref)
            print(f"{name}: speech-only clips FGD {fgd:.1f}, speed {speed / cap_speed:.2f}, jerk {jerk / cap_jerk:.2f}",
                  flush=True)
            systems += ["--system", f"{name}={out / name}"]
    table = out / "heldout.md"
    subprocess.run([sys.executable, "-m", "core", "eval", "--reference", str(data / "smplxflame_30"),
                    "--audio", str(data / "wave16k"), "--tail", "0.15", "--no-baselines", *systems,
                    "--out", str(table)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print("held-out tails (FGD, L1div, jerk, foot skating, speed / GT):")
    for line in table.read_text().splitlines():
        if line.startswith("| lam"):
            c = [x.strip() for x in line.strip("|").split("|")]
            print(f"  {c[0]}: FGD {c[1]}, L1div {c[4]}, jerk {c[8]}, skating {c[9]}, speed {c[12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
