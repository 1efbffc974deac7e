"""Do the token prior's chains need to agree across body parts? The product's prior (core.model.token_prior)
samples each part's level-0 chain on its own, so the plan may pair arms with fingers or legs that never went
together. Here the upper body's chain is sampled as in the product and the hands' and legs' chains lean on it:
q(h_t | h_{t-1}, u_t) ∝ P(h_t | h_{t-1}) (P(h_t | u_t) / P(h_t))^gamma, with P(h | u) counted from the same
training tokens (128 x 128 co-occurrences per part pair: aggregate statistics). The face stays on its own. A
research script: the patch lives here.

    python bench/experiment_joint_prior.py --gamma 1 --seeds 0 1 2 3 4 [--tails]

Needs ../shared/data.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from common import add_decoding_experiment_args, bundled_model_and_capture, import_repo_as_package, score_decoding_in_process

LEADER = "upper"
FOLLOWERS = ("hands", "lower")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gamma", type=float, default=1.0)
    add_decoding_experiment_args(ap)
    args = ap.parse_args(argv)
    import_repo_as_package()

    from echomask.core.generation.token_prior import prior_entries, training_token_sequences
    from echomask.core.model.token_prior import ADDITIVE_SMOOTHING, TokenPrior

    weights, model, gt = bundled_model_and_capture()
    seqs, _ = training_token_sequences(model.tokenizers, model.config.window, prior_entries(gt), log=lambda *a: None)
    k = model.config.tokenizer.nb_code
    tilt = {}
    for p in FOLLOWERS:
        co = np.full((k, k), ADDITIVE_SMOOTHING)          # co[u, h]: upper token u with follower token h
        for su, sp in zip(seqs[LEADER], seqs[p]):
            np.add.at(co, (su, sp), 1.0)
        cond = co / co.sum(1, keepdims=True)              # P(h | u)
        marg = co.sum(0) / co.sum()                       # P(h)
        tilt[p] = (cond / marg[None]) ** args.gamma
    original = TokenPrior.sample

    def joint_sample(self, n_tok, rng, fixed=None):
        out = original(self, n_tok, rng, fixed)             # the leader (and the face) as in the product
        for p in FOLLOWERS:
            pins = None if fixed is None else np.asarray(fixed[p])
            seq = out[p].copy()
            draws = rng.random(n_tok)
            for i in range(1, n_tok):
                if pins is not None and pins[i] >= 0:
                    seq[i] = pins[i]
                    continue
                q = self.transitions[p][seq[i - 1]] * tilt[p][out[LEADER][i]]
                seq[i] = min(int(np.searchsorted(np.cumsum(q / q.sum()), draws[i])), k - 1)
            out[p] = seq
        return out

    TokenPrior.sample = joint_sample
    score_decoding_in_process(weights, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
