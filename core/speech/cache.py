"""Feature cache: one .npz per clip, named by a hash of the audio samples, the frame rate and the
backend with its version. Files are written atomically; unreadable or mismatched files are recomputed."""
from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile

import numpy as np

from ..errors import EchoMaskError
from ..paths import SHARED_DIR

# The read-only shared data folder beside the repository (…/shared): a cache must never go there.
_SHARED = SHARED_DIR.resolve()  # may be a link


def cache_key(audio: np.ndarray, fps: float, backend: str, version: str) -> str:
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{backend}|{version}|{fps!r}|{len(audio)}|".encode())
    digest.update(np.ascontiguousarray(audio, dtype="<f4").data)
    return digest.hexdigest()


def cache_file(cache_dir, audio, fps, backend, version) -> pathlib.Path:
    folder = pathlib.Path(cache_dir).expanduser().resolve()
    if folder == _SHARED or _SHARED in folder.parents:
        raise EchoMaskError(f"The feature cache cannot go inside the read-only shared data folder ({folder}); "
                            "choose another cache folder.")
    return folder / f"{backend}-{cache_key(audio, fps, backend, version)}.npz"


def load_cached(path: pathlib.Path, dims: tuple[int, int], n_frames: int):
    from . import SpeechFeatures

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            low, high = data["low"], data["high"]
            fps = float(data["fps"])
            starts, ends, labels = data["phone_starts"], data["phone_ends"], data["phone_labels"]
    except Exception:
        return None  # damaged or older format: recompute and overwrite
    if low.shape != (n_frames, dims[0]) or high.shape != (n_frames, dims[1]):
        return None
    phones = [(float(s), float(e), str(p)) for s, e, p in zip(starts, ends, labels)]
    return SpeechFeatures(low=low.astype(np.float32, copy=False), high=high.astype(np.float32, copy=False),
                          fps=fps, phones=phones)


def save_cached(path: pathlib.Path, features) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        phones = features.phones
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        with os.fdopen(handle, "wb") as out:
            np.savez(out, low=features.low, high=features.high, fps=np.float64(features.fps),
                     phone_starts=np.array([p[0] for p in phones], np.float64),
                     phone_ends=np.array([p[1] for p in phones], np.float64),
                     phone_labels=np.array([p[2] for p in phones], dtype="U8"))
        os.replace(tmp, path)
    except OSError as exc:
        # a cache that cannot be written only costs time; say so once, do not fail the job
        import warnings

        warnings.warn(f"could not write the speech-feature cache {path}: {exc}")
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass
