"""Choosing tokens for one window: confidence-ordered iterative masked decoding (the generator is a masked
model, so it fills a window over a few passes, each seeing what the passes before it chose).

Pass s of `steps` (MaskGIT's cosine schedule): the generator sees every frame chosen so far (decoded by
the tokenizers) and predicts every hidden token; level 0 (the level that carries the motion) is sampled
at `temperature` (0 = arg-max, as in the paper), the finer levels are taken by arg-max; then the hidden
token positions whose choice is most confident (mean log-probability over the body parts) are kept, and
the rest are hidden again. After the last pass every position is chosen. `steps` 1 is the paper's single
pass. Known frames (seeds, in-betweening) stay visible throughout and their positions are never hidden.

Used by `core.generation.loop` (this project's models) and `core.generation.official` (the converted release).
"""
from __future__ import annotations

import math

import numpy as np

from ..motion.skeleton import PARTS

from .options import DEFAULT_STEPS  # noqa: E402,F401


def any_sampling(temperature) -> bool:
    """True when some token is sampled (`temperature`: a number, or one per token position)."""
    return bool(np.any(np.asarray(temperature) > 0))


def coupled_gumbel(shape, coherence: float, generator=None):
    """Gumbel noise (..., N, K) whose value for each code follows an AR(1) process along the N token
    positions (a Gaussian copula, correlation `coherence` between neighbours). Each position's noise is
    still exactly Gumbel, so arg-max(logits / T + noise) samples every position from the model's own
    distribution; only neighbours' draws are coupled: where the model's distributions agree they tend to pick
    the same code instead of a fresh one (independent draws make busy, small motion)."""
    import torch

    n = shape[-2]
    z = torch.randn(shape, generator=generator)
    rho = float(coherence)
    for i in range(1, n):  # stationary AR(1): unit variance at every position
        z[..., i, :] = rho * z[..., i - 1, :] + math.sqrt(1.0 - rho * rho) * z[..., i, :]
    u = (0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))).clamp(1e-12, 1 - 1e-7)
    return -torch.log(-torch.log(u))


def choose_tokens(logits, temperature, generator=None, top_p: float = 1.0, coherence: float = 0.0):
    """logits (B, N, L, K) -> codes (B, N, L): arg-max at temperature 0, else sampled at `temperature`
    from the smallest set of codes whose probability reaches `top_p` (nucleus sampling; 1 = all codes).
    `temperature` is a number or one per token position (N,): positions at 0 take the arg-max.
    `coherence` in [0, 1): correlation of neighbouring positions' sampling noise (`coupled_gumbel`;
    0 = independent draws)."""
    import torch

    if not any_sampling(temperature):
        return logits.argmax(-1)
    per_token = np.ndim(temperature) > 0
    t = torch.as_tensor(np.asarray(temperature, np.float32)).reshape(1, -1, 1, 1) if per_token else temperature
    probs = torch.softmax(logits.float().cpu() / (t.clamp(min=1e-3) if per_token else t), dim=-1)
    if top_p < 1.0:  # rare codes are where sampled motion turns jerky
        sorted_p, order = probs.sort(-1, descending=True)
        outside = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, order, (sorted_p.cumsum(-1) - sorted_p) >= top_p)
        probs = probs.masked_fill(outside, 0.0)
    if coherence > 0:  # Gumbel-max with noise coupled along the positions (N next to K)
        noise = coupled_gumbel(probs.transpose(1, 2).shape, coherence, generator).transpose(1, 2)
        idx = (probs.log() + noise).argmax(-1)
    else:
        flat = probs.reshape(-1, probs.shape[-1])
        idx = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
    if per_token:  # positions at temperature 0: the arg-max, exactly
        idx = torch.where(t[..., 0].expand(idx.shape) > 0, idx, logits.argmax(-1).cpu())
    return idx.to(logits.device)


def choose_motion_tokens(logits, temperature: float, generator=None, top_p: float = 1.0, coherence: float = 0.0):
    """logits (B, N, L, K) -> (codes (B, N, L), log-probability of each level-0 choice (B, N)).

    Level 0 is sampled at `temperature` (arg-max at 0); levels 1.. (detail) by arg-max: sampling the detail
    levels adds jitter without adding gesture (measured on the bundled weights).
    """
    import torch

    codes = logits.argmax(-1)
    if any_sampling(temperature):
        codes[..., 0] = choose_tokens(logits[..., :1, :], temperature, generator, top_p, coherence)[..., 0]
    logp = torch.log_softmax(logits[..., 0, :].float(), -1).gather(-1, codes[..., :1]).squeeze(-1)
    return codes, logp


