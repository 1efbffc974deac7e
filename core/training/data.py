"""Training data: manifests of takes (+ speech) and a dataset of fixed-length motion windows.

A manifest is a list of `TakeEntry` (motion `.npz`, its speech `.wav`, a loss weight, what kind of data it
is, which body parts it must not teach). `MotionWindows` cuts every take into 64-frame windows (stride 20)
after augmentation (left/right mirror, small time-stretch) and splits by time: the last `holdout` share of
each ground-truth take is validation data, and no window straddles the split.

Speech alignment for the generator: window i of a take covers its (augmented) frames start..start+63;
`source_frames(i)` gives the matching frame positions in the *original* take (= in its speech at the
take's fps), so audio features can be sampled at exactly those times (mirroring does not change timing;
a time-stretch by f maps augmented frame k to original frame k / f).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import pathlib

import numpy as np

from ..errors import EchoMaskError
from ..paths import SHARED_DATA_DIR
from ..motion.motion_repr import NormStats, mirror_take, take_to_parts, time_stretch_take
from ..motion.skeleton import PARTS
from ..motion.take import Take, load_take

KINDS = ("gt", "model")
SPLITS = ("", "train", "val")


@dataclasses.dataclass(frozen=True)
class TakeEntry:
    npz: str
    wav: str | None = None
    weight: float = 1.0              # loss weight of this take's windows (ground truth above model outputs)
    kind: str = "gt"                 # "gt" (captured motion) or "model" (a published model's output)
    masked_parts: tuple[str, ...] = ()  # parts whose data is missing or fake in this take: never trained on
    holdout: float = 0.15            # tail share kept out of training: validation for "gt" takes; for
    #                                  model outputs on the same speech, simply dropped (no speech leak)
    note: str = ""
    split: str = ""                  # "" = split by time (holdout); "train" / "val" = the whole take is
    #                                  training / validation data (an official split, e.g. BEAT2's csv)

    @property
    def name(self) -> str:
        return pathlib.Path(self.npz).stem

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"TakeEntry.kind must be one of {KINDS}")
        bad = set(self.masked_parts) - set(PARTS)
        if bad:
            raise ValueError(f"unknown body parts in masked_parts: {sorted(bad)}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError("holdout must be in [0, 1)")
        if self.split not in SPLITS:
            raise ValueError(f"TakeEntry.split must be one of {SPLITS}")


# ----------------------------------------------------------------------------------------------------------
# Manifests

def default_shared_data_dir() -> pathlib.Path:
    """../shared/data next to the repository (the project's licensed training data; never in the repo)."""
    return SHARED_DATA_DIR


def _find_wav(npz: pathlib.Path, extra_dirs=()) -> str | None:
    for folder in (npz.parent, npz.parent.parent / "wave16k", *extra_dirs):
        cand = pathlib.Path(folder) / (npz.stem + ".wav")
        if cand.is_file():
            return str(cand)
    return None


def shared_training_manifest(shared_data_dir: str | os.PathLike | None = None,
                             model_weight: float = 0.3, holdout: float = 0.15) -> list[TakeEntry]:
    """The shared data's motion for training: BEAT2 speaker-2 ground truth (weight 1.0, its last `holdout`
    share = validation) and published models' outputs (weight `model_weight`).

    Model outputs made from the same speech as a ground-truth take lose the same tail share, so the
    validation speech is never seen in training. CHGS wrote zeros for face, jaw and translation: its face
    is masked, and so is its lower part (zero translation would teach a height of 0 m).
    """
    root = pathlib.Path(shared_data_dir) if shared_data_dir else default_shared_data_dir()
    gt_dir = root / "beat2_samples" / "smplxflame_30"
    wav_dir = root / "beat2_samples" / "wave16k"
    gt = sorted(gt_dir.glob("*.npz"))
    if not gt:
        raise EchoMaskError(f"No ground-truth takes in {gt_dir}: is the shared data folder at {root}?")
    entries = [TakeEntry(str(p), _find_wav(p, [wav_dir]), 1.0, "gt", (), holdout, "BEAT2 ground truth")
               for p in gt]
    gt_speech = {p.stem for p in gt}
    for p in sorted((root / "beat2_model_outputs").glob("*/*.npz")):
        model = p.parent.name
        masked = ("face", "lower") if model == "chgs" else ()
        entries.append(TakeEntry(str(p), _find_wav(p, [wav_dir]), model_weight, "model", masked,
                                 holdout if p.stem in gt_speech else 0.0, f"{model} output"))
    return entries


def folder_manifest(folder: str | os.PathLike, weight: float = 1.0, kind: str = "gt",
                    holdout: float = 0.15) -> list[TakeEntry]:
    """Every BEAT2 `.npz` under `folder` (recursively) with its same-name `.wav` (same folder, or a sibling
    `wave16k/` folder as in BEAT2's layout)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise EchoMaskError(f"Training data folder not found: {folder}")
    files = sorted(pathlib.Path(p) for p in glob.glob(str(folder / "**" / "*.npz"), recursive=True))
    if not files:
        raise EchoMaskError(f"No .npz takes in {folder}: training needs BEAT2/SMPL-X motion files "
                            f"(poses, trans, expressions) with their speech as same-name .wav files.")
    return [TakeEntry(str(p), _find_wav(p), weight, kind, (), holdout) for p in files]


# ----------------------------------------------------------------------------------------------------------
# Windows

def stretched_length(n_frames: int, factor: float) -> int:
    """Frames of a take of `n_frames` after `time_stretch_take(take, factor)` (core.motion.take.resample_take's
    formula), known without resampling."""
    if factor == 1.0:
        return n_frames
    return max(1, int(np.floor((n_frames - 1) * factor + 1e-6)) + 1)


def variant_plan(entry: TakeEntry, n_frames: int, split: str, window: int, mirror: bool = True,
                 stretch_factors: tuple[float, ...] = (0.9, 1.1)) -> list[tuple[bool, float, int, int]]:
    """The augmented variants of one take that `split` uses and the frame range its windows may cover:
    [(mirrored, stretch, lo, hi)] in the variant's frames; ranges shorter than `window` are left out.

    split "train": every variant (mirror x stretch), frames whose source lies before the held-out tail
    (the whole take for entries of an official training split, none for validation entries);
    split "val": the un-augmented take, the held-out tail of ground-truth takes (the whole take for
    entries of an official validation split)."""
    n = n_frames
    split_frame = n - int(round(n * entry.holdout))   # first held-out frame (original time)
    if entry.split == "train":
        split_frame = n
    elif entry.split == "val":
        split_frame = 0
    out = []
    if split == "val":
        if entry.kind == "gt" and n - split_frame >= window:
            out.append((False, 1.0, split_frame, n))
        return out
    options = [(m, s) for m in ((False, True) if mirror else (False,))
               for s in (1.0, *[f for f in stretch_factors if f != 1.0])]
    for mirrored, stretch in options:
        # Augmented frame k shows original time k / stretch: keep frames whose source is < split.
        usable = min(stretched_length(n, stretch), int(np.floor((split_frame - 1) * stretch)) + 1)
        if usable >= window:
            out.append((mirrored, stretch, 0, usable))
    return out


@dataclasses.dataclass(frozen=True)
class Variant:
    """One augmented version of a take."""
    take_id: int
    mirrored: bool
    stretch: float


@dataclasses.dataclass(frozen=True)
class WindowRef:
    variant: int      # index into MotionWindows.variants
    start: int        # first frame, in the variant's frames


class MotionWindows:
    """Fixed-length windows of per-part motion features over a manifest.

    split "train": every augmented variant (mirror x stretch), windows entirely before the held-out tail;
    split "val": un-augmented windows entirely inside the held-out tail of ground-truth takes.
    Items are dicts of numpy arrays (torch's default collate turns them into batched tensors):
      parts {part: (window, D) float32 raw features}, part_mask {part: bool}, weight, take_id, start,
      mirrored, stretch, source_start (frame in the original take where the window begins).
    """

    def __init__(self, entries: list[TakeEntry], split: str = "train", window: int = 64, stride: int = 20,
                 mirror: bool = True, stretch_factors: tuple[float, ...] = (0.9, 1.1),
                 takes: list[Take] | None = None):
        if split not in ("train", "val"):
            raise ValueError("split must be 'train' or 'val'")
        if not entries:
            raise EchoMaskError("The training manifest is empty: no takes to learn from.")
        self.entries, self.split, self.window, self.stride = list(entries), split, window, stride
        self.takes = takes if takes is not None else [load_take(e.npz) for e in self.entries]
        self.variants: list[Variant] = []
        self.features: list[dict[str, np.ndarray]] = []
        self.windows: list[WindowRef] = []
        for tid, (entry, take) in enumerate(zip(self.entries, self.takes)):
            for mirrored, stretch, lo, hi in variant_plan(entry, take.num_frames, split, window, mirror,
                                                          stretch_factors):
                aug = mirror_take(take) if mirrored else take
                aug = time_stretch_take(aug, stretch) if stretch != 1.0 else aug
                self._add_variant(Variant(tid, mirrored, stretch), aug, lo, hi)

    def _add_variant(self, variant: Variant, take: Take, lo: int, hi: int) -> None:
        if hi - lo < self.window:
            return
        vid = len(self.variants)
        self.variants.append(variant)
        self.features.append(take_to_parts(take))
        for start in range(lo, hi - self.window + 1, self.stride):
            self.windows.append(WindowRef(vid, start))

    def __len__(self) -> int:
        return len(self.windows)

    def part_mask(self, variant: int) -> dict[str, bool]:
        masked = self.entries[self.variants[variant].take_id].masked_parts
        return {p: p not in masked for p in PARTS}

    def source_frames(self, i: int) -> np.ndarray:
        """(window,) float frame positions in the original take (its speech timeline at the take's fps)."""
        ref = self.windows[i]
        return (ref.start + np.arange(self.window)) / self.variants[ref.variant].stretch

    def __getitem__(self, i: int) -> dict:
        ref = self.windows[i]
        var = self.variants[ref.variant]
        feats = self.features[ref.variant]
        sl = slice(ref.start, ref.start + self.window)
        return {
            "parts": {p: feats[p][sl] for p in PARTS},
            "part_mask": self.part_mask(ref.variant),
            "weight": np.float32(self.entries[var.take_id].weight),
            "take_id": var.take_id,
            "start": ref.start,
            "source_start": np.float32(ref.start / var.stretch),
            "mirrored": var.mirrored,
            "stretch": np.float32(var.stretch),
        }

    def batch(self, indices) -> dict:
        """Stack windows without a DataLoader: parts {part: (B, window, D)}, part_mask {part: (B,) bool},
        weight (B,), take_id (B,), start (B,)."""
        items = [self[int(i)] for i in indices]
        return {
            "parts": {p: np.stack([it["parts"][p] for it in items]) for p in PARTS},
            "part_mask": {p: np.array([it["part_mask"][p] for it in items]) for p in PARTS},
            "weight": np.array([it["weight"] for it in items], np.float32),
            "take_id": np.array([it["take_id"] for it in items]),
            "start": np.array([it["start"] for it in items]),
        }

    def compute_stats(self) -> NormStats:
        """Per-part mean/std over every frame this split uses (training data: all augmented variants),
        skipping takes whose part is masked."""
        arrays: dict[str, list[np.ndarray]] = {p: [] for p in PARTS}
        for vid, feats in enumerate(self.features):
            starts = [w.start for w in self.windows if w.variant == vid]
            lo, hi = min(starts), max(starts) + self.window
            mask = self.part_mask(vid)
            for p in PARTS:
                if mask[p]:
                    arrays[p].append(feats[p][lo:hi])
        return NormStats.compute(arrays)

    def summary(self) -> str:
        frames = sum(self.takes[v.take_id].num_frames for v in self.variants if v.stretch == 1.0 and not v.mirrored)
        return (f"{self.split}: {len(self)} windows of {self.window} frames from {len(self.variants)} take "
                f"variants ({len({v.take_id for v in self.variants})} takes, {frames} source frames)")
