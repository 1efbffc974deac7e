"""The fitted face coefficients (`FaceFit`), their JSON file, and the features they define.

Everything here was fitted by `python -m core.face.fit` from the shared data (BEAT2 ground-truth face +
phone alignments; the Mixamo capture's ARKit curves + its recognised phones); the file stores numbers
only, no data. Terms:
- face vector x: [jaw axis-angle (3), expressions (100)]; fast part: x minus its ~1 s moving average.
- mouth coordinates z = [jaw opening (rad, along `jaw_axis`), mouth_basis^T expressions]: the directions
  in which phones move the face (principal directions of the phone-explained face motion).
- class_deltas[c]: mean fast face while mouth class c is spoken (co-articulated by a Gaussian of
  `sigma_s`, with the face shifted by `lag_s` against the sound).
- aperture(x) = aperture_weights . z_fast + aperture_offset: 0 at the mean bilabial face, 1 at the mean
  open-vowel face; "closed" below `closed_below`.
- Rhubarb shape classifier: softmax(shape_weights @ z_fast + shape_bias), classes SHAPE_NAMES.
- ARKit: arkit_weights @ (z - arkit_rest), clipped to [0, 1], on the mouth coordinates of the whole face
  (relative to `neutral`, not only its fast part, so a held pose stays held), for the ARKit shapes whose
  relation to phones the capture supports (others are absent). 0 = the face at rest in pauses.
"""
from __future__ import annotations

import dataclasses
import json
import os
from functools import lru_cache

import numpy as np

from ..errors import EchoMaskError
from .signals import EXPR, JAW, fast_part

FORMAT = "echomask-face-fit"
FORMAT_VERSION = 1
DEFAULT_PATH = os.path.join(os.path.dirname(__file__), "data", "face_fit.json")

_ARRAYS = ("class_deltas", "neutral", "jaw_axis", "mouth_basis", "aperture_weights", "closure_direction",
           "shape_weights", "shape_bias", "arkit_rest", "arkit_weights", "arkit_class_deltas")


@dataclasses.dataclass
class FaceFit:
    fps: float                      # frame rate of the fitting data (settings below are in seconds)
    lag_s: float                    # phone times shifted by this before use (negative: face leads)
    sigma_s: float                  # co-articulation: Gaussian sigma on the per-class phone shares
    baseline_s: float               # window of the slow part (moving average)
    class_names: list[str]
    class_deltas: np.ndarray        # (C, 103)
    neutral: np.ndarray             # (103,) mean face of the fitting takes
    jaw_axis: np.ndarray            # (3,) unit jaw-opening axis
    mouth_basis: np.ndarray         # (100, K) orthonormal expression directions
    aperture_weights: np.ndarray    # (1 + K,)
    aperture_offset: float
    closed_below: float
    sealed_level: float             # aperture the lips reach on a sealed bilabial (its 25th percentile in GT)
    closure_direction: np.ndarray   # (103,) face change that lowers the aperture by 1 (mouth subspace only)
    shape_names: list[str]
    shape_weights: np.ndarray       # (S, 1 + K)
    shape_bias: np.ndarray          # (S,)
    arkit_names: list[str] = dataclasses.field(default_factory=list)
    arkit_rest: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))      # (1 + K,)
    arkit_weights: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 1)))  # (A, 1 + K)
    arkit_class_deltas: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))  # (C, A)
    report: dict = dataclasses.field(default_factory=dict)   # fit diagnostics and the data it came from

    # ------------------------------------------------------------------------------------ features
    def baseline_frames(self, fps: float) -> int:
        return max(1, int(round(self.baseline_s * fps)) | 1)  # odd: the window centres on its frame

    def fast(self, face: np.ndarray, fps: float) -> np.ndarray:
        return fast_part(face, self.baseline_frames(fps))

    def mouth_coords(self, face_fast: np.ndarray) -> np.ndarray:
        """(N, 103) fast face -> (N, 1 + K) mouth coordinates."""
        jaw = face_fast[:, JAW] @ self.jaw_axis
        return np.concatenate([jaw[:, None], face_fast[:, EXPR] @ self.mouth_basis], axis=1)

    def aperture(self, face: np.ndarray, fps: float) -> np.ndarray:
        """(N,) mouth aperture of a face track (0 bilabial mean, 1 open-vowel mean)."""
        return self.mouth_coords(self.fast(face, fps)) @ self.aperture_weights + self.aperture_offset

    def shape_probabilities(self, face: np.ndarray, fps: float) -> np.ndarray:
        """(N, S) Rhubarb mouth-shape probabilities from the face alone."""
        logits = self.mouth_coords(self.fast(face, fps)) @ self.shape_weights.T + self.shape_bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def arkit(self, face: np.ndarray, fps: float) -> np.ndarray:
        """(N, A) ARKit weights in [0, 1] for `arkit_names`."""
        if not self.arkit_names:
            return np.zeros((len(face), 0))
        z = self.mouth_coords(np.asarray(face, np.float64) - self.neutral)
        return np.clip((z - self.arkit_rest) @ self.arkit_weights.T, 0.0, 1.0)

    @property
    def mouth_dims(self) -> int:
        return 1 + self.mouth_basis.shape[1]

    # ------------------------------------------------------------------------------------ file
    def to_json(self) -> dict:
        out = {"format": FORMAT, "format_version": FORMAT_VERSION}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                value = np.round(value.astype(np.float64), 7).tolist()
            elif isinstance(value, float):
                value = round(value, 7)
            out[field.name] = value
        return out

    def save(self, path: str | os.PathLike) -> None:
        path = os.fspath(path)
        tmp = path + ".partial"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=1)
            handle.write("\n")
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, data: dict, source: str = "face fit") -> "FaceFit":
        if data.get("format") != FORMAT:
            raise EchoMaskError(f"{source} is not an EchoMask face-fit file (format {data.get('format')!r}).")
        if data.get("format_version") != FORMAT_VERSION:
            raise EchoMaskError(f"{source} has face-fit format version {data.get('format_version')}, this "
                                f"EchoMask reads version {FORMAT_VERSION}; refit with `python -m core.face.fit`.")
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name not in data:
                if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                    raise EchoMaskError(f"{source} lacks '{field.name}'; refit with `python -m core.face.fit`.")
                continue
            value = data[field.name]
            kwargs[field.name] = np.asarray(value, np.float64) if field.name in _ARRAYS else value
        fit = cls(**kwargs)
        if fit.arkit_weights.size == 0:
            fit.arkit_weights = np.zeros((0, fit.mouth_dims))
        return fit

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaceFit":
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise EchoMaskError(f"Face-fit file not found: {path}. Create it with `python -m core.face.fit`.") from None
        except (OSError, ValueError) as exc:
            raise EchoMaskError(f"Cannot read the face-fit file {path}: {exc}") from None
        return cls.from_json(data, os.path.basename(path))


@lru_cache(maxsize=1)
def _default_fit() -> FaceFit:
    return FaceFit.load(DEFAULT_PATH)


def default_fit() -> FaceFit:
    """The coefficients shipped with EchoMask (core/face/data/face_fit.json)."""
    return _default_fit()
