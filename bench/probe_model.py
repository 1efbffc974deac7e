"""Does a model read its inputs? Level-0 cross-entropy per part on held-out and training windows, by how much
of the motion it sees (0, 4 = the seed, 24, 60 of 64 frames) and with another window's speech, next to the
unigram and bigram baselines of the training tokens (core.training.diagnostics). Needs ../shared/data.

    python bench/probe_model.py [--weights weights/echomask_small.safetensors] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import pathlib
from common import import_repo_as_package

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "echomask_small.safetensors"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import_repo_as_package()
    import numpy as np
    import torch

    from echomask.core.training import train as T
    from echomask.core.model.checkpoint import load_model
    from echomask.core.training.data import shared_training_manifest
    from echomask.core.training.diagnostics import format_table, run_probes, token_baselines
    from echomask.core.motion.skeleton import PARTS

    torch.manual_seed(0)
    torch.set_num_threads(1)
    m = load_model(args.weights)
    features = T.builtin_feature_fn(m.config.generator.speech_backend, T.default_cache_dir())
    entries = shared_training_manifest()
    train = T.GeneratorData(entries, m.tokenizers, m.config, features, "train", log=lambda *a: None)
    val = T.GeneratorData(entries, m.tokenizers, m.config, features, "val", takes=train.ds.takes, log=lambda *a: None)
    windows = np.sort(np.random.default_rng(1234).choice(len(train), min(96, len(train)), replace=False))
    nb = m.config.tokenizer.nb_code
    out = {"weights": args.weights, "step": m.meta.get("step"), "chance": float(np.log(nb))}
    for name, data, idx in (("held-out", val, None), ("training", train, windows)):
        probes = run_probes(m.generator, data, "cpu", max_windows=256, indices=idx, tokenizers=m.tokenizers)
        codes = val.codes if idx is None else {p: train.codes[p][idx] for p in PARTS}
        base = token_baselines(train.codes, codes, nb)
        print(format_table(probes, base, f"{name} windows ({probes['windows']}): level-0 CE (nats) of the hidden "
                                         f"tokens by visible frames; chance {np.log(nb):.2f}"))
        print()
        out[name] = {"probes": probes, "baselines": base}
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
