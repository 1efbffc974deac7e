"""Choose among training checkpoints without touching the held-out tails: each checkpoint generates motion
for speech that no training ever used (BEAT2 speaker 2's speech-only clips 2_scott_0_3_3, 0_4_4, 0_5_5), and
that motion is compared with the *training* capture (the frames of the ground-truth takes before their
held-out tails): FGD with the project's own evaluator, mean joint speed and jerk relative to the capture.
Lower FGD = motion more like real motion of this speaker. Needs ../shared/data.

    python bench/select_checkpoint.py CKPT.safetensors [CKPT ...] [--seconds 40] [--temperature 0] [--smoothing 1] [--pause-variation 1]
"""
from __future__ import annotations

import argparse
import pathlib
from common import import_repo_as_package, speed_and_jerk, training_capture

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEECH_ONLY = ("2_scott_0_3_3", "2_scott_0_4_4", "2_scott_0_5_5")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--seconds", type=float, default=40.0, help="speech used per clip (from its start)")
    ap.add_argument("--temperature", type=float, default=None, help="decoding temperature (default: generate's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoothing", type=float, default=None, help="body smoothing in frames (default: generate's)")
    ap.add_argument("--pause-variation", type=float, default=None, help="Variation share in pauses (default: generate's)")
    ap.add_argument("--top-p", type=float, default=None, help="nucleus of level-0 sampling (default: generate's)")
    args = ap.parse_args(argv)
    import_repo_as_package()

    from echomask.core.speech.audio import load_speech
    from echomask.core.training.data import default_shared_data_dir
    from echomask.core.metrics.evaluate import load_fgd_evaluator
    from echomask.core.generation.inference import generate
    from echomask.core.metrics.frechet import frechet_distance
    from echomask.core.metrics.fgd_evaluator import latents

    data = default_shared_data_dir() / "beat2_samples"
    evaluator, source = load_fgd_evaluator(None)
    if evaluator is None:
        raise SystemExit(f"no FGD evaluator: {source}")
    capture, _ = training_capture()
    ref = latents(evaluator, capture)
    cap_speed, cap_jerk = speed_and_jerk(capture)
    speech = [load_speech(data / "wave16k" / f"{c}.wav")[: int(args.seconds * 16000)] for c in SPEECH_ONLY]
    print(f"reference: the training capture ({sum(t.num_frames for t in capture) / 30:.0f} s); speech: "
          f"{', '.join(SPEECH_ONLY)} ({args.seconds:g} s each, never trained on); FGD: {source} (not the paper's)")
    print(f"{'checkpoint':60s} {'FGD':>7} {'speed/capture':>14} {'jerk/capture':>13}")
    kw = {} if args.temperature is None else {"temperature": args.temperature}
    if args.smoothing is not None:
        kw["smoothing"] = args.smoothing
    if args.pause_variation is not None:
        kw["pause_variation"] = args.pause_variation
    if args.top_p is not None:
        kw["top_p"] = args.top_p
    for ckpt in args.checkpoints:
        takes = [generate(a, model=ckpt, seed=args.seed, **kw) for a in speech]
        fgd = frechet_distance(latents(evaluator, takes), ref)
        speed, jerk = speed_and_jerk(takes)
        print(f"{ckpt:60s} {fgd:7.1f} {speed / cap_speed:14.2f} {jerk / cap_jerk:13.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
