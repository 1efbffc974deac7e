"""The window loop of this project's models (docs/METHOD.md §7): speech -> tokens -> take.

The speech is walked in 64-frame windows that overlap by 4 frames: window i covers frames [60 i, 60 i + 64);
its first 4 frames are the seed (the last 4 frames of window i-1's own decode, whose last token is also
given as a known token; for window 0 a neutral standing pose and its tokens). Each window's tokens are
chosen by `decoding.decode_window` (iterative masked decoding; one pass with arg-max is the paper's).
Window 0 keeps its 16 tokens, every later window its last 15, and each part's token sequence is decoded
by its RVQ decoder in overlapping chunks, which equals one pass over the whole sequence. Frames the
animator keeps (re-key) are given to the model as known frames and known tokens, and copied back.

Memory stays flat in the audio's length: speech features are computed chunk by chunk as the windows
advance (`features.FeatureStream`), and decoding writes straight into the output arrays. Root motion:
core.motion.root_motion.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from ..motion.skeleton import PARTS
from .decoding import decode_window, refine_window
from .features import SAMPLE_RATE, FeatureStream, default_feature_fn
from .options import GenerationOptions
from .post import apply_gesture_gain, apply_intensity, apply_phone_mouth, keep_known, neutral_standing, smooth_body, splice_known

SPEECH_GROUP = 8   # the MAM speech branch does not depend on motion: run it for 8 windows in one batch


def decode_chunked(tokenizer, denorm, codes, chunk_tokens: int = 256, context: int = 32, detail=None):
    """Yield (first_frame, raw features (frames, D) numpy) decoding `codes` (N, L) in overlapping chunks;
    the result equals a single decode of the whole sequence where `context` covers the receptive field.
    detail (N,): per-token weight of the finer RVQ levels (None = every level as coded)."""
    import torch

    n = len(codes)
    ds = tokenizer.downsample
    for lo in range(0, n, chunk_tokens):
        hi = min(n, lo + chunk_tokens)
        a, b = max(0, lo - context), min(n, hi + context)
        with torch.no_grad():
            dec = tokenizer.decode(codes[a:b][None], None if detail is None else detail[a:b][None])[0]
        dec = denorm(dec)[(lo - a) * ds:(hi - a) * ds]
        yield lo * ds, dec.float().cpu().numpy()


def neutral_seed_codes(tokenizers, window: int = 64, seed_frames: int = 4) -> dict:
    """{part: (seed tokens, L) long}: the tokens of the neutral standing pose, window 0's seed."""
    import torch

    from ..motion.motion_repr import take_to_parts

    parts = take_to_parts(neutral_standing(window))
    dev = next(iter(tokenizers.parameters())).device
    with torch.inference_mode():
        codes = tokenizers.encode_parts({p: torch.from_numpy(v[None]).to(dev) for p, v in parts.items()})
    n = seed_frames // tokenizers[PARTS[0]].downsample
    return {p: c[0, :n] for p, c in codes.items()}


# Parts whose take shows the coarse RVQ level only (their finer levels still seed the next window and feed the
# hints, as in training). The face: with its finer levels the model's own mouth got worse on held-out speech
# (docs/LIPSYNC.md: opening error 89 -> 101 ms, jaw MSE 0.77 -> 0.85, expression MSE with the phone mouth
# 0.236 -> 0.259), while the body's finer levels scored better on unseen speech (weights/MODEL_CARD.md).
# (Weights with a speech face head take the face from it instead: this applies to face source "tokens".)
COARSE_LEVEL_PARTS = ("face",)

PAUSE_MARGIN_S = 0.3   # speech keeps its Variation this long around each word: short gaps are not pauses


