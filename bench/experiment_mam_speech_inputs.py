"""Which speech inputs let the MAM's joint speech-motion space generalise to speech it was not trained on?
A fresh MAM (the small config's) is trained alone (its InfoNCE + MSE losses, on the generator's training
windows: the shared manifest, mirroring and time-stretch as in training) with all of the built-in speech
features, or with some of them replaced by their training mean (no information):

    full       80 log-mel bands + onset + loudness + pitch + voicing; phone posteriors + speech flag
    prosody    onset, loudness, pitch, voicing and the speech flag only (no spectrum, no phones)
    bands      prosody + the log-mel averaged into 8 bands (coarse timbre; what motion matching reads)
    nophones   full without the phone posteriors

and scored, every --eval-every steps, by bench/probe_mam_alignment.py's AUC (its functions): per part, the share of pairs of
windows where a window's own motion scores above another's under its speech (0.5 = chance), on training and
held-out windows. A research script: nothing here changes the product. Needs ../shared/data.

    python bench/experiment_mam_speech_inputs.py [--inputs full prosody bands] [--steps 600] [--seed 0]
"""
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
from common import import_repo_as_package
from probe_mam_alignment import own_motion_auc, speech_motion_scores

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "echomask_small.safetensors"),
                    help="the config and tokenizers come from these weights (their MAM is not used)")
    ap.add_argument("--inputs", nargs="+", default=["full", "prosody", "bands"],
                    choices=("full", "prosody", "bands", "nophones"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import_repo_as_package()
    import torch

    from echomask.core.model.checkpoint import load_model
    from echomask.core.model.generator import EchoMaskGenerator
    from echomask.core.motion.skeleton import PARTS
    from echomask.core.speech.builtin import PHONE_POSTERIORS
    from echomask.core.training import train as T
    from echomask.core.training.data import shared_training_manifest

    m = load_model(args.weights)
    cfg = m.config
    features = T.builtin_feature_fn(cfg.generator.speech_backend, T.default_cache_dir())
    entries = shared_training_manifest()
    log = lambda *a: None
    train = T.GeneratorData(entries, m.tokenizers, cfg, features, "train", log=log)
    gt = [e for e in entries if e.kind == "gt"]
    train_eval = T.GeneratorData(gt, m.tokenizers, cfg, features, "train", log=log, mirror=False, stretch=())
    val = T.GeneratorData(gt, m.tokenizers, cfg, features, "val", takes=train_eval.ds.takes, log=log)
    lm, ls, hm, hs = train.speech_stats()
    print(f"training windows {len(train)} (with mirroring and stretch), scored: training {len(train_eval)}, "
          f"held-out {len(val)}")

    def blind(mam, low, high, inputs):
        """Speech features with the columns this variant does not read set to their training mean."""
        if inputs in ("bands", "prosody"):   # the generator's own coarsening (GeneratorConfig.body_speech)
            return mam.coarse_speech(low, high, inputs)
        low, high = low.clone(), high.clone()
        if inputs == "nophones":
            high[..., PHONE_POSTERIORS] = torch.as_tensor(hm[PHONE_POSTERIORS], dtype=high.dtype)
        return low, high

    def auc_table(mam, inputs):
        out = {}
        for name, data in (("training", train_eval), ("held-out", val)):
            b = data.batch(np.arange(len(data)), "cpu")
            with torch.inference_mode():
                cond = mam.speech_branch(*blind(mam, b["low"], b["high"], inputs))
                for p in PARTS:
                    sim = speech_motion_scores(mam, m.tokenizers[p], p, cond[p], b["codes"][p])
                    out[name, p] = own_motion_auc(sim)
        return out

    results = {}
    for inputs in args.inputs:
        torch.manual_seed(args.seed)
        gen = torch.Generator().manual_seed(args.seed)
        mam = EchoMaskGenerator(cfg).mam
        mam.speech_low.set_stats(lm, ls)
        mam.speech_high.set_stats(hm, hs)
        opt = torch.optim.Adam(mam.parameters(), lr=args.lr, betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
        t0 = time.time()
        for step in range(1, args.steps + 1):
            mam.train()
            idx = torch.randint(len(train), (args.batch_size,), generator=gen).numpy()
            b = train.batch(idx, "cpu")
            low, high = blind(mam, b["low"], b["high"], inputs)
            cond = mam.speech_branch(low, high)
            with torch.no_grad():
                latents = {p: m.tokenizers[p].latent_per_level(b["codes"][p]).sum(2) for p in PARTS}
            losses = mam.losses(cond, latents, b["part_mask"])
            loss = losses["mam_nce"] + losses["mam_mse"]
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(mam.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % args.eval_every == 0 or step == args.steps:
                mam.eval()
                a = auc_table(mam, inputs)
                results[inputs, step] = a
                print(f"{inputs:9s} step {step:4d} nce {float(losses['mam_nce'].detach()):.3f} ({time.time() - t0:.0f} s) | "
                      + " ".join(f"{p} {a['training', p]:.2f}/{a['held-out', p]:.2f}" for p in PARTS), flush=True)
    print("\nAUC training / held-out per part (0.5 = chance). Last step:")
    for inputs in args.inputs:
        a = results[inputs, args.steps]
        body = np.mean([a["held-out", p] for p in PARTS if p != "face"])
        print(f"  {inputs:9s} " + " ".join(f"{p} {a['training', p]:.3f}/{a['held-out', p]:.3f}" for p in PARTS)
              + f" | body held-out mean {body:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
