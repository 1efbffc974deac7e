"""Where a model's L1 diversity (core.metrics.diversity) comes from, against the capture, on the held-out tails:
the mean deviation from the take's mean pose per joint group (the groups sum to L1div), for the capture, the
capture encoded and decoded by the model's tokenizers (the RVQ levels its generator predicts: what the
tokens can carry) and the generated takes; and, over each whole
clip, the deviation from each 64-frame window's own mean (within a window) and the spread of the windows'
means (between windows). A diagnostic for weights/MODEL_CARD.md; needs ../shared/data.

    python bench/diversity_by_part.py [--weights W] [--seeds 0 1] [--option levels=0 ...]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from common import ROOT, import_repo_as_package
from eval_tails_seeds import GT_CLIPS
from select_checkpoint import option_value

# SMPL-X joint indices (core.motion.skeleton's order): 0-21 body, 22 jaw, 23-24 eyes, 25-54 fingers
JOINT_GROUPS = {
    "spine+head": [0, 3, 6, 9, 12, 15],
    "legs": [1, 2, 4, 5, 7, 8, 10, 11],
    "arms": list(range(13, 22)),
    "jaw+eyes": [22, 23, 24],
    "fingers": list(range(25, 55)),
}
WINDOW = 64


def deviation_per_joint(positions: np.ndarray) -> np.ndarray:
    """(N, J, 3) -> (J,) mean over frames of sum_xyz |x - mean(x)| (summed over joints: L1div of one clip)."""
    return np.abs(positions - positions.mean(0)).sum(-1).mean(0)


def within_and_between_windows(positions: np.ndarray, window: int = WINDOW) -> tuple[float, float]:
    """Mean L1 deviation of frames from their window's mean, and of the windows' means from their mean."""
    flat = positions.reshape(len(positions), -1)
    k = len(flat) // window
    chunks = flat[: k * window].reshape(k, window, -1)
    means = chunks.mean(1)
    return (float(np.abs(chunks - means[:, None]).sum(-1).mean()),
            float(np.abs(means - means.mean(0)).sum(-1).mean()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(ROOT / "weights" / "echomask_small.safetensors"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="a decoding option")
    args = ap.parse_args(argv)
    import_repo_as_package()

    from echomask.core.generation.inference import generate
    from echomask.core.metrics.kinematics import take_positions
    from echomask.core.metrics.takeset import tail_start
    import torch

    from echomask.core.model.checkpoint import load_model
    from echomask.core.motion.motion_repr import parts_to_take, take_to_parts
    from echomask.core.motion.take import load_take
    from echomask.core.speech.audio import load_speech
    from echomask.core.training.data import default_shared_data_dir

    options = {k.replace("-", "_"): option_value(v) for k, _, v in (o.partition("=") for o in args.option)}
    data = default_shared_data_dir() / "beat2_samples"
    model = load_model(args.weights)
    tails = {"capture": [], "tokenized": [], "generated": []}   # (frames, per-joint deviation sum) per take
    levels = model.generator.levels

    def through_tokenizers(take):
        n = take.num_frames // model.tokenizers["upper"].downsample * model.tokenizers["upper"].downsample
        parts = {p: torch.from_numpy(v[:n]).float()[None] for p, v in take_to_parts(take).items()}
        with torch.no_grad():
            codes = model.tokenizers.encode_parts(parts)
            dec = model.tokenizers.decode_parts({p: c[..., :levels] for p, c in codes.items()})
        return parts_to_take({p: v[0].numpy() for p, v in dec.items()}, fps=take.fps)
    windows = []                                     # (clip, system, within, between)
    for clip in GT_CLIPS:
        capture = load_take(data / "smplxflame_30" / f"{clip}.npz")
        start, end = tail_start(capture.num_frames, 0.15), capture.num_frames
        speech = load_speech(data / "wave16k" / f"{clip}.wav")
        takes = [("capture", capture), ("tokenized", through_tokenizers(capture))] + [
            ("generated", generate(speech, model=model, seed=s, threads=1, **options)) for s in args.seeds]
        for i, (system, take) in enumerate(takes):
            pos = take_positions(take, with_translation=False)[:end]
            tail = pos[start:end]
            tails[system].append((len(tail), deviation_per_joint(tail) * len(tail)))
            if i != 1 and i <= 2:  # the whole clip, capture and the first seed
                windows.append((clip, system, *within_and_between_windows(pos)))
    print(f"held-out tails, L1 deviation per joint group (weights {args.weights}, seeds {args.seeds}, "
          f"options {options or 'defaults'}; tokenized: the capture through {levels} RVQ levels)")
    print(f"{'system':10s} {'L1div':>7} " + " ".join(f"{g:>11}" for g in JOINT_GROUPS))
    for system, rows in tails.items():
        per_joint = sum(r[1] for r in rows) / sum(r[0] for r in rows)
        print(f"{system:10s} {per_joint.sum():7.2f} "
              + " ".join(f"{per_joint[idx].sum():11.2f}" for idx in JOINT_GROUPS.values()))
    print(f"\nwhole clips, {WINDOW}-frame windows (first seed): deviation within a window / spread of window means")
    for clip, system, within, between in windows:
        print(f"{clip:15s} {system:10s} {within:7.2f} {between:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
