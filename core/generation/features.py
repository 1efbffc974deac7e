"""Speech features for the generation loop: the input check, and a stream that computes features chunk by
chunk as the windows advance (memory stays flat in the audio's length)."""
from __future__ import annotations

import collections
import os

import numpy as np

from ..errors import AudioError

SAMPLE_RATE = 16000


def check_audio(audio) -> np.ndarray:
    if isinstance(audio, (str, os.PathLike)):
        from ..speech.audio import load_speech

        return load_speech(audio)
    a = np.asarray(audio)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise AudioError(f"Speech must be one channel of 16 kHz samples; got an array of shape {a.shape}. "
                         f"Load files with core.speech.audio.load_speech, which converts them.")
    if a.size == 0:
        raise AudioError("The speech is empty (no samples): choose a sound with speech in it.")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise AudioError("The speech contains invalid (NaN or infinite) samples; re-export the audio.")
    return a


# Features of the last few speech chunks this process computed, by content: a warm worker (core.jobs.worker
# --serve) regenerating the same line with another seed, or re-keying it, skips recomputing them (about
# half of a warm 60 s generation on 2 cores). Features are deterministic in (samples, fps, backend).
FEATURE_MEMO_CHUNKS = 4
_FEATURE_MEMO: collections.OrderedDict = collections.OrderedDict()


def default_feature_fn(backend: str):
    def compute(audio16k: np.ndarray, fps: float):
        from ..speech import FEATURE_VERSION, compute_speech_features, get_backend
        from ..speech.cache import cache_key

        engine = get_backend(backend)
        key = cache_key(audio16k, fps, engine.name, f"{FEATURE_VERSION}/{engine.version}")
        hit = _FEATURE_MEMO.get(key)
        if hit is None:
            f = compute_speech_features(audio16k, fps=fps, backend=backend)
            hit = (np.asarray(f.low, np.float32), np.asarray(f.high, np.float32), tuple(f.phones or []))
            _FEATURE_MEMO[key] = hit
            while len(_FEATURE_MEMO) > FEATURE_MEMO_CHUNKS:
                _FEATURE_MEMO.popitem(last=False)
        else:
            _FEATURE_MEMO.move_to_end(key)
        low, high, phones = hit
        return low, high, list(phones)   # FeatureStream copies what it keeps; the phones list is its own
    return compute


class FeatureStream:
    """Speech features of a long clip, computed in chunks of `chunk_frames` (with `margin` frames of audio
    context on each side, cropped away) only when a window needs them; at most two chunks are held."""

    def __init__(self, audio: np.ndarray, n_frames: int, fps: float, feature_fn, chunk_frames: int = 1800,
                 margin: int = 45):
        self.audio, self.n_frames, self.fps, self.fn = audio, n_frames, fps, feature_fn
        self.chunk, self.margin = chunk_frames, margin
        self._chunks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.seconds = 0.0
        # Recognised phones [(start_s, end_s, label)] of the chunks computed so far, in clip time, for the
        # phone-accurate mouth (core.face.lipsync); only when the feature function returns them.
        self.phones: list[tuple[float, float, str]] = []

    def _sample(self, frame: int) -> int:
        return int(round(frame * SAMPLE_RATE / self.fps))

    def _compute(self, k: int):
        import time

        t0 = time.perf_counter()
        lo = k * self.chunk
        hi = min(self.n_frames, lo + self.chunk)
        clo, chi = max(0, lo - self.margin), min(self.n_frames, hi + self.margin)
        seg = self.audio[self._sample(clo):self._sample(chi)]
        want = self._sample(chi) - self._sample(clo)
        if len(seg) < want:  # past the end of the speech: silence
            seg = np.concatenate([seg, np.zeros(want - len(seg), np.float32)])
        need = chi - clo
        low, high, *rest = self.fn(seg, self.fps)
        if rest:  # keep the phones inside this chunk's own frames (the margins belong to its neighbours)
            t_seg, t_lo, t_hi = clo / self.fps, lo / self.fps, hi / self.fps
            for start, end, label in rest[0]:
                start, end = max(start + t_seg, t_lo), min(end + t_seg, t_hi)
                if end > start:
                    self.phones.append((start, end, label))
        if len(low) < need:  # rounding at the very end: repeat the last row
            pad = need - len(low)
            low = np.concatenate([low, np.repeat(low[-1:], pad, 0)])
            high = np.concatenate([high, np.repeat(high[-1:], pad, 0)])
        off = lo - clo
        self.seconds += time.perf_counter() - t0
        return low[off:off + hi - lo].copy(), high[off:off + hi - lo].copy()

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        ks = range(start // self.chunk, (stop - 1) // self.chunk + 1)
        for k in ks:
            if k not in self._chunks:
                self._chunks[k] = self._compute(k)
        for old in [k for k in self._chunks if k < ks[0]]:
            del self._chunks[old]
        low = np.concatenate([self._chunks[k][0] for k in ks])
        high = np.concatenate([self._chunks[k][1] for k in ks])
        off = start - ks[0] * self.chunk
        return low[off:off + stop - start], high[off:off + stop - start]
