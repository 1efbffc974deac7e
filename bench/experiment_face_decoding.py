"""How the model's own face is best read out of the generator: the mouth with lip sync 0 (docs/LIPSYNC.md).

    python bench/experiment_face_decoding.py [--weights W] [--seeds 0 1]

The window loop samples each face token (coarse RVQ level) from the generator's level-0 distribution. Every
level of the generator also regresses its code vector (the latent MSE of training, docs/METHOD.md §5), and
its distribution has an expected code vector. This script runs the product's default decoding on the two
BEAT2 ground-truth takes' speech (seed S, lip sync 0), records the generator's face logits and regressed
latents window by window, and decodes the face from each readout through the face tokenizer:
- sampled: the take's face as generated (today's product);
- arg-max: the most likely level-0 code;
- expected: the level-0 code vectors weighted by their probability;
- regressed: the generator's own level-0 latent regression (and, `regressed, every level`, the sum over
  the levels it predicts);
- speech face head: the face the bundle's face head gives (core.model.face_head; when the weights have one);
  each of these with the phone mouth (recognised phones) at 0.5 and 0.75, and the published model's face on
  the same speech (SemTalk fork / MambaTalk) for scale.
Scored with bench/eval_lipsync.py's measures, the closure detector fitted on the other take, on the whole
take and on its held-out tail (the last 15 %, never trained on). Needs ../shared/data.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from eval_lipsync import OUR_WEIGHTS, PUBLISHED, TAKES, score  # noqa: E402

from core.face.fit import SHARED_DATA, FitConfig, beat2_take, fit_face, recognised_phones  # noqa: E402
from core.face.lipsync import apply_phone_mouth  # noqa: E402
from core.face.signals import face_vector, with_face  # noqa: E402
from core.motion.take import Take, load_take  # noqa: E402

TAIL = 0.15


def record_face_readouts(wav: str, weights: str, seed: int):
    """(take, {readout: face (n, 106-d face vector)}) for the default decoding with lip sync 0."""
    import torch

    from core.generation import decoding, loop
    from core.generation.inference import generate
    from core.model.checkpoint import load_model
    from core.motion.motion_repr import parts_to_take
    from core.speech.audio import load_speech

    mdl = load_model(weights)
    gen, tok = mdl.generator, mdl.tokenizers
    calls = []
    original = decoding.window_logits

    def recording(generator, frames, hidden, cond, hints=None, guidance=1.0):
        dev = next(generator.parameters()).device
        out = generator(torch.from_numpy(frames)[None].to(dev), torch.from_numpy(hidden)[None].to(dev), None, None,
                        cond=cond, known=hints)
        calls.append((out["logits"]["face"][0].float(), out["features"]["face"][0].float()))   # (N, L, K), (N, L, d)
        return original(generator, frames, hidden, cond, hints, guidance)

    decoding.window_logits = recording
    try:
        take = generate(load_speech(wav), seed=seed, lipsync=0.0, model=mdl, face_source="tokens")
    finally:
        decoding.window_logits = original
    seed_tokens = mdl.config.seed_frames // tok["face"].downsample
    logits = torch.cat([lg if i == 0 else lg[seed_tokens:] for i, (lg, _) in enumerate(calls)])
    feats = torch.cat([ft if i == 0 else ft[seed_tokens:] for i, (_, ft) in enumerate(calls)])
    face_tok = tok["face"]
    k = logits.shape[-1]
    book0 = face_tok.latent_per_level(torch.arange(k)[None, :, None])[0, :, 0]     # (K, d) level-0 codebook
    probs = torch.softmax(logits[:, 0], -1)                                   # (N, K)
    latents = {
        "arg-max": book0[logits[:, 0].argmax(-1)],
        "expected": probs @ book0,
        "regressed": feats[:, 0],
        "regressed, every level": feats.sum(1),
    }
    n = take.num_frames
    faces = {"sampled": face_vector(take)}
    with torch.no_grad():
        for name, lat in latents.items():
            dec = tok.denormalize("face", face_tok.decode_latent(lat[None]))[0].cpu().numpy()[:n]
            faces[name] = face_vector(parts_to_take({"face": dec}, fps=take.fps))
    if mdl.face_head is not None:   # the speech face head, same seed (the body is the same take)
        faces["speech face head"] = face_vector(generate(load_speech(wav), seed=seed, lipsync=0.0, model=mdl,
                                                         face_source="head"))
    return take, faces


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=OUR_WEIGHTS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--data", default=SHARED_DATA)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    takes = {t: beat2_take(t, args.data) for t in TAKES}
    rows = {}
    for test in TAKES:
        other = [t for t in TAKES if t != test][0]
        fit = fit_face([takes[other]], FitConfig())
        gt = takes[test].face
        n = len(gt)
        tail = int(round(n * (1 - TAIL)))
        wav = os.path.join(args.data, "beat2_samples", "wave16k", test + ".wav")
        phones = takes[test].phones
        for seed in args.seeds:
            _, faces = record_face_readouts(wav, args.weights, seed)
            if test in PUBLISHED and os.path.isfile(os.path.join(args.data, PUBLISHED[test][1])):
                faces["published model (same speech)"] = face_vector(load_take(os.path.join(args.data, PUBLISHED[test][1])))
            rec = recognised_phones(wav)
            for name in [k for k in faces if k in ("sampled", "speech face head")]:
                for strength in (0.5, 0.75):   # the product's mouth: recognised phones on top
                    face = faces[name]
                    take = with_face(Take(poses=np.zeros((len(face), 165), np.float32),
                                          trans=np.zeros((len(face), 3), np.float32),
                                          expressions=np.zeros((len(face), 100), np.float32), fps=takes[test].fps), face)
                    faces[f"{name} + phones {strength:g}"] = face_vector(apply_phone_mouth(take, rec, strength, fit))
            for name, face in faces.items():
                face = np.concatenate([face, np.repeat(face[-1:], max(0, n - len(face)), 0)])
                whole = score(face[:n], gt, phones, takes[test].fps, fit)
                t0 = tail / takes[test].fps
                shifted = [(a - t0, b - t0, ph) for a, b, ph in phones if a >= t0]
                held = score(face[tail:n], gt[tail:], shifted, takes[test].fps, fit)
                rows.setdefault(name, []).append((whole, held))
                print(f"{test} seed {seed} {name:32s} whole: recall {whole['closure_recall']:.2f} "
                      f"open {whole['open_median_abs_ms']:.0f} ms jaw MSE {whole['jaw_mse_e4']:.3f} "
                      f"expr {whole['expr_mse']:.3f} jaw corr {whole['jaw_open_corr']:.2f} | tail: jaw MSE "
                      f"{held['jaw_mse_e4']:.3f} expr {held['expr_mse']:.3f} jaw corr {held['jaw_open_corr']:.2f}",
                      flush=True)
    print("\n| readout | closure recall | precision | opening error ms | jaw MSE e-4 | expr MSE | jaw corr | "
          "tail jaw MSE | tail expr MSE | tail jaw corr |\n|---|---|---|---|---|---|---|---|---|---|")
    for name, pairs in rows.items():
        w = {k: np.nanmean([p[0][k] for p in pairs]) for k in pairs[0][0] if isinstance(pairs[0][0][k], float)}
        h = {k: np.nanmean([p[1][k] for p in pairs]) for k in pairs[0][1] if isinstance(pairs[0][1][k], float)}
        print(f"| {name} | {w['closure_recall']:.2f} | {w['closure_precision']:.2f} | {w['open_median_abs_ms']:.0f} | "
              f"{w['jaw_mse_e4']:.3f} | {w['expr_mse']:.3f} | {w['jaw_open_corr']:.2f} | {h['jaw_mse_e4']:.3f} | "
              f"{h['expr_mse']:.3f} | {h['jaw_open_corr']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
