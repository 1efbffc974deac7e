"""Speech features for the EchoMask model: one interface, pluggable backends.

    feats = compute_speech_features(audio_16k_mono, fps=30.0, backend="builtin", cache_dir=None)
    feats.low   (T, LOW_DIM)  float32  low-level acoustics (builtin: 80 log-mel + onset + RMS + log-f0 + voicing)
    feats.high  (T, HIGH_DIM) float32  high-level (builtin: per-frame phone posteriors over PHONES + speech flag)
    feats.phones [(start_s, end_s, phone)]  the recogniser's segments ('AA', 'B', 'SIL', ...)
    T = int(round(len(audio) * fps / 16000)) for every length.

The paper's backend is frozen HuBERT (layer 11 = low, last layer = high). A backend is any object with
`name`, `version` (part of the cache key; bump it when outputs change), `dims() -> (low, high)` and
`compute(audio, fps, n_frames) -> (low, high, phones)`; add one with `register_backend(name, factory)`.
Column layouts of the built-in backend: core.speech.builtin (MEL, ONSET, RMS, LOG_F0, VOICING,
PHONE_POSTERIORS, SPEECH_FLAG). TextGrid alignments: core.speech.textgrid.read_textgrid_phones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ..errors import AudioError, EchoMaskError

SAMPLE_RATE = 16000
FEATURE_VERSION = 1  # the cache format and the interface; backends carry their own version too


@dataclass
class SpeechFeatures:
    low: np.ndarray    # (T, LOW_DIM) float32
    high: np.ndarray   # (T, HIGH_DIM) float32
    fps: float
    phones: list = field(default_factory=list)  # [(start_s, end_s, phone_label)]

    @property
    def num_frames(self) -> int:
        return int(self.low.shape[0])


class SpeechBackend(Protocol):
    name: str
    version: str

    def dims(self) -> tuple[int, int]: ...

    def compute(self, audio: np.ndarray, fps: float, n_frames: int
                ) -> tuple[np.ndarray, np.ndarray, list]: ...


def _builtin_factory():
    from .builtin import BuiltinBackend

    return BuiltinBackend()


def _hubert_factory():
    # The official release's HuBERT-large features (local model only; needs `transformers`).
    from .hubert import HubertBackend

    return HubertBackend()


_FACTORIES: dict[str, Callable[[], SpeechBackend]] = {"builtin": _builtin_factory, "hubert": _hubert_factory}
_INSTANCES: dict[str, SpeechBackend] = {}


def register_backend(name: str, factory: Callable[[], SpeechBackend]) -> None:
    """Make `backend=name` available; `factory()` is called once, on first use (import heavy code there)."""
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)


def available_backends() -> list[str]:
    return sorted(_FACTORIES)


def get_backend(name: str = "builtin") -> SpeechBackend:
    if name not in _FACTORIES:
        raise EchoMaskError(f"Unknown speech-feature backend '{name}'; available: {', '.join(available_backends())}.")
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]


def feature_dims(backend: str = "builtin") -> tuple[int, int]:
    """(LOW_DIM, HIGH_DIM) of a backend: builtin (84, 43)."""
    if backend == "builtin":  # no need to build the backend (and import scipy) just for its sizes
        from .builtin import HIGH_DIM, LOW_DIM

        return LOW_DIM, HIGH_DIM
    return tuple(get_backend(backend).dims())


def num_frames(n_samples: int, fps: float) -> int:
    return int(round(n_samples * fps / SAMPLE_RATE))


def _check_inputs(audio, fps) -> tuple[np.ndarray, float]:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise EchoMaskError(f"The feature frame rate must be a number, not {fps!r}.") from None
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        raise EchoMaskError(f"The feature frame rate must be between 0 and 1000 fps (got {fps}).")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise AudioError(f"Speech features need mono audio (got an array of shape {audio.shape}); load it with "
                         "core.speech.audio.load_speech, which mixes down to 16 kHz mono.")
    if np.issubdtype(audio.dtype, np.integer):  # PCM samples: scale to [-1, 1] as load_speech would
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max)
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise AudioError("The speech audio contains invalid (NaN or infinite) samples; re-export it.")
    return audio, fps


def compute_speech_features(audio: np.ndarray, fps: float = 30.0, backend: str = "builtin",
                            cache_dir: str | None = None) -> SpeechFeatures:
    """16 kHz mono float audio -> SpeechFeatures at `fps`. Deterministic. With `cache_dir`, results are
    stored there as one .npz per (audio content, fps, backend and its version) and reused."""
    audio, fps = _check_inputs(audio, fps)
    engine = get_backend(backend)
    if cache_dir is not None:
        from .cache import load_cached, save_cached, cache_file

        path = cache_file(cache_dir, audio, fps, engine.name, f"{FEATURE_VERSION}/{engine.version}")
        cached = load_cached(path, engine.dims(), num_frames(len(audio), fps))
        if cached is not None:
            return cached
    n = num_frames(len(audio), fps)
    low, high, phones = engine.compute(audio, fps, n)
    low_dim, high_dim = engine.dims()
    if low.shape != (n, low_dim) or high.shape != (n, high_dim):
        raise RuntimeError(f"backend '{engine.name}' returned {low.shape}/{high.shape}, "
                           f"expected ({n}, {low_dim})/({n}, {high_dim})")
    features = SpeechFeatures(low=np.ascontiguousarray(low, np.float32),
                              high=np.ascontiguousarray(high, np.float32), fps=fps, phones=list(phones))
    if cache_dir is not None:
        save_cached(path, features)
    return features


__all__ = ["SpeechFeatures", "SpeechBackend", "feature_dims", "compute_speech_features", "register_backend",
           "get_backend", "available_backends", "num_frames", "FEATURE_VERSION"]
