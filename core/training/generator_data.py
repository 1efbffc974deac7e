"""The generator's training data in memory: windows (core.training.data.MotionWindows), their tokens (encoded once by
the frozen tokenizers) and the speech features of each take, sampled at each window's source frames so a
time-stretched window hears its speech stretched the same way (the streamed equivalent: core.training.streaming)."""
from __future__ import annotations

import os
import tempfile

import numpy as np

from ..errors import EchoMaskError
from ..motion.skeleton import PARTS


def default_cache_dir() -> str:
    """Speech-feature cache: $ECHOMASK_CACHE or the system temp folder (never inside the data folder)."""
    base = os.environ.get("ECHOMASK_CACHE") or os.path.join(tempfile.gettempdir(), "echomask_cache")
    return os.path.join(base, "speech")


def sample_rows(arr: np.ndarray, pos: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Rows of `arr` (T, C) at fractional frame positions `pos` (linear interpolation or nearest row)."""
    t = len(arr)
    pos = np.clip(np.asarray(pos, np.float64), 0, t - 1)
    if nearest:
        return arr[np.rint(pos).astype(np.int64)]
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, t - 1)
    w = (pos - i0)[:, None].astype(np.float32)
    return arr[i0] * (1 - w) + arr[i1] * w


def builtin_feature_fn(backend: str, cache_dir: str | None):
    def compute(wav_path: str, fps: float):
        from ..speech.audio import load_speech
        from ..speech import compute_speech_features

        feats = compute_speech_features(load_speech(wav_path), fps=fps, backend=backend, cache_dir=cache_dir)
        return np.asarray(feats.low, np.float32), np.asarray(feats.high, np.float32)
    return compute


class GeneratorData:
    """Windows + their tokens (encoded once by the frozen tokenizers) + speech features per take."""

    def __init__(self, entries, tokenizers, config, feature_fn, split: str, takes=None, log=print,
                 mirror=True, stretch=(0.9, 1.1)):
        import torch

        from .data import MotionWindows

        entries = [e for e in entries if e.wav]
        if not entries:
            raise EchoMaskError("No take in the training data has its speech (.wav) next to it; the "
                                "generator learns speech -> motion and needs both.")
        self.ds = MotionWindows(entries, split, config.window, config.stride, mirror=mirror,
                                stretch_factors=stretch, takes=takes)
        self.entries = entries
        self.speech = {}
        for tid, e in enumerate(entries):
            if any(self.ds.variants[v].take_id == tid for v in range(len(self.ds.variants))):
                self.speech[tid] = feature_fn(e.wav, self.ds.takes[tid].fps)
        n = len(self.ds)
        self.codes = {}
        if n:
            with torch.no_grad():
                for p in PARTS:
                    chunks = []
                    for lo in range(0, n, 256):
                        idx = range(lo, min(n, lo + 256))
                        x = np.stack([self.ds.features[self.ds.windows[i].variant][p][
                            self.ds.windows[i].start:self.ds.windows[i].start + config.window] for i in idx])
                        x = tokenizers.normalize(p, torch.from_numpy(x))
                        chunks.append(tokenizers[p].encode(x).cpu())
                    self.codes[p] = torch.cat(chunks)
        log(f"{self.ds.summary()}")

    def __len__(self):
        return len(self.ds)

    def batch(self, idx, device):
        import torch

        from ..motion.motion_repr import parts_to_motion337

        raw = self.ds.batch(idx)
        parts = raw["parts"]
        motion = parts_to_motion337(parts)
        lows, highs = self.speech_rows(idx)
        t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt, device=device)
        return {
            "motion": t(motion), "low": t(lows), "high": t(highs),
            "codes": {p: self.codes[p][torch.as_tensor(np.asarray(idx))].to(device) for p in PARTS},
            "part_mask": {p: t(raw["part_mask"][p], torch.bool) for p in PARTS},
            "weight": t(raw["weight"]),
        }

    def speech_rows(self, idx) -> tuple[np.ndarray, np.ndarray]:
        """(low (B, T, ·), high (B, T, ·)) raw speech features of windows `idx`, sampled at each window's
        source frames (a time-stretched window hears its speech stretched the same way)."""
        lows, highs = [], []
        for i in idx:
            tid = self.ds.variants[self.ds.windows[int(i)].variant].take_id
            low, high = self.speech[tid]
            pos = self.ds.source_frames(int(i))
            lows.append(sample_rows(low, pos))
            highs.append(sample_rows(high, pos, nearest=True))
        return np.stack(lows), np.stack(highs)

    def motion_stats(self):
        """Mean and std of the generator's 337-d input frames over every training frame."""
        from ..motion.motion_repr import parts_to_motion337

        frames = np.concatenate([parts_to_motion337(f) for f in self.ds.features])
        return frames.mean(0), frames.std(0)

    def speech_stats(self):
        low = np.concatenate([v[0] for v in self.speech.values()])
        high = np.concatenate([v[1] for v in self.speech.values()])
        return low.mean(0), low.std(0), high.mean(0), high.std(0)