def with_level0_prior(logits: dict, prior) -> dict:
    """logits {part: (1, N, L, K)} with `prior` {part: (N, K)} added to level 0 (None: unchanged)."""
    if prior is None:
        return logits
    out = {}
    for p, lg in logits.items():
        lg = lg.clone()
        lg[0, :, 0, :] += prior[p].to(lg.device, lg.dtype)
        out[p] = lg
    return out


def window_logits(generator, frames, hidden, cond, hints=None, guidance: float = 1.0) -> dict:
    """The generator's logits {part: (1, N, L, K)} for one window: frames (T, 337) numpy, hidden (T,) bool.

    guidance != 1: classifier-free guidance (Ho & Salimans 2022, as MoMask uses it): the same window is also
    run with no speech (zero MAM conditions, what `--speech-dropout` training shows the model) and the
    log-probabilities are pushed away from that: log p_none + guidance x (log p_speech - log p_none). Only
    weights trained with speech dropout know the no-speech condition.
    """
    import torch

    dev = next(generator.parameters()).device
    x = torch.from_numpy(frames)[None].to(dev)
    m = torch.from_numpy(hidden)[None].to(dev)
    if guidance == 1.0:
        return generator(x, m, None, None, cond=cond, known=hints)["logits"]
    both = {p: torch.cat([c, torch.zeros_like(c)]) for p, c in cond.items()}
    pair = None if hints is None else {p: torch.cat([v, v]) for p, v in hints.items()}
    out = generator(x.expand(2, -1, -1), m.expand(2, -1), None, None, cond=both, known=pair)["logits"]
    guided = {}
    for p, lg in out.items():
        with_speech, without = torch.log_softmax(lg.float(), -1).chunk(2)
        guided[p] = without + guidance * (with_speech - without)                  # (1, N, L, K)
    return guided


def hidden_after_pass(hidden: int, step: int, steps: int) -> int:
    """Positions still hidden after pass `step` (0-based) of `steps`: cosine schedule, 0 after the last."""
    if step + 1 >= steps:
        return 0
    return int(math.floor(hidden * math.cos(0.5 * math.pi * (step + 1) / steps)))


def decode_window(generator, tokenizers, motion, known, cond, temperature: float = 0.0, sampler=None,
                  steps: int = DEFAULT_STEPS, known_codes=None, to_motion=None, top_p: float = 1.0,
                  level0_prior=None, guidance: float = 1.0, coherence: float = 0.0):
    """Tokens of one window by iterative masked decoding.

    motion (T, 337) float32 numpy with the known frames filled in; known (T,) bool; cond: the MAM
    conditions of this window ({part: (1, T, d)}); known_codes {part: (N, L) long}: the tokens of the
    positions whose frames are all known (e.g. the seed: the previous window's last token), -1 elsewhere;
    to_motion(decoded {part: (1, T, D)}) -> (T, 337) numpy frames (default core.motion.motion_repr.parts_to_motion337);
    level0_prior {part: (N, K)}: added to the level-0 logits (core.generation.retrieval), None = none;
    guidance: classifier-free guidance on the speech (`window_logits`; 1 = none).
    Returns {part: codes (N, L)} (long tensors, L = the levels the generator predicts).
    """
    import torch

    from ..model.generator import known_token_vectors
    from ..motion.motion_repr import parts_to_motion337

    to_motion = to_motion or (lambda dec: parts_to_motion337({p: v[0].float().cpu().numpy() for p, v in dec.items()}))
    dev = next(generator.parameters()).device
    levels = generator.levels
    unit = tokenizers[PARTS[0]].downsample
    t = len(known)
    n = t // unit
    known = np.asarray(known, bool)
    known_tok = known.reshape(n, unit).all(1)          # positions whose frames are all given
    codes = {p: torch.full((n, levels), -1, dtype=torch.long, device=dev) for p in PARTS}
    chosen = np.zeros(n, bool)
    if known_codes is not None:
        have = known_tok & np.all([(known_codes[p][:, 0] >= 0).cpu().numpy() for p in PARTS], axis=0)
        sel = torch.from_numpy(have).to(dev)
        for p in PARTS:
            codes[p][sel] = known_codes[p][:, :levels].to(dev)[sel]
        chosen |= have
    frames = np.array(motion, np.float32, copy=True)
    free = int((~chosen).sum())
    steps = max(1, int(steps))
    for step in range(steps):
        visible = known | np.repeat(chosen, unit)
        with torch.inference_mode():
            hints = None
            if getattr(generator, "token_hints", False) and chosen.any():
                shown = torch.from_numpy(chosen).to(dev)[None]
                # -1 = no code (open positions, which `shown` zeroes, and absent finer levels of a seed)
                hints = known_token_vectors(tokenizers, {p: c[None] for p, c in codes.items()}, shown, levels)
            logits = with_level0_prior(window_logits(generator, frames, ~visible, cond, hints, guidance),
                                       level0_prior)
            picks = {p: choose_motion_tokens(logits[p], temperature, sampler, top_p, coherence) for p in PARTS}
        confidence = torch.stack([lp[0] for _, lp in picks.values()]).mean(0).cpu().numpy()   # (N,)
        if any_sampling(temperature):  # MaskGIT: randomise the order a little, less as the window fills
            noise = torch.rand(n, generator=sampler).clamp(1e-9, 1 - 1e-9).numpy()
            confidence = confidence - temperature * (1 - step / steps) * np.log(-np.log(noise))
        # The most confident still-open positions take this pass's codes; the rest stay open.
        still_open = hidden_after_pass(free, step, steps)
        candidates = np.flatnonzero(~chosen)
        order = candidates[np.argsort(-confidence[candidates], kind="stable")]
        new = np.zeros(n, bool)
        new[order[:max(0, len(candidates) - still_open)]] = True
        sel = torch.from_numpy(new).to(dev)
        for p in PARTS:
            codes[p][sel] = picks[p][0][0][sel]
        chosen |= new
        if step + 1 < steps and new.any():
            # Decode what is chosen, with this pass's best guesses as placeholders for the open positions
            # (the decoder's receptive field spans neighbours).
            open_pos = torch.from_numpy(~chosen).to(dev)[:, None]
            draft = {p: torch.where(open_pos, picks[p][0][0], codes[p]) for p in PARTS}
            with torch.inference_mode():
                dec = tokenizers.decode_parts({p: c[None] for p, c in draft.items()})
            decoded = to_motion(dec)
            fill = np.repeat(new, unit) & ~known
            frames[fill] = decoded[fill]
    return codes


