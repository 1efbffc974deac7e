"""Is the generator learning from its inputs? Token baselines and probes, logged during training.

A falling loss proves nothing: a model can lower it by learning token frequencies alone. So, per body part,
on level-0 tokens (the level that carries the motion):

* baselines from the training tokens: the unigram (token frequencies) and the bigram (the previous token),
  each with the additive smoothing that suits the evaluated tokens best (the strongest such baseline);
* the context probe: cross-entropy on the *hidden* tokens with 0, 4 (the seed: the inference start),
  24 and 60 of the 64 frames visible (whole tokens, fixed random choice). A model that reads motion
  context has a lower CE the more it sees;
* the speech probe: the inference condition again, with each window given the speech of another window;
  a model that reads speech gets worse.

Frames are visible in whole tokens (4 frames), so a hidden token never leaks through its own frames.
"""
from __future__ import annotations

import numpy as np

from ..motion.skeleton import PARTS

VISIBLE_FRAMES = (0, 4, 24, 60)   # context probe conditions (4 = the seed, i.e. generation's first pass)
_SMOOTHING = (0.01, 0.05, 0.2, 1.0)


def _level0(codes) -> np.ndarray:
    return np.asarray(codes[..., 0] if codes.ndim == 3 else codes, np.int64)


def token_baselines(train_codes: dict, eval_codes: dict, nb_code: int) -> dict[str, dict[str, float]]:
    """{part: {"unigram": CE, "bigram": CE, "copy_previous_acc": accuracy}} on the level-0 tokens of
    `eval_codes` ({part: (W, N[, L])}), estimated from `train_codes`; CE in nats per token (bigram over
    positions 1..N-1 of each window, whose previous token is known)."""
    out = {}
    for p in PARTS:
        tr, ev = _level0(train_codes[p]), _level0(eval_codes[p])
        counts = np.bincount(tr.ravel(), minlength=nb_code).astype(np.float64)
        pairs = np.zeros((nb_code, nb_code))
        np.add.at(pairs, (tr[:, :-1].ravel(), tr[:, 1:].ravel()), 1.0)
        prev, nxt = ev[:, :-1].ravel(), ev[:, 1:].ravel()
        uni = min(float(-np.log(((counts + a) / (counts + a).sum())[ev.ravel()]).mean()) for a in _SMOOTHING)
        big = min(float(-np.log(((pairs + a) / (pairs + a).sum(1, keepdims=True))[prev, nxt]).mean())
                  for a in _SMOOTHING)
        out[p] = {"unigram": uni, "bigram": big, "copy_previous_acc": float((prev == nxt).mean())}
    return out


def visible_tokens(n_windows: int, n_tokens: int, visible: int, seed: int = 0) -> np.ndarray:
    """(W, N) bool: `visible` frames' worth of whole tokens, the first token (the seed) first when
    visible == 4, else a fixed random choice per window."""
    k = visible // 4 if visible else 0
    out = np.zeros((n_windows, n_tokens), bool)
    if k == 1:
        out[:, 0] = True
        return out
    rng = np.random.default_rng(seed)
    for w in range(n_windows):
        out[w, rng.choice(n_tokens, size=k, replace=False)] = True
    return out


def hidden_token_ce(model, batch: dict, visible: "np.ndarray", speech_perm=None, tokenizers=None) -> dict[str, np.ndarray]:
    """Sum of CE and count of hidden tokens per part and level: {part: (sum (L,), count)}.

    visible (B, N) bool tokens; speech_perm: optional (B,) permutation giving each window another's speech.
    """
    import torch

    b, t, _ = batch["motion"].shape
    unit = t // visible.shape[1]
    vis = torch.as_tensor(visible, device=batch["motion"].device)
    mask = ~vis.repeat_interleave(unit, dim=1)
    low, high = batch["low"], batch["high"]
    if speech_perm is not None:
        low, high = low[speech_perm], high[speech_perm]
    known = None
    if getattr(model, "token_hints", False) and tokenizers is not None:
        from ..model.generator import known_token_vectors

        with torch.no_grad():
            known = known_token_vectors(tokenizers, batch["codes"], vis, model.levels)
    with torch.no_grad():
        out = model(batch["motion"], mask, low, high, known=known)
    res = {}
    for p in PARTS:
        logits = out["logits"][p]                                          # (B, N, L, K)
        target = batch["codes"][p][..., :logits.shape[2]]
        ce = torch.nn.functional.cross_entropy(logits.permute(0, 3, 1, 2), target, reduction="none")
        keep = (~vis) & batch["part_mask"][p][:, None]                     # (B, N)
        res[p] = ((ce * keep[..., None]).sum((0, 1)).cpu().numpy().astype(np.float64), float(keep.sum()))
    return res


