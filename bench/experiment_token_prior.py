"""Where the retrieval prior's gain comes from, and whether a prior that is not a copy of the capture gets it:
`bench/experiment_retrieval_prior.py` with the level-0 token prior of each window taken another way.

    python bench/experiment_token_prior.py --prior nearest|random|farthest|bigram|unigram --lam 8 --seeds 0 1 2 3 4

nearest   the bank window whose speech is nearest (what `generate --retrieval-bank` does)
random    a random bank window (any real token sequence, speech ignored)
farthest  the bank window whose speech is farthest
bigram    a sequence sampled from a bigram of the bank's level-0 tokens per part (aggregate statistics of the
          training capture, 128 x 128 per part; no window of it is kept), speech ignored
unigram   tokens drawn independently from the bank's level-0 token frequencies (the bigram's control)

Also prints the share of level-0 tokens (where someone speaks) that equal the prior's choice: how much the model
still decides. A research script: the patch lives here, not in the product. Results: weights/MODEL_CARD.md
("With a retrieval bank", controls; "Experiments after these weights", token bigram prior). Needs ../shared/data.
"""
from __future__ import annotations

import argparse
import atexit
import sys

import numpy as np
from common import import_repo_as_package


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", choices=("nearest", "random", "farthest", "bigram", "unigram"), required=True)
    ap.add_argument("--prior-seed", type=int, default=0, help="seed of the random / sampled priors")
    args, rest = ap.parse_known_args(argv)
    import_repo_as_package()
    import torch

    from echomask.core.generation import loop
    from echomask.core.generation import retrieval as R

    rng = np.random.default_rng(args.prior_seed)
    tables: dict = {}

    def token_tables(bank, part, n_codes):
        if part not in tables:
            tokens = bank.tokens[part].cpu().numpy()
            tokens = tokens[..., 0] if tokens.ndim == 3 else tokens           # (windows, n_tok) level 0
            bigram = np.full((n_codes, n_codes), 0.1)
            for row in tokens:
                np.add.at(bigram, (row[:-1], row[1:]), 1.0)
            unigram = np.bincount(tokens.ravel(), minlength=n_codes) + 0.1
            tables[part] = (bigram / bigram.sum(1, keepdims=True), unigram / unigram.sum())
        return tables[part]

    original_prior = R.RetrievalBank.token_prior

    def token_prior(self, cond, weight, n_codes):
        if args.prior == "nearest":
            return original_prior(self, cond, weight, n_codes)
        if args.prior in ("random", "farthest"):
            j = int(rng.integers(len(self))) if args.prior == "random" else \
                int((R.speech_keys(cond).cpu() @ self.keys.T)[0].argmin())
            return {p: torch.nn.functional.one_hot(self.tokens[p][j], n_codes).float() * float(weight)
                    for p in self.tokens}
        out = {}
        for p in self.tokens:
            bigram, unigram = token_tables(self, p, n_codes)
            seq = [rng.choice(n_codes, p=unigram)]
            for _ in range(self.tokens[p].shape[1] - 1):
                seq.append(rng.choice(n_codes, p=bigram[seq[-1]] if args.prior == "bigram" else unigram))
            out[p] = torch.nn.functional.one_hot(torch.tensor(seq), n_codes).float() * float(weight)
        return out

    R.RetrievalBank.token_prior = token_prior
    agree = [0, 0]

    def counted(choose):
        def run(*a, **k):
            codes = choose(*a, **k)
            prior = k.get("level0_prior")
            if prior is not None:
                for p, v in prior.items():
                    rows = v.sum(-1) > 0      # where someone speaks (pauses scale the prior away)
                    agree[0] += int((codes[p][:, 0].cpu()[rows] == v.argmax(-1)[rows]).sum())
                    agree[1] += int(rows.sum())
            return codes
        return run

    loop.decode_window, loop.refine_window = counted(loop.decode_window), counted(loop.refine_window)
    atexit.register(lambda: print(f"level-0 tokens equal to the prior's choice (speech): "
                                  f"{agree[0] / max(1, agree[1]):.3f} of {agree[1]}"))
    import experiment_retrieval_prior

    return experiment_retrieval_prior.main(rest)


if __name__ == "__main__":
    sys.exit(main())
