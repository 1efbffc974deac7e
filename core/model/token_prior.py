"""The tables of a motion-token bigram prior, as a weights bundle stores them (tensors token_prior.<part>.bigram),
and sampling from them. What the prior is for, how it is built and what it measured: core.generation.token_prior.
Pure numpy (torch only for the logits it returns)."""
from __future__ import annotations

import numpy as np

from ..errors import EchoMaskError
from ..motion.skeleton import PARTS

TENSOR_PREFIX = "token_prior."   # bundle tensors token_prior.<part>.bigram: (n_codes, n_codes) float32 counts
ADDITIVE_SMOOTHING = 0.03         # pseudo-count per transition: unseen transitions stay possible, rarely. Chosen
#                                  by leave-one-take-out cross-entropy on the two training takes (body parts: 0.03
#                                  gives upper 3.49 / hands 3.71 / lower 2.79 nats; 0.1: 3.60 / 3.73 / 3.05)


class TokenPrior:
    """Per part, bigram counts (n_codes, n_codes) of consecutive level-0 tokens; row = previous token."""

    def __init__(self, counts: dict, meta: dict | None = None):
        self.counts = {p: np.asarray(counts[p], np.float64) for p in PARTS}
        n = {c.shape for c in self.counts.values()}
        if len(n) != 1 or len(next(iter(n))) != 2 or next(iter(n))[0] != next(iter(n))[1]:
            raise EchoMaskError("The token prior's tables are malformed; build them again "
                                "(`python -m core build-token-prior`).")
        if not all(np.isfinite(c).all() and (c >= 0).all() for c in self.counts.values()):
            raise EchoMaskError("The token prior's tables hold negative or non-finite counts; build them again "
                                "(`python -m core build-token-prior`).")
        self.n_codes = next(iter(n))[0]
        self.meta = dict(meta or {})
        # Row-normalised transitions and the first token's distribution (the token frequencies).
        smoothed = {p: c + ADDITIVE_SMOOTHING for p, c in self.counts.items()}
        self.transitions = {p: s / s.sum(1, keepdims=True) for p, s in smoothed.items()}
        self.unigram = {p: s.sum(0) / s.sum() for p, s in smoothed.items()}
        self._cdf = {p: np.cumsum(t, 1) for p, t in self.transitions.items()}

    @classmethod
    def from_sequences(cls, sequences: dict, n_codes: int, meta: dict | None = None) -> "TokenPrior":
        """sequences {part: [1-D int arrays of level-0 tokens, one per take]} -> counts of consecutive pairs."""
        counts = {}
        for p in PARTS:
            c = np.zeros((n_codes, n_codes), np.float64)
            for seq in sequences.get(p, []):
                seq = np.asarray(seq, np.int64)
                if len(seq) > 1:
                    np.add.at(c, (seq[:-1], seq[1:]), 1.0)
            counts[p] = c
        if not any(c.sum() > 0 for c in counts.values()):
            raise EchoMaskError("No token pairs to build a token prior from: the takes are too short.")
        return cls(counts, meta)

    def sample(self, n_tok: int, rng: np.random.Generator, fixed: dict | None = None) -> dict:
        """{part: (n_tok,) int64} a chain per part. fixed {part: (n_tok,) int, -1 = free}: tokens the chain must
        pass through (the window's seed token, an animator's kept frames); the chain is then drawn from the bigram
        conditioned on them (backward messages, forward sampling), so it joins them instead of running past
        them. A free first token is drawn from the token frequencies."""
        out = {}
        for p in PARTS:
            pins = np.full(n_tok, -1, np.int64) if fixed is None or fixed.get(p) is None else \
                np.asarray(fixed[p], np.int64)[:n_tok]
            pins = np.where((pins >= 0) & (pins < self.n_codes), pins, -1)
            seq = np.empty(n_tok, np.int64)
            later = np.flatnonzero(pins[1:] >= 0)
            back = self._backward(p, pins) if later.size else None
            if pins[0] >= 0:
                seq[0] = pins[0]
            else:
                first = self.unigram[p] if back is None else self.unigram[p] * back[0]
                seq[0] = min(int(np.searchsorted(np.cumsum(first / first.sum()), rng.random())), self.n_codes - 1)
            draws = rng.random(n_tok)
            cdf = self._cdf[p]
            for i in range(1, n_tok):
                if back is None:   # only the start is pinned: plain forward sampling
                    seq[i] = min(int(np.searchsorted(cdf[seq[i - 1]], draws[i])), self.n_codes - 1)
                elif pins[i] >= 0:
                    seq[i] = pins[i]
                else:
                    q = self.transitions[p][seq[i - 1]] * back[i]
                    seq[i] = min(int(np.searchsorted(np.cumsum(q / q.sum()), draws[i])), self.n_codes - 1)
            out[p] = seq
        return out

    def _backward(self, part: str, pins: np.ndarray) -> np.ndarray:
        """(n_tok, n_codes) b[t, k] ∝ P(the pinned tokens after t | token k at t), each row normalised; rows of
        pinned positions are their indicator. An unreachable pin (count 0 everywhere) cannot happen: smoothing
        keeps every transition possible."""
        n, k = len(pins), self.n_codes
        back = np.ones((n, k))
        trans = self.transitions[part]
        for t in range(n - 1, -1, -1):
            if t < n - 1:
                back[t] = trans @ back[t + 1]
            if pins[t] >= 0:
                keep = back[t, pins[t]]
                back[t] = 0.0
                back[t, pins[t]] = keep
            back[t] /= back[t].sum()
        return back

    def window_prior(self, n_tok: int, weight: float, rng: np.random.Generator, fixed: dict | None = None) -> dict:
        """{part: (n_tok, n_codes) float32 torch} additive level-0 logits: `weight` on a sampled chain's tokens
        (fixed: as `sample`)."""
        import torch

        return {p: torch.nn.functional.one_hot(torch.from_numpy(seq), self.n_codes).float() * float(weight)
                for p, seq in self.sample(n_tok, rng, fixed).items()}

    def tensors(self) -> dict:
        """Bundle tensors (core.model.checkpoint.write_token_prior)."""
        import torch

        return {f"{TENSOR_PREFIX}{p}.bigram": torch.from_numpy(self.counts[p].astype(np.float32)) for p in PARTS}

    @classmethod
    def from_tensors(cls, tensors: dict, meta: dict | None = None) -> "TokenPrior | None":
        """The prior among a bundle's tensors, or None when it has none."""
        found = {k[len(TENSOR_PREFIX):].split(".")[0]: v for k, v in tensors.items() if k.startswith(TENSOR_PREFIX)}
        if not found:
            return None
        missing = [p for p in PARTS if p not in found]
        if missing:
            raise EchoMaskError(f"The token prior in these weights lacks {', '.join(missing)}; build it again "
                                "(`python -m core build-token-prior`).")
        return cls({p: found[p].float().numpy() for p in PARTS}, meta)


def prior_rng(seed: int) -> np.random.Generator:
    """The prior's own random stream for a take's seed (the model's sampling keeps its torch generator)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7043])
