"""How smoothly a re-keyed range joins the kept frames around it: the joint speed at the seams against the
take's own, for the bundled model on the bundled example speech (as an animator re-keys a stretch of a take).

    python bench/bench_rekey_seams.py [--seeds 0 1 2] [--ranges 90:180 300:390] [--option name=value ...]

Per seed: a take is generated, then the ranges are re-keyed with another seed, every frame outside them kept
(as the panel's Re-key does with the frames outside its range). Printed: the mean joint speed (body joints, no translation) in the
frames around each seam (`--around` either side) over the take's median frame speed, for the re-keyed take
and, at the same frames, for the take before re-keying (the motion's own peaks there); and the largest
one-frame speed ratio at a seam. A ratio near the original's means the seam does not show.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
from common import ROOT, import_repo_as_package


def frame_speed(take) -> np.ndarray:
    """(N,) mean joint speed per frame (m/s), joints without translation."""
    from echomask.core.metrics.kinematics import joint_speeds, take_positions

    return joint_speeds(take_positions(take, with_translation=False), take.fps).mean(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", default=str(ROOT / "examples" / "example_speech.wav"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ranges", nargs="+", default=["90:180", "300:390"], help="first:last+1 frames to re-key")
    ap.add_argument("--around", type=int, default=4, help="frames either side of a seam that count")
    ap.add_argument("--option", action="append", default=[], help="generation option name=value (both passes)")
    ap.add_argument("--blend-frames", type=int, default=None, help="research: seam easing length (default: the product's)")
    args = ap.parse_args(argv)
    import_repo_as_package()
    if args.blend_frames is not None:
        from echomask.core.motion import take_parts

        take_parts.blend_seams.__defaults__ = (args.blend_frames,)
    from echomask.core.generation.inference import generate
    from echomask.core.speech.audio import load_speech

    from select_checkpoint import option_value

    opts = {}
    for item in args.option:
        k, v = item.split("=", 1)
        opts[k.strip().replace("-", "_")] = option_value(v.strip())
    audio = load_speech(args.audio)
    ranges = [tuple(int(x) for x in r.split(":")) for r in args.ranges]
    rows = []
    for seed in args.seeds:
        base = generate(audio, seed=seed, threads=1, **opts)
        n = base.num_frames
        keep = np.ones(n, bool)
        for a, b in ranges:
            keep[a:min(b, n)] = False
        rekeyed = generate(audio, seed=seed + 100, threads=1, known_take=base, known_mask=keep, **opts)
        s0, s1 = frame_speed(base), frame_speed(rekeyed)
        med0 = float(np.median(s0))
        for a, b in ranges:
            for seam in (a, min(b, n) - 1):
                lo, hi = max(0, seam - args.around), min(n, seam + args.around + 1)
                rows.append((seed, seam, s1[lo:hi].mean() / med0, s0[lo:hi].mean() / med0,
                             s1[lo:hi].max() / med0, s0[lo:hi].max() / med0))
        print(f"seed {seed}: take {n} frames, median speed {med0:.3f} m/s; re-keyed interior / take "
              f"{np.mean([s1[a + 8:b - 8].mean() for a, b in ranges]) / med0:.2f}", flush=True)
    r = np.array(rows)
    print(f"\nseams ({len(r)}), mean joint speed within {args.around} frames over the take's median:")
    print(f"  re-keyed {r[:, 2].mean():.2f} (per seam {' '.join(f'{x:.2f}' for x in r[:, 2])})")
    print(f"  original {r[:, 3].mean():.2f} (per seam {' '.join(f'{x:.2f}' for x in r[:, 3])})")
    print(f"  largest frame: re-keyed {r[:, 4].mean():.2f} (max {r[:, 4].max():.2f}), original {r[:, 5].mean():.2f} "
          f"(max {r[:, 5].max():.2f})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    raise SystemExit(main())
