"""Does the MAM's joint speech-motion space tell which motion goes with which speech, on speech it was not
trained on? Per part, each window's motion-aligned speech feature (the MAM speech branch, pooled to the token
rate) is compared (mean cosine over the window's tokens) with the MAM motion branch's encoding of every
window's motion: AUC = the share of (window, other window) pairs where the window's own motion scores higher
than the other's (0.5 = chance), and top-1 = the share of windows whose own motion scores highest. Training
windows (no mirroring or stretch) against held-out windows (the tails of the ground-truth takes). Also the
score of chains drawn from the bundled token bigram prior, against the windows' own motion: whether the
space could rank speech-blind candidates. And, token by token: the share of speech tokens whose best-scoring
motion token (among every token of every window) is in the same window, and the share where it sits at the same
time index of another window (a space that encodes the time within the window, not the speech); and how much
of the speech condition varies over time within a window rather than between windows. Needs
../shared/data.

    python bench/probe_mam_alignment.py [--weights weights/echomask_small.safetensors] [--chains 64]
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np
from common import import_repo_as_package

ROOT = pathlib.Path(__file__).resolve().parent.parent


def speech_motion_scores(mam, tokenizer, part: str, cond_part, codes, per_token: bool = False):
    """The MAM's joint-space scores of windows' speech against windows' motion: cond_part (B, T, d) speech
    branch output, codes (B', N, L) -> (B, B') mean cosine over the N tokens, or with per_token the token-level
    (B N, B' N) cosines. Also the unit motion vectors (B', N, d)."""
    import torch
    import torch.nn.functional as F

    n_tok = codes.shape[1]
    s = F.normalize(F.adaptive_avg_pool1d(cond_part.transpose(1, 2), n_tok).transpose(1, 2), dim=-1)
    motion = F.normalize(mam.motion_branch(part, tokenizer.latent_per_level(codes).sum(2)), dim=-1)
    if per_token:
        return s.reshape(-1, s.shape[-1]) @ motion.reshape(-1, motion.shape[-1]).T
    return torch.einsum("itd,jtd->ij", s, motion) / n_tok


def own_motion_auc(sim) -> float:
    """Share of (window, other window) pairs where the window's own motion (the diagonal) scores higher."""
    n = sim.shape[0]
    return float((sim.diag()[:, None] > sim).float().sum()) / (n * (n - 1))


def time_share(cond) -> float:
    """cond (B, T, d) -> the share of its variance (over windows and frames) that lies within windows, over
    time: 0 when each window's condition is one constant vector."""
    within = (cond - cond.mean(1, keepdim=True)).pow(2).mean()
    total = (cond - cond.mean((0, 1), keepdim=True)).pow(2).mean()
    return float(within / total.clamp_min(1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "echomask_small.safetensors"))
    ap.add_argument("--chains", type=int, default=64, help="token-prior chains scored per window (0: none)")
    args = ap.parse_args(argv)
    import_repo_as_package()
    import torch

    from echomask.core.model.checkpoint import load_model
    from echomask.core.motion.skeleton import PARTS
    from echomask.core.training import train as T
    from echomask.core.training.data import shared_training_manifest

    torch.manual_seed(0)
    m = load_model(args.weights)
    g = m.generator.eval()
    features = T.builtin_feature_fn(m.config.generator.speech_backend, T.default_cache_dir())
    entries = [e for e in shared_training_manifest() if e.kind == "gt"]
    train = T.GeneratorData(entries, m.tokenizers, m.config, features, "train", log=lambda *a: None,
                            mirror=False, stretch=())
    val = T.GeneratorData(entries, m.tokenizers, m.config, features, "val", takes=train.ds.takes,
                          log=lambda *a: None)
    rng = np.random.default_rng(0)
    prior = m.token_prior if args.chains > 0 else None

    print(f"{'windows':9s} {'part':6s} {'N':>4} {'AUC':>6} {'AUC L0':>7} {'top-1':>6} {'own':>6} {'others':>7}"
          + (f" {'chains':>7} {'best chain':>11}" if prior is not None else "") + f" {'same win':>9} {'same time':>10} {'over time':>10}")
    for name, data in (("training", train), ("held-out", val)):
        b = data.batch(np.arange(len(data)), "cpu")
        with torch.inference_mode():
            cond = g.mam.speech_branch(b["low"], b["high"])
            for p in PARTS:
                codes = b["codes"][p]                                          # (N, n_tok, L)
                n, n_tok = codes.shape[:2]
                full = speech_motion_scores(g.mam, m.tokenizers[p], p, cond[p], codes)   # speech i x motion j
                l0 = speech_motion_scores(g.mam, m.tokenizers[p], p, cond[p], codes[..., :1])
                top1 = float((full.argmax(1) == torch.arange(n)).float().mean())
                row = (f"{name:9s} {p:6s} {n:4d} {own_motion_auc(full):6.3f} {own_motion_auc(l0):7.3f} {top1:6.3f} "
                       f"{float(l0.diag().mean()):6.3f} {float(l0.mean()):7.3f}")
                if prior is not None:
                    chains = torch.from_numpy(np.stack([prior.sample(n_tok, rng)[p] for _ in range(args.chains)]))
                    sc = speech_motion_scores(g.mam, m.tokenizers[p], p, cond[p], chains[..., None])
                    row += f" {float(sc.mean()):7.3f} {float(sc.max(1).values.mean()):11.3f}"
                top = speech_motion_scores(g.mam, m.tokenizers[p], p, cond[p], codes, per_token=True).argmax(1)
                own = torch.arange(n * n_tok)
                same_window = top // n_tok == own // n_tok
                same_time = (top % n_tok == own % n_tok) & ~same_window
                row += f" {float(same_window.float().mean()):9.3f} {float(same_time.float().mean()):10.3f}"
                row += f" {time_share(cond[p]):10.3f}"
                print(row)
    print("AUC: own motion (every level) scores above another window's; AUC L0 and the scores: level 0 only, "
          "as the prior's chains have; own / others / chains: mean cosine; best chain: mean of each window's best; "
          f"same win / same time: where each speech token's best motion token is (chance: same window 1/N); "
          "over time: the share of the speech condition's variance that is over time within a window (0 = one "
          "vector per window, a summary of it; 1 = every window has the same average).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
