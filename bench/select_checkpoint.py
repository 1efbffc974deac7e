"""Choose among training checkpoints without touching the held-out tails: each checkpoint generates motion
for speech that no training ever used (BEAT2 speaker 2's speech-only clips 2_scott_0_3_3, 0_4_4, 0_5_5), and
that motion is compared with the *training* capture (the frames of the ground-truth takes before their
held-out tails): FGD with the project's own evaluator, mean joint speed and jerk relative to the capture.
Lower FGD = motion more like real motion of this speaker. Needs ../shared/data.

    python bench/select_checkpoint.py CKPT.safetensors [CKPT ...] [--seconds 40] [--seeds 0,1,2,3,4]
        [--temperature 0] [--smoothing 1] [--pause-variation 1] [--option levels=0 --option intensity=1.2]

Prints one row per checkpoint and decoding seed, and the mean over the seeds (FGD's seed spread is +-15).
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np
from common import import_repo_as_package, speed_and_jerk, training_capture

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEECH_ONLY = ("2_scott_0_3_3", "2_scott_0_4_4", "2_scott_0_5_5")


def l1div(takes) -> float:
    """Pooled L1 diversity of joint positions without translation (core.metrics.diversity)."""
    from echomask.core.metrics.diversity import l1_diversity
    from echomask.core.metrics.kinematics import take_positions

    return l1_diversity([take_positions(t, with_translation=False) for t in takes])


PAUSE_AT_S, PAUSE_S = 10.0, 4.0   # a silence inserted into the first clip: the idle the model gives there


def pause_and_speech_speed(take, fps: float = 30.0) -> tuple[float, float]:
    """Mean joint speed (m/s, no translation) inside the inserted pause (0.5 s in from each edge) and in the
    speech outside it (1 s away from it), for a take of the first clip with the pause inserted."""
    from echomask.core.metrics.kinematics import take_positions

    pos = take_positions(take, with_translation=False)
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=-1).mean(-1) * fps
    a, b = int((PAUSE_AT_S + 0.5) * fps), int((PAUSE_AT_S + PAUSE_S - 0.5) * fps)
    far = np.ones(len(speed), bool)
    far[int((PAUSE_AT_S - 1) * fps):int((PAUSE_AT_S + PAUSE_S + 1) * fps)] = False
    return float(speed[a:b].mean()), float(speed[far].mean())


def skating_cm_s(takes) -> float:
    """Foot skating (cm/s, core.metrics.plausibility), averaged over takes, world positions with root motion."""
    from echomask.core.metrics.kinematics import take_positions
    from echomask.core.metrics.plausibility import foot_skating

    return 100.0 * sum(foot_skating(take_positions(t, with_translation=True), t.fps) for t in takes) / len(takes)


def option_value(text: str):
    """'2' -> 2, '1.5' -> 1.5, 'commit' -> 'commit'."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--seconds", type=float, default=40.0, help="speech used per clip (from its start)")
    ap.add_argument("--temperature", type=float, default=None, help="decoding temperature (default: generate's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="comma-separated decoding seeds (default: --seed alone)")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="any other GenerationOptions field (repeatable), e.g. levels=0, intensity=1.2")
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
    cap_l1div = l1div(capture)
    cap_skating = skating_cm_s(capture)
    speech = [load_speech(data / "wave16k" / f"{c}.wav")[: int(args.seconds * 16000)] for c in SPEECH_ONLY]
    print(f"reference: the training capture ({sum(t.num_frames for t in capture) / 30:.0f} s); speech: "
          f"{', '.join(SPEECH_ONLY)} ({args.seconds:g} s each, never trained on); FGD: {source} (not the paper's)")
    paused = np.concatenate([speech[0][: int(PAUSE_AT_S * 16000)], np.zeros(int(PAUSE_S * 16000), np.float32),
                             speech[0][int(PAUSE_AT_S * 16000):]])
    print(f"pause: {PAUSE_S:g} s of silence inserted {PAUSE_AT_S:g} s into {SPEECH_ONLY[0]}; mean joint speed (m/s) "
          f"in it and in the speech around it")
    print(f"{'checkpoint':60s} {'seed':>4} {'FGD':>7} {'speed/capture':>14} {'jerk/capture':>13} {'L1div/capture':>14} "
          f"{'pause m/s':>9} {'speech m/s':>10} {'skating cm/s':>12}")
    print(f"{'training capture':60s} {'':>4} {0.0:7.1f} {1.0:14.2f} {1.0:13.2f} {1.0:14.2f} {'':>9} {'':>10} "
          f"{cap_skating:12.2f}")
    kw = {} if args.temperature is None else {"temperature": args.temperature}
    if args.smoothing is not None:
        kw["smoothing"] = args.smoothing
    if args.pause_variation is not None:
        kw["pause_variation"] = args.pause_variation
    if args.top_p is not None:
        kw["top_p"] = args.top_p
    for item in args.option:
        name, _, value = item.partition("=")
        kw[name.strip().replace("-", "_")] = option_value(value.strip())
    if args.option:
        print("options:", ", ".join(f"{k}={v}" for k, v in kw.items()))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    for ckpt in args.checkpoints:
        rows = []
        for seed in seeds:
            takes = [generate(a, model=ckpt, seed=seed, **kw) for a in speech]
            fgd = frechet_distance(latents(evaluator, takes), ref)
            speed, jerk = speed_and_jerk(takes)
            pause, around = pause_and_speech_speed(generate(paused, model=ckpt, seed=seed, **kw))
            rows.append((fgd, speed / cap_speed, jerk / cap_jerk, l1div(takes) / cap_l1div, pause, around,
                         skating_cm_s(takes)))
            print(f"{ckpt:60s} {seed:4d} {rows[-1][0]:7.1f} {rows[-1][1]:14.2f} {rows[-1][2]:13.2f} {rows[-1][3]:14.2f} "
                  f"{pause:9.3f} {around:10.3f} {rows[-1][6]:12.2f}", flush=True)
        if len(seeds) > 1:
            m = [sum(r[i] for r in rows) / len(rows) for i in range(7)]
            print(f"{ckpt:60s} {'mean':>4} {m[0]:7.1f} {m[1]:14.2f} {m[2]:13.2f} {m[3]:14.2f} {m[4]:9.3f} {m[5]:10.3f} "
                  f"{m[6]:12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
