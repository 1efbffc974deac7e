"""Can the token prior read the speech without keeping any window of the capture? The product's token prior
(core.generation.token_prior) samples each window's level-0 chain from a bigram of the training tokens, speech
ignored; a retrieval bank's nearest window (speech-chosen) scored far better on the held-out tails, and about 27
of its 41 points came from the speech choice (weights/MODEL_CARD.md). Here the training windows' MAM speech keys
are clustered (spherical k-means, C clusters) and each cluster keeps only its level-0 token frequencies per part
(aggregate statistics, like the bigram); each window's chain is sampled from the bigram reweighted by its nearest
cluster's frequencies: q(b | a) ∝ P(b | a) (u_c(b) / u(b))^gamma. A research script: the patch lives here.

    python bench/experiment_cluster_prior.py --clusters 8 --gamma 1 --seeds 0 1 2 3 4 [--tails]

Prints the speech-only clips' FGD (bench/select_checkpoint.py's measure) and, with --tails, the held-out tails'
(bench/eval_tails_seeds.py's). Needs ../shared/data.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from common import add_decoding_experiment_args, bundled_model_and_capture, import_repo_as_package, score_decoding_in_process


def spherical_kmeans(keys: np.ndarray, c: int, rng, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (c, D) unit, assignment (N,)) of unit vectors `keys` (N, D)."""
    cent = keys[rng.choice(len(keys), c, replace=False)]
    for _ in range(iters):
        assign = (keys @ cent.T).argmax(1)
        for j in range(c):
            members = keys[assign == j]
            if len(members):
                v = members.sum(0)
                cent[j] = v / max(np.linalg.norm(v), 1e-8)
    return cent, (keys @ cent.T).argmax(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=8)
    ap.add_argument("--gamma", type=float, default=1.0)
    add_decoding_experiment_args(ap)
    args = ap.parse_args(argv)
    import_repo_as_package()
    import torch

    from echomask.core.generation import loop
    from echomask.core.generation.retrieval import build_retrieval_bank, speech_keys
    from echomask.core.motion.skeleton import PARTS

    weights, model, gt = bundled_model_and_capture()
    bank = build_retrieval_bank(model, gt, log=lambda *a: None)
    keys = bank.keys.numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    cent, assign = spherical_kmeans(keys, args.clusters, rng)
    prior = model.token_prior
    k = prior.n_codes
    ratio = {}
    for p in PARTS:
        toks = bank.tokens[p].numpy()
        glob = np.bincount(toks.ravel(), minlength=k) + 1.0
        glob /= glob.sum()
        r = np.ones((args.clusters, k))
        for j in range(args.clusters):
            # frequencies in the cluster, shrunk towards the global ones (a cluster holds a few windows)
            cnt = np.bincount(toks[assign == j].ravel(), minlength=k)
            u = (cnt + 20.0 * glob) / (cnt.sum() + 20.0)
            r[j] = (u / glob) ** args.gamma
        ratio[p] = r
    sizes = np.bincount(assign, minlength=args.clusters)
    print(f"{len(keys)} training windows in {args.clusters} clusters (sizes {sizes.min()}-{sizes.max()})", flush=True)
    cent_t = torch.from_numpy(cent.astype(np.float32))
    sampler = np.random.default_rng(12345)

    def reweighted(choose):
        def run(*a, level0_prior=None, **kw):
            if level0_prior is not None:
                cond = a[4]
                j = int((speech_keys(cond).cpu() @ cent_t.T)[0].argmax())
                out = {}
                for p, v in level0_prior.items():
                    rows = v.sum(-1, keepdim=True)               # strength x speaking share per token (0: pause)
                    if float(rows.sum()) == 0.0:
                        out[p] = v
                        continue
                    n = v.shape[0]
                    seq = np.empty(n, np.int64)
                    seq[0] = int(v[0].argmax())                  # the window's seed token
                    for i in range(1, n):
                        q = prior.transitions[p][seq[i - 1]] * ratio[p][j]
                        seq[i] = sampler.choice(k, p=q / q.sum())
                    out[p] = torch.nn.functional.one_hot(torch.from_numpy(seq), k).float() * rows
                level0_prior = out
            return choose(*a, level0_prior=level0_prior, **kw)
        return run

    loop.refine_window = reweighted(loop.refine_window)
    score_decoding_in_process(weights, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