def run_probes(model, data, device, max_windows: int = 96, batch_size: int = 32, seed: int = 0,
               indices=None, tokenizers=None) -> dict:
    """Level-0 CE per part on the hidden tokens for each context condition, plus the speech probe.

    Returns {"ce0": {part: {"vis0": .., "vis4": .., "vis24": .., "vis60": .., "other_speech": ..}},
             "ce": {part: {"vis4": [CE per level]}}, "windows": n}.
    """
    import torch

    windows = np.asarray(indices if indices is not None else np.arange(min(len(data), max_windows)))
    n = len(windows)
    if n == 0:
        return {}
    was_training = model.training
    model.eval()
    n_tokens = model.window // 4
    conds = {f"vis{v}": visible_tokens(n, n_tokens, v, seed) for v in VISIBLE_FRAMES}
    # Another window's speech: the window half the set away (validation windows overlap their neighbours).
    perm_all = (np.arange(n) + max(1, n // 2)) % n
    sums = {c: {p: [0.0, 0.0] for p in PARTS} for c in (*conds, "other_speech")}
    per_level = {p: [np.zeros(model.levels), 0.0] for p in PARTS}
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, min(n, lo + batch_size))
        batch = data.batch(windows[idx], device)
        for name, vis in conds.items():
            res = hidden_token_ce(model, batch, vis[idx], tokenizers=tokenizers)
            for p in PARTS:
                sums[name][p][0] += res[p][0][0]
                sums[name][p][1] += res[p][1]
                if name == "vis4":
                    per_level[p][0] += res[p][0]
                    per_level[p][1] += res[p][1]
        # The speech probe needs the other window's speech in the same batch: fetch it alongside.
        other = data.batch(windows[perm_all[idx]], device)
        swapped = dict(batch, low=other["low"], high=other["high"])
        res = hidden_token_ce(model, swapped, conds["vis4"][idx], tokenizers=tokenizers)
        for p in PARTS:
            sums["other_speech"][p][0] += res[p][0][0]
            sums["other_speech"][p][1] += res[p][1]
    model.train(was_training)
    ce0 = {p: {c: sums[c][p][0] / max(sums[c][p][1], 1.0) for c in sums} for p in PARTS}
    levels = {p: (per_level[p][0] / max(per_level[p][1], 1.0)).round(4).tolist() for p in PARTS}
    return {"ce0": ce0, "ce_levels_vis4": levels, "windows": n}


def format_table(probes: dict, baselines: dict | None = None, title: str = "") -> str:
    """A fixed-width table: one row per part, level-0 CE per condition next to the baselines."""
    cols = [f"vis{v}" for v in VISIBLE_FRAMES] + ["other_speech"]
    head = f"{'part':<6}" + "".join(f"{c:>13}" for c in cols) + (f"{'unigram':>10}{'bigram':>9}" if baselines else "")
    lines = [title, head] if title else [head]
    for p in PARTS:
        row = f"{p:<6}" + "".join(f"{probes['ce0'][p][c]:>13.3f}" for c in cols)
        if baselines:
            row += f"{baselines[p]['unigram']:>10.3f}{baselines[p]['bigram']:>9.3f}"
        lines.append(row)
    return "\n".join(lines)
