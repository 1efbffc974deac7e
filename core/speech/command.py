"""`python -m core speech-features AUDIO`: compute (and optionally save) speech features, list the phones,
and score them against a TextGrid alignment when one is given."""
from __future__ import annotations

import os
import time

import numpy as np

from ..errors import EchoMaskError


def run_cli(args) -> int:
    from .audio import load_speech
    from . import compute_speech_features
    from .builtin import SPEECH_FLAG

    audio = load_speech(args.audio)
    start = time.perf_counter()
    feats = compute_speech_features(audio, fps=args.fps, backend=args.backend, cache_dir=args.cache_dir)
    took = time.perf_counter() - start
    seconds = len(audio) / 16000
    print(f"{os.path.basename(args.audio)}: {seconds:.2f} s of audio -> {feats.num_frames} frames at "
          f"{feats.fps:g} fps; low {feats.low.shape[1]} + high {feats.high.shape[1]} features in {took:.2f} s")
    if args.backend == "builtin":
        print(f"speech frames: {float(np.mean(feats.high[:, SPEECH_FLAG] > 0.5)) * 100:.0f} %; "
              f"{len(feats.phones)} phone segments")
    if args.show_phones:
        for begin, end, phone in feats.phones[:args.show_phones]:
            print(f"  {begin:8.2f} {end:8.2f}  {phone}")
    if args.textgrid:
        from .phone_eval import phone_agreement
        from .textgrid import read_textgrid_phones

        score = phone_agreement(read_textgrid_phones(args.textgrid), feats.phones, seconds)
        print(f"agreement with {os.path.basename(args.textgrid)} (10 ms frames): phones {score.accuracy:.3f} "
              f"(speech frames {score.speech_accuracy:.3f}, chance {score.chance:.3f}); "
              f"speech/pause {score.pause_agreement:.3f}")
    if args.out:
        out = os.path.abspath(args.out)
        if not out.endswith(".npz"):
            raise EchoMaskError(f"--out must name a .npz file (got {args.out}).")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        np.savez(out, low=feats.low, high=feats.high, fps=np.float64(feats.fps),
                 phone_starts=np.array([p[0] for p in feats.phones], np.float64),
                 phone_ends=np.array([p[1] for p in feats.phones], np.float64),
                 phone_labels=np.array([p[2] for p in feats.phones], dtype="U8"))
        print(f"wrote {out}")
    return 0
