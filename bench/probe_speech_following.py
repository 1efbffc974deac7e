"""Does the generated body follow *its own* speech? A probe on the motion itself (the model's CE probes measure its
inputs; a decoding prior such as the token bigram can make the body follow the speech less even when the model
reads it): beat consistency (BC, symmetric protocol, core.metrics.beat: motion beats of the upper body against
audio onsets) with the take's own speech (matched) and with another clip's speech (mismatched), on speech no
training used (BEAT2 speaker 2's speech-only clips), and the correlation of the body's joint speed with the
speech's loudness over time, likewise. Matched minus mismatched is how much the timing of the motion comes from
the speech; the training capture with its own speech is the reference. Needs ../shared/data.

    python bench/probe_speech_following.py [--weights W] [--seeds 0 1 2 3 4] [--options "token_prior=0" ""]
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
from common import ROOT, import_repo_as_package, training_capture
from select_checkpoint import SPEECH_ONLY, option_value

SMOOTH_S = 0.5   # both signals smoothed over this many seconds (gesture phrases, not single frames)


def _smooth(x: np.ndarray, fps: float) -> np.ndarray:
    n = max(1, int(round(SMOOTH_S * fps)))
    return np.convolve(x, np.ones(n) / n, mode="same")


def body_speed(take) -> np.ndarray:
    """(frames,) mean joint speed without translation, smoothed."""
    from echomask.core.metrics.kinematics import take_positions

    pos = take_positions(take, with_translation=False)
    speed = np.linalg.norm(np.diff(pos, axis=0), axis=-1).mean(-1) * take.fps
    return _smooth(np.concatenate([speed[:1], speed]), take.fps)


def loudness(audio: np.ndarray, frames: int, fps: float = 30.0) -> np.ndarray:
    """(frames,) log RMS of the speech per motion frame, smoothed."""
    hop = 16000 / fps
    rms = np.array([np.sqrt(np.mean(np.square(audio[int(i * hop):int((i + 1) * hop)])) + 1e-8) for i in range(frames)])
    return _smooth(np.log(rms + 1e-4), fps)


def bc_following(takes: list, audios: list, mean_speed) -> tuple[float, float]:
    """(mean matched BC, mean mismatched BC) x 10 over clips (symmetric protocol)."""
    from echomask.core.metrics import beat
    from echomask.core.metrics.kinematics import take_positions

    cfg = beat.BeatConfig(protocol="symmetric")
    pos = [take_positions(t, with_translation=False) for t in takes]
    bc = lambda i, j: beat.beat_consistency(pos[i], audios[j], takes[i].fps, mean_speed, cfg).score * 10
    matched = np.nanmean([bc(i, i) for i in range(len(takes))])
    mismatched = np.nanmean([bc(i, j) for i, j in itertools.permutations(range(len(takes)), 2)])
    return float(matched), float(mismatched)


def following(speeds: list, louds: list) -> tuple[float, float]:
    """(mean matched correlation, mean mismatched correlation) over clips of equal length."""
    n = min(len(s) for s in speeds + louds)
    r = lambda a, b: float(np.corrcoef(a[:n], b[:n])[0, 1])
    matched = np.mean([r(s, l) for s, l in zip(speeds, louds)])
    mismatched = np.mean([r(speeds[i], louds[j]) for i, j in itertools.permutations(range(len(speeds)), 2)])
    return float(matched), float(mismatched)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "echomask_small.safetensors"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--seconds", type=float, default=40.0, help="speech used per clip (from its start)")
    ap.add_argument("--options", nargs="+", default=[""], help='option sets, each "name=value ..." ("" = defaults)')
    args = ap.parse_args(argv)
    import_repo_as_package()

    from echomask.core.generation.inference import generate
    from echomask.core.model.checkpoint import load_model
    from echomask.core.speech.audio import load_speech
    from echomask.core.training.data import default_shared_data_dir

    data = default_shared_data_dir() / "beat2_samples"
    capture, entries = training_capture()
    cap_len = min(t.num_frames for t in capture)
    cap_speech = [load_speech(e.wav) for e in entries]
    from echomask.core.metrics.evaluate import BEAT2_MEAN_SPEED

    mean_speed = np.load(BEAT2_MEAN_SPEED)
    cut = [t.slice(0, cap_len) for t in capture]
    m, mm = following([body_speed(t) for t in cut], [loudness(a, cap_len) for a in cap_speech])
    b, bm = bc_following(cut, cap_speech, mean_speed)
    print(f"training capture with its speech: BC x10 matched {b:.3f}, mismatched {bm:.3f}, following {b - bm:+.3f}; "
          f"speed-loudness r matched {m:.3f}, mismatched {mm:.3f}, following {m - mm:+.3f}")
    speech = [load_speech(data / "wave16k" / f"{c}.wav")[: int(args.seconds * 16000)] for c in SPEECH_ONLY]
    model = load_model(args.weights)
    for spec in args.options:
        kw = {k.replace("-", "_"): option_value(v) for k, _, v in (x.partition("=") for x in spec.split())}
        rows = []
        for seed in args.seeds:
            takes = [generate(a, model=model, seed=seed, threads=1, **kw) for a in speech]
            rows.append(bc_following(takes, speech, mean_speed) +
                        following([body_speed(t) for t in takes], [loudness(a, t.num_frames) for a, t in zip(speech, takes)]))
        b, bm, m, mm = np.mean(rows, 0)
        sd_b, sd_r = np.std([r[0] - r[1] for r in rows]), np.std([r[2] - r[3] for r in rows])
        print(f"[{spec or 'defaults'}] speech-only clips, {len(args.seeds)} seeds: BC x10 matched {b:.3f}, mismatched "
              f"{bm:.3f}, following {b - bm:+.3f} (seed sd {sd_b:.3f}); speed-loudness r matched {m:.3f}, mismatched "
              f"{mm:.3f}, following {m - mm:+.3f} (seed sd {sd_r:.3f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
