"""A converted official release as a generator of the product (core.official holds the release's own loop).

Same options as this project's models (core.generation.options): the release's single pass per window
(its tokens come from `decoding.choose_motion_tokens`, arg-max at temperature 0 as in the paper), then
the shared post-processing (`post`): stay in place unless asked to travel, the parts and frames the
animator keeps, intensity, and the phone-accurate mouth from the built-in recogniser (HuBERT gives no
phones, so the mouth's phones are recognised separately).
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..motion.skeleton import PARTS
from .options import GenerationOptions
from .post import apply_intensity, apply_phone_mouth, keep_known

FPS = 30.0


def generate_take_official(audio: np.ndarray, model, options: GenerationOptions, known=None, progress=None,
                           cancel=None, timings=None, feature_fn=None, phones_fn=None):
    """Speech (16 kHz mono float) -> Take with a converted release (`model`: EchoMaskModel whose info says
    pipeline 'official-release'). known: as core.generation.loop.generate_take. feature_fn(audio16k,
    n_frames) -> (hubert_hid, hubert) (T, 256) overrides the HuBERT backend; phones_fn(audio16k) ->
    [(start_s, end_s, phone)] the recogniser of the phone mouth (tests)."""
    import torch

    from ..motion.motion_repr import take_to_motion337
    from ..official.convert import load_official_extras
    from ..speech.hubert import release_feature_fn
    from ..official.pipeline import HOP, SEED, neutral_seed, release_extras, run_release
    from ..motion.take import Take
    from .decoding import choose_motion_tokens

    def report(fraction, message):
        if progress is not None:
            progress(float(fraction), message)

    times = {"features": 0.0, "model": 0.0, "decode": 0.0}
    dev = model.device
    n_frames = max(1, int(round(len(audio) * FPS / 16000)))
    n_windows = max(1, math.ceil((n_frames - SEED) / HOP))
    total = SEED + n_windows * HOP
    pad = int(round(total * 16000 / FPS)) - len(audio)
    if pad > 0:  # cover the last frames (the release would drop up to 59 of them): pad with silence
        audio = np.concatenate([audio, np.zeros(pad, np.float32)])
    parts_to_generate = options.parts or PARTS

    global_motion, projection = release_extras(model, load_official_extras)
    report(0.02, "Analysing the speech (HuBERT)")
    t0 = time.perf_counter()
    fn = feature_fn or release_feature_fn(projection, model.meta.get("hubert_dir"), device=dev)
    hubert_hid, hubert = fn(audio, total)
    times["features"] = time.perf_counter() - t0

    seed_motion, start = neutral_seed()
    known_parts, known_frames, known_take = known if known is not None else (None, None, None)
    given = None
    if known_take is not None and known_frames is not None and known_frames.any():
        given = (take_to_motion337(known_take.slice(0, n_frames), trans_mode="absolute"), known_frames)

    sampler = torch.Generator().manual_seed(options.seed)

    def choose(logits):
        return choose_motion_tokens(logits, options.temperature, sampler, options.top_p, options.coherence)[0]

    def window_done(w, n):
        report(0.05 + 0.85 * w / n, f"Generating gestures ({w}/{n})")

    run = run_release(model.generator, model.tokenizers, global_motion, hubert, hubert_hid, seed_motion, start,
                      n_windows=n_windows, choose=choose, known=given, record=False, progress=window_done,
                      cancel=cancel, timings=times)
    report(0.92, "Building the animation")
    poses, expressions, trans = run.poses[:n_frames], run.expressions[:n_frames], run.trans[:n_frames]
    if not options.travel:  # stay where the seed stood: remove the slow x/z drift, keep steps and sways
        from ..motion.root_motion import moving_average

        xz = trans[:, [0, 2]].astype(np.float64)
        xz = xz - moving_average(xz, max(3, int(round(4.0 * FPS)) | 1)) + start[[0, 2]]
        trans = trans.copy()
        trans[:, 0], trans[:, 2] = xz[:, 0], xz[:, 1]
    take = Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=expressions.astype(np.float32), fps=FPS)
    take = apply_intensity(take, options.intensity)
    if known_take is not None:
        take = keep_known(take, known_take.slice(0, n_frames), known_frames, parts_to_generate)
    if timings is not None:
        timings.update(times)
    take.meta = {"generator": "echomask-official-release", "config": model.config.name, "weights": model.path,
                 "seed": options.seed, "temperature": options.temperature, "travel": options.travel,
                 "intensity": options.intensity}
    if "face" in parts_to_generate and options.lipsync > 0:
        t0 = time.perf_counter()
        if phones_fn is None:
            from ..speech.phones import recognise_phones as phones_fn
        take = apply_phone_mouth(take, phones_fn(audio[:int(round(n_frames * 16000 / FPS))]), options.lipsync,
                                 known_frames)
        times["features"] += time.perf_counter() - t0
    return take
