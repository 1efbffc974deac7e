"""Our face output -> any character's shape keys (no bpy): channels, formulas, presets, name matching.

A mapping is a list of rows "target shape key <- formula", as in Faceit's target-shapes list. A formula is
a sum of weighted channels plus a constant, e.g. `arkit.jawOpen`, `0.8*viseme.A`, `25*jaw_open - 0.05`
(empty: the row is unmapped). Values are clamped to the mapping's range (default 0..1) before keying.

Channels (per frame):
  jaw_open            jaw rotation about the fitted opening axis, radians
  jaw_x, jaw_y, jaw_z jaw axis-angle components, radians
  exp000 .. exp099    the 100 SMPL-X expression coefficients
  aperture            fitted mouth opening: 0 = mean bilabial (closed), 1 = mean open vowel
  arkit.<name>        fitted ARKit weight (0..1) for the ARKit shapes the data relates to speech
  shape.<A..H, X>     Rhubarb mouth-shape probability from the face alone (fitted classifier; weak)
  viseme.<A..H, X>    Rhubarb mouth shape from the phones, co-articulated (needs phones; falls back to
                      shape.* with a note when there are none)
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from ..errors import EchoMaskError
from ..motion.take import Take
from .fitted import FaceFit, default_fit
from .phone_classes import SHAPE_NAMES, shape_shares, shift_phones
from .signals import EXPR, JAW, face_vector, smooth

PRESET_FORMAT = "echomask-face-mapping"
PRESET_VERSION = 1
RAW_CHANNELS = ("jaw_open", "jaw_x", "jaw_y", "jaw_z", "aperture") + tuple(f"exp{i:03d}" for i in range(100))


class FaceMappingError(EchoMaskError):
    """A mapping that cannot be applied: bad formula, unknown channel, no matching shape keys."""


# ---------------------------------------------------------------------------------------------- formulas

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)?"
_TERM = re.compile(rf"\s*([-+])?\s*(?:({_NUMBER})\s*\*?\s*({_NAME})?|({_NAME})\s*(?:\*\s*({_NUMBER}))?)\s*")


@dataclasses.dataclass(frozen=True)
class Formula:
    terms: tuple[tuple[float, str], ...]   # (weight, channel)
    constant: float = 0.0

    @property
    def channels(self) -> list[str]:
        return [name for _, name in self.terms]

    def __str__(self) -> str:
        parts = []
        for weight, name in self.terms:
            parts.append(("- " if weight < 0 else "+ ") + (name if abs(weight) == 1 else f"{abs(weight):g}*{name}"))
        if self.constant or not parts:
            parts.append(("- " if self.constant < 0 else "+ ") + f"{abs(self.constant):g}")
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else "-" + text[2:]


def parse_formula(text: str) -> Formula:
    """'0.8*arkit.jawOpen - 0.1*exp003 + 0.05' -> Formula; raises FaceMappingError saying what is wrong."""
    text = (text or "").strip()
    if not text:
        return Formula(())
    terms: list[tuple[float, str]] = []
    constant = 0.0
    pos = 0
    while pos < len(text):
        match = _TERM.match(text, pos)
        if not match or match.end() == pos or (terms or constant) and not match.group(1):
            raise FaceMappingError(f"Cannot read the formula '{text}' at '{text[pos:]}'. Write terms like "
                                   f"'0.8*arkit.jawOpen', 'exp003', '- 0.1' joined by + or -.")
        sign = -1.0 if match.group(1) == "-" else 1.0
        number, name_after, name, number_after = match.groups()[1:]
        if number is not None and name_after is None and "*" in match.group(0):
            raise FaceMappingError(f"The formula '{text}' multiplies {number} by nothing; write e.g. "
                                   f"'{number}*exp003'.")
        if number is not None and name_after is None:
            constant += sign * float(number)
        elif number is not None:
            terms.append((sign * float(number), name_after))
        else:
            terms.append((sign * (float(number_after) if number_after else 1.0), name))
        pos = match.end()
    return Formula(tuple(terms), constant)


# ---------------------------------------------------------------------------------------------- channels

class FaceChannels:
    """Per-frame channel values of one face track, computed on demand."""

    def __init__(self, face: np.ndarray, fps: float, fit: FaceFit | None = None, phones=None):
        self.face = np.asarray(face, np.float64)
        self.fps = float(fps)
        self.fit = fit or default_fit()
        self.phones = phones
        self.notes: list[str] = []
        self._cache: dict[str, np.ndarray] = {}

    @classmethod
    def from_take(cls, take: Take, fit: FaceFit | None = None, phones=None) -> "FaceChannels":
        return cls(face_vector(take), take.fps, fit, phones)

    @property
    def num_frames(self) -> int:
        return len(self.face)

    def names(self) -> list[str]:
        names = list(RAW_CHANNELS)
        names += [f"arkit.{n}" for n in self.fit.arkit_names]
        names += [f"shape.{s}" for s in SHAPE_NAMES] + [f"viseme.{s}" for s in SHAPE_NAMES]
        return names

    def _family(self, family: str) -> None:
        fit = self.fit
        if family == "arkit":
            values = fit.arkit(self.face, self.fps)
            self._cache.update({f"arkit.{n}": values[:, i] for i, n in enumerate(fit.arkit_names)})
        elif family == "shape":
            values = fit.shape_probabilities(self.face, self.fps)
            self._cache.update({f"shape.{n}": values[:, i] for i, n in enumerate(fit.shape_names)})
        elif family == "viseme":
            if self.phones is None:
                self._family("shape")
                values = np.stack([self._cache[f"shape.{s}"] for s in SHAPE_NAMES], axis=1)
                self.notes.append("No phones were given, so the mouth shapes (viseme.*) come from the face "
                                  "alone, which is much less accurate; give the speech or a phone alignment.")
            else:
                shares = shape_shares(shift_phones(self.phones, fit.lag_s), self.num_frames, self.fps)
                values = smooth(shares, fit.sigma_s * self.fps)
            self._cache.update({f"viseme.{s}": values[:, i] for i, s in enumerate(SHAPE_NAMES)})

    def get(self, name: str) -> np.ndarray:
        if name in self._cache:
            return self._cache[name]
        face = self.face
        if name == "jaw_open":
            value = face[:, JAW] @ self.fit.jaw_axis
        elif name in ("jaw_x", "jaw_y", "jaw_z"):
            value = face[:, "xyz".index(name[-1])]
        elif re.fullmatch(r"exp\d{3}", name) and int(name[3:]) < 100:
            value = face[:, EXPR][:, int(name[3:])]
        elif name == "aperture":
            value = self.fit.aperture(face, self.fps)
        elif "." in name and name.split(".", 1)[0] in ("arkit", "shape", "viseme"):
            self._family(name.split(".", 1)[0])
            if name not in self._cache:
                raise FaceMappingError(self._unknown(name))
            return self._cache[name]
        else:
            raise FaceMappingError(self._unknown(name))
        self._cache[name] = value
        return value

    def _unknown(self, name: str) -> str:
        family = name.split(".", 1)[0] if "." in name else None
        if family == "arkit":
            return (f"No fitted channel '{name}': the shipped data relates only these ARKit shapes to speech: "
                    f"{', '.join(self.fit.arkit_names) or 'none'}.")
        return (f"Unknown channel '{name}'. Channels: jaw_open, jaw_x/y/z, exp000..exp099, aperture, "
                f"arkit.<name>, shape.<A..H,X>, viseme.<A..H,X>.")

    def evaluate(self, formula: Formula) -> np.ndarray:
        out = np.full(self.num_frames, formula.constant, np.float64)
        for weight, name in formula.terms:
            out += weight * self.get(name)
        return out


# ---------------------------------------------------------------------------------------------- mappings

@dataclasses.dataclass
class FaceTarget:
    target: str             # shape-key name on the character
    formula: str = ""       # empty: unmapped
    enabled: bool = True


@dataclasses.dataclass
class FaceMapping:
    name: str
    targets: list[FaceTarget]
    description: str = ""
    value_range: tuple[float, float] = (0.0, 1.0)

    def active(self) -> list[FaceTarget]:
        return [t for t in self.targets if t.enabled and t.formula.strip()]

    def check(self, channels: FaceChannels | None = None) -> None:
        """Parse every active formula (and, given channels, resolve every channel) before keying anything."""
        problems = []
        for row in self.active():
            try:
                formula = parse_formula(row.formula)
                if channels is not None:
                    for name in formula.channels:
                        channels.get(name)
            except FaceMappingError as err:
                problems.append(f"{row.target}: {err}")
        if problems:
            raise FaceMappingError("The face mapping has rows that cannot be used:\n  " + "\n  ".join(problems))

    def evaluate(self, channels: FaceChannels, targets: list[str] | None = None) -> dict[str, np.ndarray]:
        """{target: (N,) clamped values} for the active rows (restricted to `targets` when given)."""
        self.check(channels)
        lo, hi = self.value_range
        out = {}
        for row in self.active():
            if targets is not None and row.target not in targets:
                continue
            out[row.target] = np.clip(channels.evaluate(parse_formula(row.formula)), lo, hi)
        return out

    # ---- file
    def to_json(self) -> dict:
        return {"format": PRESET_FORMAT, "format_version": PRESET_VERSION, "name": self.name,
                "description": self.description, "value_range": list(self.value_range),
                "targets": [dataclasses.asdict(t) for t in self.targets]}

    @classmethod
    def from_json(cls, data: dict, source: str = "mapping") -> "FaceMapping":
        if not isinstance(data, dict) or data.get("format") != PRESET_FORMAT:
            raise FaceMappingError(f"{source} is not an EchoMask face-mapping preset.")
        if data.get("format_version") != PRESET_VERSION:
            raise FaceMappingError(f"{source} has preset version {data.get('format_version')}; this EchoMask "
                                   f"reads version {PRESET_VERSION}.")
        try:
            targets = [FaceTarget(str(t["target"]), str(t.get("formula", "")), bool(t.get("enabled", True)))
                       for t in data["targets"]]
            lo, hi = data.get("value_range", (0.0, 1.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise FaceMappingError(f"{source} is a damaged face-mapping preset ({exc}).") from None
        return cls(name=str(data.get("name", source)), targets=targets, description=str(data.get("description", "")),
                   value_range=(float(lo), float(hi)))


def load_preset(path: str | os.PathLike) -> FaceMapping:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise FaceMappingError(f"Face-mapping preset not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise FaceMappingError(f"Cannot read the face-mapping preset {path}: {exc}") from None
    return FaceMapping.from_json(data, os.path.basename(path))


def save_preset(mapping: FaceMapping, path: str | os.PathLike) -> None:
    path = os.fspath(path)
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(mapping.to_json(), handle, indent=1)
        handle.write("\n")
    os.replace(tmp, path)


def list_presets(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """[(file path, preset name)] of the presets in a folder, sorted by name; unreadable files skipped."""
    out = []
    folder = os.fspath(folder)
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if entry.endswith(".json"):
            try:
                out.append((os.path.join(folder, entry), load_preset(os.path.join(folder, entry)).name))
            except FaceMappingError:
                continue
    return sorted(out, key=lambda item: item[1].lower())


# ---------------------------------------------------------------------------------------------- matching

def _normal(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _last_token(name: str) -> str:
    return _normal(re.split(r"[._:\-| ]", name.strip())[-1])


def match_shape_keys(mapping: FaceMapping, key_names: list[str]) -> tuple[dict[str, str], list[str]]:
    """Pair each active target with one of the character's shape keys.

    Exact name first, then the same letters ignoring case and separators ('jaw_open' ~ 'jawOpen'), then
    the last part of a prefixed name ('Face.jawOpen', 'Mouth_A'). Returns ({target: key name}, missing).
    """
    keys = [k for k in key_names]
    used: set[str] = set()
    found: dict[str, str] = {}
    rules = (lambda k: k, _normal, _last_token)
    targets = [row.target for row in mapping.active()]
    for rule in rules:
        index: dict[str, list[str]] = {}
        for k in keys:
            if k not in used:
                index.setdefault(rule(k), []).append(k)
        for target in targets:
            if target in found:
                continue
            wanted = target if rule is rules[0] else _normal(target)
            candidates = [k for k in index.get(wanted, []) if k not in used]
            if candidates:
                found[target] = candidates[0]
                used.add(candidates[0])
    missing = [t for t in targets if t not in found]
    return found, missing


def no_match_message(mapping: FaceMapping, object_name: str, key_names: list[str]) -> str:
    expected = [row.target for row in mapping.active()]
    shown = ", ".join(expected[:60]) + (f", ... ({len(expected)} in all)" if len(expected) > 60 else "")
    have = [k for k in key_names if k != "Basis"]
    has = ("it has no shape keys at all" if not key_names else
           f"its shape keys are: {', '.join(have[:20])}{' ...' if len(have) > 20 else ''}")
    return (f"'{object_name}' has none of the shape keys the '{mapping.name}' mapping drives ({has}). "
            f"Expected names: {shown}. Pick the preset that fits this character, rename its shape keys, or "
            f"type its own shape-key names into the Target column of the face-mapping list.")