def refine_window(generator, tokenizers, motion, known, cond, temperature: float = 0.0, sampler=None,
                  steps: int = DEFAULT_STEPS, known_codes=None, to_motion=None, top_p: float = 1.0,
                  level0_prior=None, guidance: float = 1.0, coherence: float = 0.0):
    """Tokens of one window by mask-predict refinement (Ghazvininejad et al. 2019): pass 0 predicts every
    open position at once (the paper's single pass); each later pass hides again the positions whose
    choice is least confident (fewer each pass: open x (steps - s) / steps), shows the model all the others
    (their decoded frames and tokens) and predicts the hidden ones anew. Arguments as `decode_window`."""
    import torch

    from ..model.generator import known_token_vectors
    from ..motion.motion_repr import parts_to_motion337

    to_motion = to_motion or (lambda dec: parts_to_motion337({p: v[0].float().cpu().numpy() for p, v in dec.items()}))
    dev = next(generator.parameters()).device
    levels = generator.levels
    unit = tokenizers[PARTS[0]].downsample
    n = len(known) // unit
    known = np.asarray(known, bool)
    known_tok = known.reshape(n, unit).all(1)
    given = np.zeros(n, bool)
    codes = {p: torch.zeros((n, levels), dtype=torch.long, device=dev) for p in PARTS}
    if known_codes is not None:
        given = known_tok & np.all([(known_codes[p][:, 0] >= 0).cpu().numpy() for p in PARTS], axis=0)
        sel = torch.from_numpy(given).to(dev)
        for p in PARTS:
            codes[p][sel] = known_codes[p][:, :levels].to(dev)[sel]
    open_pos = np.flatnonzero(~given)
    confidence = np.full(n, np.inf)
    frames = np.array(motion, np.float32, copy=True)
    hidden = ~given
    steps = max(1, int(steps))
    for step in range(steps):
        if step > 0:
            k = int(len(open_pos) * (steps - step) / steps)
            if k == 0:
                break
            hidden = np.zeros(n, bool)
            hidden[open_pos[np.argsort(confidence[open_pos], kind="stable")[:k]]] = True
        shown = ~hidden
        visible = known | np.repeat(shown, unit)
        with torch.inference_mode():
            hints = None
            if getattr(generator, "token_hints", False) and shown.any():
                hints = known_token_vectors(tokenizers, {p: c[None] for p, c in codes.items()},
                                            torch.from_numpy(shown).to(dev)[None], levels)
            logits = with_level0_prior(window_logits(generator, frames, ~visible, cond, hints, guidance),
                                       level0_prior)
            picks = {p: choose_motion_tokens(logits[p], temperature, sampler, top_p, coherence) for p in PARTS}
        conf = torch.stack([lp[0] for _, lp in picks.values()]).mean(0).cpu().numpy()
        sel = torch.from_numpy(hidden).to(dev)
        for p in PARTS:
            codes[p][sel] = picks[p][0][0][sel]
        confidence[hidden] = conf[hidden]
        if step + 1 < steps:
            with torch.inference_mode():
                decoded = to_motion(tokenizers.decode_parts({p: c[None] for p, c in codes.items()}))
            fill = np.repeat(~given, unit) & ~known
            frames[fill] = decoded[fill]
    return codes
