"""The held-out tails (`core eval --tail 0.15`, the project's FGD) over several decoding seeds, for any weights
and decoding options: one row per (weights, options, seed) and the mean per (weights, options). FGD's seed
spread on 18.6 s of tails is +-15-25, so compare means. Report only: decoding defaults are chosen on speech
no training used (bench/select_checkpoint.py), never here. Needs ../shared/data.

    python bench/eval_tails_seeds.py [--weights W ...] [--seeds 0 1 2 3 4] [--options "levels=0" "levels=1 intensity=1.3"]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

from common import ROOT, import_repo_as_package
from select_checkpoint import option_value

GT_CLIPS = ("2_scott_0_1_1", "2_scott_0_2_2")
COLUMNS = ("FGD", "L1div", "jerk", "skating", "speed")   # skating in cm/s, speed over the ground truth's


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", default=[str(ROOT / "weights" / "echomask_small.safetensors")])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--options", nargs="+", default=[""],
                    help='decoding option sets, each "name=value name=value" ("" = the defaults)')
    ap.add_argument("--out", default=None, help="folder for the takes (default: a temp folder)")
    args = ap.parse_args(argv)
    import_repo_as_package()

    from echomask.core.generation.inference import generate
    from echomask.core.model.checkpoint import load_model
    from echomask.core.motion.take import save_take
    from echomask.core.speech.audio import load_speech
    from echomask.core.training.data import default_shared_data_dir

    data = default_shared_data_dir() / "beat2_samples"
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="echomask_tails_"))
    speech = {c: load_speech(data / "wave16k" / f"{c}.wav") for c in GT_CLIPS}
    systems, groups = [], {}
    for wi, weights in enumerate(args.weights):
        m = load_model(weights)
        for oi, spec in enumerate(args.options):
            kw = {k.replace("-", "_"): option_value(v) for k, _, v in (x.partition("=") for x in spec.split())}
            group = f"w{wi}_o{oi}"
            w = pathlib.Path(weights)
            groups[group] = f"{w.parent.name}/{w.name} [{spec or 'defaults'}]"
            for seed in args.seeds:
                name = f"{group}_s{seed}"
                (out / name).mkdir(parents=True, exist_ok=True)
                for clip, audio in speech.items():
                    save_take(generate(audio, model=m, seed=seed, threads=1, **kw), out / name / f"{clip}.npz")
                systems += ["--system", f"{name}={out / name}"]
    subprocess.run([sys.executable, "-m", "core", "eval", "--reference", str(data / "smplxflame_30"),
                    "--audio", str(data / "wave16k"), "--tail", "0.15", "--no-baselines", *systems,
                    "--out", str(out / "heldout.md"), "--json", str(out / "heldout.json")],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    scored = json.loads((out / "heldout.json").read_text())["systems"]
    gt_speed = next(v["mean_speed"] for k, v in scored.items() if k.startswith("ground truth"))
    rows = {}
    for label, v in scored.items():
        name = label.split(" ")[0]
        if name.split("_s")[0] in groups:
            rows[name] = [v["fgd"], v["l1div"], v["jerk"], 100.0 * v["foot_skating"], v["mean_speed"] / gt_speed]
    print(f"held-out tails, takes in {out}")
    print(f"{'system':60s} {'seed':>5} " + " ".join(f"{k:>8}" for k in COLUMNS))
    for group, label in groups.items():
        mine = [(name.rsplit('_s', 1)[1], v) for name, v in rows.items() if name.rsplit("_s", 1)[0] == group]
        for seed, v in mine:
            print(f"{label:60s} {seed:>5} " + " ".join(f"{x:8.2f}" for x in v))
        if len(mine) > 1:
            mean = [sum(v[i] for _, v in mine) / len(mine) for i in range(len(COLUMNS))]
            print(f"{label:60s} {'mean':>5} " + " ".join(f"{x:8.2f}" for x in mean), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
