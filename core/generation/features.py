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
    if backend == "builtin":
        return BuiltinFeatures()

    def compute(audio16k: np.ndarray, fps: float):
        return _memoised(backend, audio16k, fps)
    return compute


def _memo_key(backend: str, audio16k: np.ndarray, fps: float):
    from ..speech import FEATURE_VERSION, get_backend
    from ..speech.cache import cache_key

    engine = get_backend(backend)
    return engine, cache_key(audio16k, fps, engine.name, f"{FEATURE_VERSION}/{engine.version}")


def _remember(key, low, high, phones):
    _FEATURE_MEMO[key] = (np.asarray(low, np.float32), np.asarray(high, np.float32), tuple(phones or []))
    while len(_FEATURE_MEMO) > FEATURE_MEMO_CHUNKS:
        _FEATURE_MEMO.popitem(last=False)


def _memoised(backend: str, audio16k: np.ndarray, fps: float):
    from ..speech import compute_speech_features

    _, key = _memo_key(backend, audio16k, fps)
    if key not in _FEATURE_MEMO:
        f = compute_speech_features(audio16k, fps=fps, backend=backend)
        _remember(key, f.low, f.high, f.phones)
    _FEATURE_MEMO.move_to_end(key)
    low, high, phones = _FEATURE_MEMO[key]
    return low, high, list(phones)   # FeatureStream copies what it keeps; the phones list is its own


class BuiltinFeatures:
    """The built-in backend's features for the feature stream. Called, it computes a chunk at once (as any
    feature function); `start` instead sends the chunk's phone recognition to the helper process
    (core.speech.phone_process) and returns a PendingChunk whose rows become final as the phones arrive."""

    def __call__(self, audio16k: np.ndarray, fps: float):
        return _memoised("builtin", audio16k, fps)

    def start(self, audio16k: np.ndarray, fps: float) -> "PendingChunk":
        return PendingChunk(audio16k, fps)


class PendingChunk:
    """One chunk of built-in features: the acoustics computed here, the phones on the helper. high_rows(stop)
    waits only for the phones that rows [0, stop) need; finish() gives (low, high, phones), as the backend's
    compute() would (high rows depend only on the phones overlapping them: core.speech.builtin)."""

    def __init__(self, audio16k: np.ndarray, fps: float):
        from ..speech import num_frames

        self.engine, self.key = _memo_key("builtin", audio16k, fps)
        self.fps, self.n = float(fps), num_frames(len(audio16k), fps)
        self.job = None
        self._low = self._rms = self.high = None
        self.ready = 0
        hit = _FEATURE_MEMO.get(self.key)
        if hit is not None:   # a warm worker regenerating the same line: nothing to wait for
            _FEATURE_MEMO.move_to_end(self.key)
            self._low, self.high, phones = hit
            self.phones, self.ready = list(phones), self.n
            return
        from ..speech.phone_process import submit_phones

        self.audio = audio16k
        self.job = submit_phones(audio16k, self.engine.recogniser)

    def low(self) -> np.ndarray:
        if self._low is None:
            self._low, self._rms = self.engine.low_features(self.audio, self.fps, self.n)
        return self._low

    def high_rows(self, stop: int) -> np.ndarray:
        """The high features with rows [0, stop) final."""
        stop = min(stop, self.n)
        while self.ready < stop:
            # a row is final once the phones reach past its end; one frame of slack for float rounding
            self.job.wait_until((stop + 2) / self.fps)
            self.high = self.engine.high_features(self.job.segments, self.fps, self.n, self._rms_db())
            covered = self.job.covered_s
            self.ready = self.n if self.job.done else min(self.n, max(0, int(np.floor(covered * self.fps)) - 1))
        return self.high

    def _rms_db(self) -> np.ndarray:
        self.low()
        return self._rms

    def finish(self):
        if self.job is not None:
            self.high_rows(self.n)
            self.phones = list(self.job.finish())
            _remember(self.key, self.low(), self.high, self.phones)
            self.job = self.audio = None
        return self.low(), self.high, list(self.phones)

    def abandon(self):
        if self.job is not None and self.job.helper is not None and not self.job.done:
            self.job.helper.abandon(self.job)
        self.job = self.audio = None


def _abandon_all(pending: dict):
    for chunk in pending.values():
        chunk.abandon()


class FeatureStream:
    """Speech features of a long clip, computed in chunks of `chunk_frames` (with `margin` frames of audio
    context on each side, cropped away) only when a window needs them; at most two chunks are held, plus the
    next one whose phones the helper process recognises ahead (feature functions with a `start`, i.e. the
    built-in backend's: see BuiltinFeatures)."""

    def __init__(self, audio: np.ndarray, n_frames: int, fps: float, feature_fn, chunk_frames: int = 1800,
                 margin: int = 45):
        import weakref

        self.audio, self.n_frames, self.fps, self.fn = audio, n_frames, fps, feature_fn
        self.chunk, self.margin = chunk_frames, margin
        self._chunks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._pending: dict[int, PendingChunk] = {}
        self._phones_from = 0     # the first chunk whose phones are not in self._phones yet
        self.seconds = 0.0
        # Recognised phones [(start_s, end_s, label)] of the chunks computed so far, in clip time, for the
        # phone-accurate mouth (core.face.lipsync); only when the feature function returns them.
        self._phones: list[tuple[float, float, str]] = []
        # A generation that stops early (cancel, an error) must not leave the helper decoding for nobody.
        self._finalizer = weakref.finalize(self, _abandon_all, self._pending)

    @property
    def phones(self) -> list[tuple[float, float, str]]:
        """The phones of every chunk started so far (waits for those still being recognised)."""
        last = max([*self._pending, *self._chunks], default=None)
        if last is not None:
            self._collect(last)
        return self._phones

    def _sample(self, frame: int) -> int:
        return int(round(frame * SAMPLE_RATE / self.fps))

    def _bounds(self, k: int):
        lo = k * self.chunk
        hi = min(self.n_frames, lo + self.chunk)
        clo, chi = max(0, lo - self.margin), min(self.n_frames, hi + self.margin)
        return lo, hi, clo, chi

    def _segment(self, k: int) -> np.ndarray:
        _, _, clo, chi = self._bounds(k)
        seg = self.audio[self._sample(clo):self._sample(chi)]
        want = self._sample(chi) - self._sample(clo)
        if len(seg) < want:  # past the end of the speech: silence
            seg = np.concatenate([seg, np.zeros(want - len(seg), np.float32)])
        return seg

    def _keep_phones(self, k: int, phones) -> None:
        """Keep the phones inside chunk k's own frames (the margins belong to its neighbours)."""
        lo, hi, clo, _ = self._bounds(k)
        t_seg, t_lo, t_hi = clo / self.fps, lo / self.fps, hi / self.fps
        for start, end, label in phones:
            start, end = max(start + t_seg, t_lo), min(end + t_seg, t_hi)
            if end > start:
                self._phones.append((start, end, label))

    def _crop(self, k: int, low: np.ndarray, high: np.ndarray):
        lo, hi, clo, chi = self._bounds(k)
        need = chi - clo
        if len(low) < need:  # rounding at the very end: repeat the last row
            pad = need - len(low)
            low = np.concatenate([low, np.repeat(low[-1:], pad, 0)])
            high = np.concatenate([high, np.repeat(high[-1:], pad, 0)])
        off = lo - clo
        return low[off:off + hi - lo].copy(), high[off:off + hi - lo].copy()

    def _compute(self, k: int):
        """Chunk k at once (feature functions without `start`)."""
        low, high, *rest = self.fn(self._segment(k), self.fps)
        if rest:
            self._keep_phones(k, rest[0])
        self._phones_from = k + 1
        return self._crop(k, low, high)

    def _start(self, k: int) -> None:
        if k not in self._pending and k not in self._chunks and k * self.chunk < self.n_frames:
            self._pending[k] = self.fn.start(self._segment(k), self.fps)

    def _collect(self, k: int) -> None:
        """Finish the pending chunks up to k, in order (their phones join self._phones in clip order)."""
        for j in range(self._phones_from, k + 1):
            pending = self._pending.pop(j, None)
            if pending is not None:
                low, high, phones = pending.finish()
                self._keep_phones(j, phones)
                self._chunks[j] = self._crop(j, low, high)
            self._phones_from = j + 1

    def _pending_rows(self, k: int, a: int, b: int):
        """Rows [a, b) of pending chunk k (chunk-local frames), waiting only for the phones they need."""
        lo, _, clo, _ = self._bounds(k)
        pending = self._pending[k]
        off = lo - clo
        stop = off + b
        if stop > pending.n:    # rows past the audio's rounding at the very end: the whole chunk
            self._collect(k)
            low, high = self._chunks[k]
            return low[a:b], high[a:b]
        low = pending.low()           # the acoustics here while the helper decodes the phones
        return low[off + a:stop], pending.high_rows(stop)[off + a:stop]   # rows() concatenates: a copy

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        import time

        t0 = time.perf_counter()
        ks = range(start // self.chunk, (stop - 1) // self.chunk + 1)
        streamed = hasattr(self.fn, "start")
        if streamed:
            for k in ks:
                self._start(k)
            self._start(ks[-1] + 1)   # the helper recognises the next chunk while the model works on these
        else:
            for k in ks:
                if k not in self._chunks:
                    self._chunks[k] = self._compute(k)
        if ks[0] > 0 and streamed:
            self._collect(ks[0] - 1)
        for old in [k for k in self._chunks if k < ks[0]]:
            del self._chunks[old]
        lows, highs = [], []
        for k in ks:
            a = max(start, k * self.chunk) - k * self.chunk
            b = min(stop, (k + 1) * self.chunk) - k * self.chunk
            if k in self._chunks:
                low, high = self._chunks[k]
                low, high = low[a:b], high[a:b]
            else:
                low, high = self._pending_rows(k, a, b)
            lows.append(low)
            highs.append(high)
        self.seconds += time.perf_counter() - t0
        return np.concatenate(lows), np.concatenate(highs)
