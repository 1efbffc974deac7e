"""Sweep of the retrieval prior (core.generation.retrieval, `generate --retrieval-bank`): a bank of the training
*capture* (the ground-truth takes without their held-out tails) for the given weights, then each prior weight
`--lam` and seed scored on the held-out tails (`core eval`, the project's FGD) and on the speech-only clips
(FGD against the training capture: biased towards retrieval, whose bank is that capture). Needs
../shared/data. Results: weights/MODEL_CARD.md, "Experiments after these weights" (its top-k and transition-
cost variants were run with this script's first version, commit 159772f).

    python bench/experiment_retrieval_prior.py --lam 0 4 --seeds 0 1 2 [--out DIR]
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

from common import ROOT, import_repo_as_package, speed_and_jerk, training_capture

GT_CLIPS = ("2_scott_0_1_1", "2_scott_0_2_2")
SPEECH_ONLY = ("2_scott_0_3_3", "2_scott_0_4_4", "2_scott_0_5_5")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "echomask_small.safetensors"))
    ap.add_argument("--lam", type=float, nargs="+", default=[0.0, 4.0], help="prior weights (0 = the model alone)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--seconds", type=float, default=40.0, help="speech used per speech-only clip")
    ap.add_argument("--levels", type=int, default=None, help="RVQ levels kept in the take (default: generate's)")
    ap.add_argument("--out", default=None, help="folder for the takes (default: a temp folder)")
    args = ap.parse_args(argv)
    import_repo_as_package()

    from echomask.core.generation.inference import generate
    from echomask.core.generation.retrieval import build_retrieval_bank
    from echomask.core.metrics.evaluate import load_fgd_evaluator
    from echomask.core.metrics.fgd_evaluator import latents
    from echomask.core.metrics.frechet import frechet_distance
    from echomask.core.model.checkpoint import load_model
    from echomask.core.motion.take import save_take
    from echomask.core.speech.audio import load_speech
    from echomask.core.training.data import default_shared_data_dir

    data = default_shared_data_dir() / "beat2_samples"
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="echomask_retrieval_"))
    out.mkdir(parents=True, exist_ok=True)
    m = load_model(args.weights)
    capture, gt = training_capture()
    bank = out / "bank.safetensors"
    build_retrieval_bank(m, gt, log=lambda *a: None).save(bank)
    print(f"bank of the training capture: {bank}; takes in {out}", flush=True)
    evaluator, _ = load_fgd_evaluator(None)
    ref = latents(evaluator, capture)
    cap_speed, cap_jerk = speed_and_jerk(capture)
    systems = []
    for lam in args.lam:
        # token_prior 0: λ 0 is the model alone (the weights' token prior would otherwise stand in for the bank)
        kw = dict(model=m, retrieval_bank=str(bank), retrieval_weight=lam, threads=1, levels=args.levels, token_prior=0)
        for seed in args.seeds:
            name = f"lam{lam:g}_seed{seed}"
            (out / name).mkdir(parents=True, exist_ok=True)
            for clip in GT_CLIPS:
                save_take(generate(load_speech(data / "wave16k" / f"{clip}.wav"), seed=seed, **kw),
                          out / name / f"{clip}.npz")
            unseen = [generate(load_speech(data / "wave16k" / f"{c}.wav")[: int(args.seconds * 16000)],
                               seed=seed, **kw) for c in SPEECH_ONLY]
            speed, jerk = speed_and_jerk(unseen)
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