def speaking_share(speech_flag: np.ndarray, unit: int, fps: float = 30.0) -> np.ndarray:
    """Share of each token's frames within PAUSE_MARGIN_S of a speech frame. (window,) -> (window // unit,)."""
    speaking = np.asarray(speech_flag) > 0.5
    margin = int(round(PAUSE_MARGIN_S * fps))
    if margin > 0 and speaking.any():
        padded = np.concatenate([np.zeros(margin, bool), speaking, np.zeros(margin, bool)])
        speaking = np.lib.stride_tricks.sliding_window_view(padded, 2 * margin + 1).any(-1)
    return speaking[: len(speaking) // unit * unit].reshape(-1, unit).mean(-1)


def token_temperatures(speech_flag: np.ndarray, unit: int, temperature: float, pause_share: float,
                       fps: float = 30.0) -> np.ndarray:
    """Per-token temperatures of one window: `temperature` where someone speaks (within PAUSE_MARGIN_S of
    a speech frame), `temperature * pause_share` in pauses. speech_flag (window,) -> (window // unit,)."""
    per_token = speaking_share(speech_flag, unit, fps)
    return (temperature * (pause_share + (1.0 - pause_share) * per_token)).astype(np.float32)


def write_head_face(out: np.ndarray, head, mam, tok, cond_face, low: np.ndarray, high: np.ndarray, start: int,
                    overlap: int) -> None:
    """The speech face head's face for one window, written into out[start:start + window] (raw face
    features); the first `overlap` frames (the seed, which the previous window also covered) cross-fade
    from the previous window's face to this one's."""
    import torch

    from ..model.face_head import standardised_speech

    dev = cond_face.device
    with torch.inference_mode():
        sl, sh = standardised_speech(mam, torch.from_numpy(low)[None].to(dev), torch.from_numpy(high)[None].to(dev))
        face = tok.denormalize("face", head(cond_face, sl, sh))[0].float().cpu().numpy()   # (window, 106)
    n = len(face)
    if start == 0 or overlap <= 0:
        out[start:start + n] = face
        return
    ramp = ((np.arange(overlap) + 1.0) / (overlap + 1.0))[:, None]
    out[start:start + overlap] = (1 - ramp) * out[start:start + overlap] + ramp * face[:overlap]
    out[start + overlap:start + n] = face[overlap:]


def generate_take(audio: np.ndarray, mdl, options: GenerationOptions, known=None, progress=None, cancel=None,
                  feature_fn=None, chunk_frames: int = 1800, timings=None, fps: float = 30.0):
    """Speech (16 kHz mono float32) -> Take with one of this project's models (an EchoMaskModel).

    known: None or (known_parts {part: (n_frames, D)}, known_frames (n_frames,) bool, known_take) from
    core.generation.inference (the frames and parts the animator keeps). progress(fraction, message) between windows;
    cancel() is called between windows and raises to stop.
    """
    import torch

    from ..motion.motion_repr import LOWER_CONTACTS, LOWER_TRANS, parts_to_motion337, parts_to_take, take_to_parts
    from ..motion.root_motion import root_translation
    from ..motion.take import Take

    def report(fraction, message):
        if progress is not None:
            progress(float(fraction), message)

    gen, tok, cfg = mdl.generator, mdl.tokenizers, mdl.config
    dev = mdl.device
    window, seed_frames = cfg.window, cfg.seed_frames
    hop = window - seed_frames
    unit = tok[PARTS[0]].downsample
    tok_per_seed = seed_frames // unit
    n_tok = window // unit
    parts_to_generate = options.parts or PARTS
    own_features = feature_fn is None      # the backend's own features: their speech flag can be trusted
    feature_fn = feature_fn or default_feature_fn(cfg.generator.speech_backend)
    times = {"features": 0.0, "model": 0.0, "decode": 0.0}

    n_frames = max(1, int(round(len(audio) * fps / SAMPLE_RATE)))
    n_windows = max(1, math.ceil((n_frames - seed_frames) / hop))
    total = seed_frames + n_windows * hop
    known_parts, known_frames, known_take = known if known is not None else (None, None, None)
    # Short clips and the last window are padded with silence by the feature stream (no copy of the
    # audio is made); the output is trimmed back to the speech's length.
    stream = FeatureStream(audio, total, fps, feature_fn, chunk_frames)
    # Pauses get a share of the Variation: the model's most likely motion there is its calmest. Needs the
    # built-in backend's own speech flag (HuBERT and caller-supplied features have none: the same Variation
    # everywhere).
    calm_pauses = options.pause_variation < 1.0 and own_features and cfg.generator.speech_backend == "builtin"
    pause_aware = calm_pauses and options.temperature > 0
    if calm_pauses:
        from ..speech.builtin import SPEECH_FLAG
    neutral = parts_to_motion337(take_to_parts(neutral_standing(seed_frames)))
    seed_codes = neutral_seed_codes(tok, window, seed_frames)
    known_m337 = known_tokens = None
    if known_parts is not None:
        known_m337 = parts_to_motion337(known_parts)
        pad = total - n_frames
        padded = {p: torch.from_numpy(np.concatenate([v, np.repeat(v[-1:], pad, 0)])[None]).to(dev)
                  for p, v in known_parts.items()}
        with torch.inference_mode():
            known_tokens = {p: c[0] for p, c in tok.encode_parts(padded).items()}
    bank = None
    if options.retrieval_bank and options.retrieval_weight > 0:
        from .retrieval import load_bank

        bank = load_bank(options.retrieval_bank, gen)
    from ..model.checkpoint import decoding_defaults

    recorded = decoding_defaults(mdl.meta)   # what these weights record as measured best for them
    levels = options.levels
    if levels is None:
        # The weights' record (with or without a bank: the bundled weights' every level scored better with a bank
        # too, tails 106.7 vs 111.8 at λ 8), else the coarse level: keeping every level scored worse than the
        # coarse one for 5 of 6 training runs measured.
        levels = int(recorded.get("levels", 1))
    guidance = float(recorded.get("guidance", 1.0)) if options.guidance is None else options.guidance
    gain = float(recorded.get("gesture_gain", 1.0)) if options.gesture_gain is None else options.gesture_gain
    prior_strength = float(recorded.get("token_prior", 0.0)) if options.token_prior is None else options.token_prior
    token_prior = None
    if bank is None and prior_strength > 0:   # a bank's nearest window replaces the synthetic prior
        token_prior = mdl.token_prior
        if token_prior is None and options.token_prior is not None:
            from ..errors import EchoMaskError

            raise EchoMaskError(f"These weights ({os.path.basename(mdl.path or 'the model')}) have no token prior; "
                                f"set the token prior to 0 or add one (`python -m core build-token-prior`).")
        if token_prior is not None and token_prior.n_codes != cfg.tokenizer.nb_code:
            from ..errors import EchoMaskError

            raise EchoMaskError("The token prior in these weights does not fit their tokenizers; build it again "
                                "(`python -m core build-token-prior`).")
    prior_sampler = None
    if token_prior is not None:
        from .token_prior import prior_rng

        prior_sampler = prior_rng(options.seed)
    sampler = torch.Generator().manual_seed(options.seed)
    face_head = mdl.face_head if options.face_source in ("auto", "head") else None
    if options.face_source == "head" and face_head is None:
        from ..errors import EchoMaskError

        raise EchoMaskError(f"These weights ({os.path.basename(mdl.path or 'the model')}) have no speech face head; "
                            f"use the face tokens (face source 'tokens' or 'auto') or train one "
                            f"(`python -m core train-face-head`).")
    head_face = np.zeros((total, face_head.cfg.out_dim), np.float32) if face_head is not None else None
    tokens = {p: [] for p in PARTS}
    details = []           # per token: weight of the finer RVQ levels in the take (pauses: the coarse motion)
    seed_motion = neutral
    report(0.02, "Analysing the speech")
    cond_group: dict = {}
    for w in range(n_windows):
        if cancel is not None:
            cancel()
        start = w * hop
        t0 = time.perf_counter()
        f0 = stream.seconds
        if w % SPEECH_GROUP == 0:
            lows, highs = zip(*(stream.rows(v * hop, v * hop + window)
                                for v in range(w, min(n_windows, w + SPEECH_GROUP))))
            with torch.inference_mode():
                cond_group = gen.mam.speech_branch(torch.from_numpy(np.stack(lows)).to(dev),
                                                   torch.from_numpy(np.stack(highs)).to(dev))
        j = w % SPEECH_GROUP
        cond = {p: c[j:j + 1] for p, c in cond_group.items()}
        if head_face is not None:
            write_head_face(head_face, face_head, gen.mam, tok, cond["face"], lows[j], highs[j], start, seed_frames)
        t_feat = stream.seconds - f0
        motion = np.zeros((window, neutral.shape[1]), np.float32)
        motion[:seed_frames] = seed_motion
        known_here = np.zeros(window, bool)
        known_here[:seed_frames] = True
        given = {p: torch.full((n_tok, gen.levels), -1, dtype=torch.long, device=dev) for p in PARTS}
        if known_frames is not None:
            lo, hi = start, min(n_frames, start + window)
            k = known_frames[lo:hi]
            motion[:hi - lo][k] = known_m337[lo:hi][k]
            known_here[:hi - lo] |= k
            for p in PARTS:
                given[p][:] = known_tokens[p][w * (hop // unit):w * (hop // unit) + n_tok, :gen.levels]
        for p in PARTS:
            given[p][:tok_per_seed] = seed_codes[p][:, :gen.levels]
        choose = refine_window if options.strategy == "refine" else decode_window
        # Per token: 1 where someone speaks, pause_variation in pauses (the Variation's, the prior's and the
        # finer levels' share alike).
        share = token_temperatures(highs[j][:, SPEECH_FLAG], unit, 1.0, options.pause_variation, fps) \
            if calm_pauses else None
        temperature = options.temperature * share if pause_aware else options.temperature
        prior = None
        if bank is not None:
            prior = bank.token_prior(cond, options.retrieval_weight, cfg.tokenizer.nb_code)
        elif token_prior is not None:
            # A chain through this window's known tokens: its seed token (windows join) and any token whose frames
            # the animator keeps (the prior leads into the keys instead of past them).
            pinned = torch.from_numpy(known_here.reshape(n_tok, unit).all(1))
            prior = token_prior.window_prior(n_tok, prior_strength, prior_sampler,
                                             {p: torch.where(pinned, given[p][:, 0].cpu(), -1).numpy()
                                              for p in PARTS})
            if head_face is None:
                # A face shown from its tokens keeps the model's own choice: the face tokens are the part that
                # reads the speech most (another window's speech raises their CE most), and a speech-blind
                # chain would drive the take's face. (With the face head their tokens are only context.)
                prior["face"] = torch.zeros_like(prior["face"])
        if prior is not None:
            if calm_pauses:
                # Pauses keep the model's calm: the bank's windows were retrieved for speech (measured: with
                # the prior everywhere a 4 s pause moved faster than the speech around it).
                scale = torch.from_numpy(share)[:, None]
                prior = {p: v * scale for p, v in prior.items()}
            prior = {p: v.to(dev) for p, v in prior.items()}
        codes = choose(gen, tok, motion, known_here, cond, temperature, sampler, options.steps,
                       known_codes=given, top_p=options.top_p, level0_prior=prior, guidance=guidance,
                       coherence=options.coherence)
        if 0 < levels < gen.levels:   # finer levels decode as absent (the seed keeps them: it is context)
            for p in PARTS:
                codes[p][:, levels:] = -1
        if calm_pauses:
            # Pauses show the coarse level only, blended per token: the finer levels' arg-max detail kept the
            # idle moving (measured: a 4 s pause at 0.21 m/s with every level, 0.12 with this blend). The
            # window's own codes (the next seed, the hints) keep every level: that is what training saw.
            details.append(share if w == 0 else share[tok_per_seed:])
        t1 = time.perf_counter()
        with torch.inference_mode():
            for p in PARTS:
                tokens[p].append((codes[p] if w == 0 else codes[p][tok_per_seed:]).cpu())
            if w + 1 < n_windows:  # the next window's seed: this window's own decode, last 4 frames, and its token
                dec = tok.decode_parts({p: codes[p][None] for p in PARTS})
                seed_motion = parts_to_motion337({p: dec[p][0, -seed_frames:].float().cpu().numpy() for p in PARTS})
                seed_codes = {p: codes[p][-tok_per_seed:] for p in PARTS}
        t2 = time.perf_counter()
        times["features"] += t_feat
        times["model"] += (t1 - t0) - t_feat
        times["decode"] += t2 - t1
        report(0.05 + 0.85 * (w + 1) / n_windows, f"Generating gestures ({w + 1}/{n_windows})")
    phones = stream.phones
    del stream

    if cancel is not None:
        cancel()
    report(0.92, "Building the animation")
    t0 = time.perf_counter()
    poses = np.zeros((n_frames, 165), np.float32)
    expressions = np.zeros((n_frames, 100), np.float32)
    trans_feat = np.zeros((n_frames, 3), np.float32)
    contacts = np.zeros((n_frames, 4), np.float32)
    seqs = {p: torch.cat(tokens[p]).to(dev) for p in PARTS}
    detail = torch.from_numpy(np.concatenate(details)).to(dev) if details else None
    part_detail = {p: detail for p in PARTS}
    for p in COARSE_LEVEL_PARTS:
        part_detail[p] = torch.zeros(len(seqs[p]), device=dev)
    decoders = {p: decode_chunked(tok[p], lambda x, p=p: tok.denormalize(p, x), seqs[p], detail=part_detail[p])
                for p in PARTS}
    for chunks in zip(*(decoders[p] for p in PARTS)):
        first = chunks[0][0]
        if first >= n_frames:
            break
        feats = {p: c[1][: n_frames - first] for p, c in zip(PARTS, chunks)}
        if head_face is not None:   # the face frame by frame from the speech instead of its tokens
            feats["face"] = head_face[first:first + len(feats["face"])]
        if known_parts is not None:
            sl = slice(first, first + len(feats["face"]))
            feats = splice_known(feats, {p: v[sl] for p, v in known_parts.items()}, known_frames[sl],
                                 parts_to_generate)
        piece = parts_to_take(feats, fps=fps)
        sl = slice(first, first + piece.num_frames)
        poses[sl], expressions[sl] = piece.poses, piece.expressions
        trans_feat[sl], contacts[sl] = feats["lower"][:, LOWER_TRANS], feats["lower"][:, LOWER_CONTACTS]
    del seqs, tokens
    take = Take(poses=poses, trans=np.zeros((n_frames, 3), np.float32), expressions=expressions, fps=fps)
    take = smooth_body(take, options.smoothing)
    take = apply_gesture_gain(take, gain)              # the weights' calibration, then the animator's intensity
    take = apply_intensity(take, options.intensity)   # before the root: foot locking sees the final legs
    take.trans = root_translation(take.poses, trans_feat, contacts, fps, travel=options.travel)
    if known_parts is not None:   # what the animator keeps stays exactly as it was
        take = keep_known(take, known_take.slice(0, n_frames), known_frames, parts_to_generate)
    times["decode"] += time.perf_counter() - t0
    if timings is not None:
        timings.update(times)
    take.meta = {"generator": "echomask", "config": cfg.name, "weights": mdl.path, "seed": options.seed,
                 "temperature": options.temperature, "top_p": options.top_p, "coherence": options.coherence,
                 "steps": options.steps,
                 "strategy": options.strategy, "levels": levels, "guidance": guidance, "gesture_gain": gain,
                 "token_prior": prior_strength if token_prior is not None else 0.0, "smoothing": options.smoothing, "travel": options.travel,
                 "intensity": options.intensity, "face": "head" if head_face is not None else "tokens"}
    if "face" in parts_to_generate:
        take = apply_phone_mouth(take, phones, options.lipsync, known_frames)
    return take
