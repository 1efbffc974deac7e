"""A motion-token bigram prior (ours, decoding only): for each window, a level-0 token sequence is sampled from a
bigram of the training capture's level-0 tokens (per part, 128 x 128 counts) and added to the generator's
level-0 logits with weight λ (one-hot x λ), as a retrieval bank's nearest window is (core.generation.retrieval).
The masked model still decides every token with its speech and context; the prior tilts each window towards
a plausible sequence of this speaker's coarse motion, with the capture's transitions.

Why (weights/MODEL_CARD.md, "A token bigram prior"): on the held-out tails about 15 of a bank's 41 FGD points
came from leaning on *any* real token sequence, and a bank is the capture itself in token form (not ours to
ship for BEAT2). The bigram keeps only aggregate statistics, like the weights, and is stored in the weights
bundle. The bundled weights record λ 8 (`set-decoding --token-prior 8`): on speech no training used FGD 80.1 vs
86.1 at Variation 1 and 80.0 vs 143.1 at Variation 0, where arg-max alone is nearly still. The cost, measured:
the model keeps the prior's choice for about three quarters of the coarse body tokens where someone speaks, so that
share of the body follows a speech-blind chain (a probe on the motion, bench/probe_speech_following.py, saw no
speech-following lost: there was none to see). Pauses get no prior (with the default pause Variation), nor does
a face shown from its tokens; a retrieval bank replaces it.

The tables come from the training frames only (held-out tails excluded; no mirroring or time-stretch; the
captured takes when there are any), built by `train` with every bundle it writes and by `python -m core
build-token-prior`. Sampling is seeded by the take's seed (same seed, same take). Each window's chain starts
from its seed token (the previous window's last), so consecutive windows join, and passes through any token whose
frames the animator keeps (drawn conditioned on them), so it leads into the keys. Pure torch + numpy, no bpy.
"""
from __future__ import annotations

import numpy as np

from ..errors import EchoMaskError
from ..model.token_prior import TokenPrior, prior_rng  # noqa: F401  (public here)
from ..motion.skeleton import PARTS


def training_token_sequences(tokenizers, window: int, entries, log=print) -> tuple[dict, list[str]]:
    """Level-0 tokens of each take's training frames (before its held-out tail; not mirrored or stretched),
    {part: [(n_tok,) int64, ...]}, and the takes used."""
    import torch

    from ..motion.motion_repr import take_to_parts
    from ..motion.take import load_take
    from ..training.data import variant_plan

    tok = tokenizers
    device = next(iter(tok.parameters())).device
    sequences = {p: [] for p in PARTS}
    used = []
    for entry in entries:
        take = load_take(entry.npz)
        plan = variant_plan(entry, take.num_frames, "train", window, mirror=False, stretch_factors=())
        if not plan:
            log(f"  {entry.npz}: no training frames (shorter than a window before its held-out tail), skipped")
            continue
        _, _, lo, hi = plan[0]
        hi = lo + (hi - lo) // tok[PARTS[0]].downsample * tok[PARTS[0]].downsample   # whole tokens
        parts = take_to_parts(take.slice(lo, hi))
        with torch.inference_mode():
            codes = tok.encode_parts({p: torch.from_numpy(v[None]).to(device) for p, v in parts.items()})
        masked = set(getattr(entry, "masked_parts", ()) or ())
        for p in PARTS:
            if p not in masked:
                sequences[p].append(codes[p][0, :, 0].cpu().numpy().astype(np.int64))
        used.append(entry.npz)
    if not used:
        raise EchoMaskError("No take here has training frames as long as a window; a token prior needs at least one.")
    return sequences, used


def prior_entries(entries) -> list:
    """The takes a prior is built from: the captured ones when there are any (other models' outputs carry their
    artefacts), else all."""
    captured = [e for e in entries if getattr(e, "kind", "gt") == "gt"]
    return captured or list(entries)


def build_token_prior(tokenizers, config, entries, log=print) -> TokenPrior:
    """The bigram prior of `entries`' training frames (core.training.data manifest entries) in `tokenizers`' level-0
    tokens (config: the model's ModelConfig)."""
    import os

    sequences, used = training_token_sequences(tokenizers, config.window, entries, log)
    n_tokens = int(sum(len(s) for s in sequences[PARTS[1]]))
    return TokenPrior.from_sequences(sequences, config.tokenizer.nb_code,
                                     {"takes": sorted(os.path.basename(u) for u in used), "tokens": n_tokens,
                                      "source": "level-0 tokens of the training frames (held-out tails excluded)"})


def run_cli(args) -> int:
    """`python -m core build-token-prior`: the tables for `--weights` from `--manifest`, written into a copy of the
    weights (`--out`, default: the weights file itself)."""
    import os

    from ..model.checkpoint import load_model, write_token_prior
    from ..training.data import folder_manifest, shared_training_manifest

    weights = os.fspath(args.weights)
    model = load_model(weights)
    entries = shared_training_manifest() if args.manifest == "shared" else folder_manifest(args.manifest)
    if not args.all_takes:
        entries = prior_entries(entries)
    prior = build_token_prior(model.tokenizers, model.config, entries, log=print)
    out = args.out or weights
    write_token_prior(weights, out, prior)
    print(f"wrote {out}: token prior from {len(prior.meta['takes'])} takes ({prior.meta['tokens']} tokens per part); "
          f"use it with generate --token-prior X, or record a default with set-decoding --token-prior X")
    return 0
