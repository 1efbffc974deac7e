"""Bone maps: SMPL-X joint -> a rig's bone, as an editable list with JSON presets and matching by name.

A map is a list of rows "SMPL-X joint -> target bone" (as Rokoko's and Auto-Rig Pro's remap lists). Rows
whose bone is empty or disabled are unmapped: that joint is skipped (with a note), not an error. A map may
also carry rig `settings` (a pose bone's custom property and the value to key with every take, e.g. a
Rigify limb's IK_FK = 1 so its FK controls drive it), keyed on the take's own Action so the animator's
values come back when another take or their own animation plays.

Matching a map's bone names against a rig is tolerant of namespace prefixes: a row for "mixamorig:Hips"
finds "Hips", "mixamorig1:Hips" or "Character1:Hips" when the exact name is absent (and the other way
round). `auto_match` pairs joints with bones by name alone (synonyms, sides, the spine chain) for rigs
without a preset.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

from ..errors import EchoMaskError
from ..motion.skeleton import JOINT_INDEX, JOINT_NAMES, PARENTS

BONE_MAP_FORMAT = "echomask-bone-map"
BONE_MAP_VERSION = 1
PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
BUILTIN_PRESETS = {"mixamo": "mixamo.json", "mixamo_plain": "mixamo_plain.json", "rigify": "rigify.json",
                   "ue5": "ue5.json", "smplx": "smplx.json"}


class BoneMapError(EchoMaskError):
    """A bone map that cannot be used: duplicate bones, unknown joints, no bone found on the rig."""


@dataclasses.dataclass
class BoneRow:
    joint: str              # SMPL-X joint name (core.motion.skeleton.JOINT_NAMES)
    bone: str = ""          # the rig's bone; empty: unmapped
    enabled: bool = True


@dataclasses.dataclass
class RigSetting:
    bone: str               # pose bone holding the custom property
    prop: str               # custom property name
    value: float


@dataclasses.dataclass
class BoneMap:
    name: str
    rows: list[BoneRow]
    description: str = ""
    settings: list[RigSetting] = dataclasses.field(default_factory=list)

    def active(self) -> list[BoneRow]:
        return [r for r in self.rows if r.enabled and r.bone.strip()]

    def as_dict(self) -> dict[str, str]:
        return {r.joint: r.bone.strip() for r in self.active()}

    def check(self) -> None:
        """Unknown joints and duplicate rows (two joints on one bone, one joint twice), named."""
        problems = []
        seen_joint: dict[str, str] = {}
        seen_bone: dict[str, str] = {}
        for row in self.active():
            if row.joint not in JOINT_INDEX:
                problems.append(f"'{row.joint}' is not an SMPL-X joint (e.g. pelvis, left_shoulder, right_index1)")
                continue
            if row.joint in seen_joint:
                problems.append(f"{row.joint} is listed twice ('{seen_joint[row.joint]}' and '{row.bone}')")
            seen_joint[row.joint] = row.bone
            key = row.bone.strip()
            if key in seen_bone:
                problems.append(f"bone '{key}' is mapped from both {seen_bone[key]} and {row.joint}: a bone can "
                                f"follow one joint only")
            seen_bone[key] = row.joint
        if problems:
            raise BoneMapError(f"The bone map '{self.name}' cannot be used:\n  " + "\n  ".join(problems))

    # ---- file
    def to_json(self) -> dict:
        return {"format": BONE_MAP_FORMAT, "format_version": BONE_MAP_VERSION, "name": self.name,
                "description": self.description, "rows": [dataclasses.asdict(r) for r in self.rows],
                "settings": [dataclasses.asdict(s) for s in self.settings]}

    @classmethod
    def from_json(cls, data: dict, source: str = "bone map") -> "BoneMap":
        if not isinstance(data, dict) or data.get("format") != BONE_MAP_FORMAT:
            raise BoneMapError(f"{source} is not an EchoMask bone-map preset.")
        if data.get("format_version") != BONE_MAP_VERSION:
            raise BoneMapError(f"{source} has bone-map version {data.get('format_version')}; this EchoMask reads "
                               f"version {BONE_MAP_VERSION}.")
        try:
            rows = [BoneRow(str(r["joint"]), str(r.get("bone", "")), bool(r.get("enabled", True)))
                    for r in data["rows"]]
            settings = [RigSetting(str(s["bone"]), str(s["prop"]), float(s["value"]))
                        for s in data.get("settings", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise BoneMapError(f"{source} is a damaged bone-map preset ({exc}).") from None
        return cls(name=str(data.get("name", source)), rows=rows, description=str(data.get("description", "")),
                   settings=settings)

    @classmethod
    def from_dict(cls, mapping: dict[str, str], name: str = "Custom") -> "BoneMap":
        return cls(name=name, rows=[BoneRow(j, mapping.get(j, "")) for j in JOINT_NAMES])


def load_bone_map(path: str | os.PathLike) -> BoneMap:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise BoneMapError(f"Bone-map file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise BoneMapError(f"Cannot read the bone-map file {path}: {exc}") from None
    return BoneMap.from_json(data, os.path.basename(path))


def save_bone_map(bone_map: BoneMap, path: str | os.PathLike) -> None:
    path = os.fspath(path)
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(bone_map.to_json(), handle, indent=1)
        handle.write("\n")
    os.replace(tmp, path)


def preset_path(name: str) -> str:
    """A built-in preset's file by short name (mixamo, mixamo_plain, rigify, ue5, smplx)."""
    if name not in BUILTIN_PRESETS:
        raise BoneMapError(f"Unknown bone-map preset '{name}' (use {', '.join(BUILTIN_PRESETS)}, auto, or a .json map).")
    return os.path.join(PRESET_DIR, BUILTIN_PRESETS[name])


def list_presets(folder: str | os.PathLike = PRESET_DIR) -> list[tuple[str, str]]:
    """[(file path, preset name)] sorted by name; unreadable files skipped."""
    out = []
    folder = os.fspath(folder)
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if entry.endswith(".json"):
            try:
                out.append((os.path.join(folder, entry), load_bone_map(os.path.join(folder, entry)).name))
            except BoneMapError:
                continue
    return sorted(out, key=lambda item: item[1].lower())


# ---------------------------------------------------------------------------------------------- resolving

def _strip_namespace(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def _normal(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def find_bone(wanted: str, bone_names) -> str | None:
    """The rig's bone for a map's name: exact, then ignoring a namespace prefix, then ignoring case."""
    names = list(bone_names)
    if wanted in names:
        return wanted
    plain = _strip_namespace(wanted)
    hits = [n for n in names if _strip_namespace(n) == plain]
    if len(hits) == 1:
        return hits[0]
    hits = [n for n in names if _normal(_strip_namespace(n)) == _normal(plain)]
    return hits[0] if len(hits) == 1 else None


@dataclasses.dataclass
class ResolvedMap:
    bones: dict[str, str]                   # joint -> bone on this rig
    missing: list[tuple[str, str]]          # (joint, bone named by the map) not found on the rig
    unmapped: list[str]                     # joints without a row (skipped)
    settings: list[RigSetting]              # rig settings whose bone exists


def resolve_bone_map(bone_map: BoneMap, bone_names) -> ResolvedMap:
    """Pair each active row with a bone of the rig; duplicates and unknown joints raise BoneMapError."""
    bone_map.check()
    names = list(bone_names)
    found, missing = {}, []
    for row in bone_map.active():
        bone = find_bone(row.bone.strip(), names)
        if bone is None:
            missing.append((row.joint, row.bone.strip()))
        else:
            found[row.joint] = bone
    clash: dict[str, list[str]] = {}
    for joint, bone in found.items():
        clash.setdefault(bone, []).append(joint)
    dup = {b: js for b, js in clash.items() if len(js) > 1}
    if dup:
        raise BoneMapError("The bone map gives one bone to several joints on this rig: " +
                           "; ".join(f"'{b}' <- {', '.join(js)}" for b, js in dup.items()))
    unmapped = [j for j in JOINT_NAMES if j not in found and j not in {m[0] for m in missing}]
    settings = [s for s in bone_map.settings if find_bone(s.bone, names) is not None]
    settings = [RigSetting(find_bone(s.bone, names), s.prop, s.value) for s in settings]
    return ResolvedMap(found, missing, unmapped, settings)


# ---------------------------------------------------------------------------------------------- auto matching

# Side-less name cores per joint (after lower-casing, removing separators, the side and a namespace).
_CORES: dict[str, tuple[str, ...]] = {
    "pelvis": ("pelvis", "hips", "hip", "root_pelvis"),
    "neck": ("neck", "neck01", "neck1"),
    "head": ("head",),
    "jaw": ("jaw",),
    "eye": ("eye",),
    "collar": ("shoulder", "clavicle", "collar", "collarbone"),
    "shoulder": ("arm", "upperarm", "uparm", "armupper"),
    "elbow": ("forearm", "lowerarm", "elbow", "armlower"),
    "wrist": ("hand", "wrist"),
    "hip": ("upleg", "thigh", "upperleg", "legupper"),
    "knee": ("leg", "shin", "calf", "knee", "lowerleg", "leglower"),
    "ankle": ("foot", "ankle"),
    "foot": ("toebase", "toe", "toes", "ball"),
}
_FINGERS = {"thumb": ("thumb",), "index": ("index", "indexfinger", "pointer"), "middle": ("middle", "mid"),
            "ring": ("ring",), "pinky": ("pinky", "little", "small", "pinkie")}
_SIDE_WORDS = (("left", "l"), ("right", "r"))
_IGNORED_PREFIXES = ("org", "mch", "def", "vis", "wgt", "ik", "tgt")


def _split_side(name: str) -> tuple[str | None, str]:
    """('l' | 'r' | None, the name's letters without the side marker)."""
    raw = _strip_namespace(name)
    lower = raw.lower()
    tokens = [t for t in re.split(r"[^0-9a-zA-Z]+", raw) if t]
    side = None
    low_tokens = [t.lower() for t in tokens]
    for marker, short in _SIDE_WORDS:
        if lower.startswith(marker) or marker in low_tokens:
            side = short
            lower = lower.replace(marker, "", 1)
            break
    if side is None:
        for short in ("l", "r"):
            if short in low_tokens:      # thigh_l, hand.L, L_Arm, Arm_L
                side = short
                idx = low_tokens.index(short)
                low_tokens = low_tokens[:idx] + low_tokens[idx + 1:]
                lower = "".join(low_tokens)
                break
        else:
            # CamelCase "LArm" / "RLeg" (a capital L/R followed by a capital)
            m = re.match(r"^([LR])(?=[A-Z])", raw)
            if m:
                side = m.group(1).lower()
                lower = raw[1:].lower()
    return side, re.sub(r"[^0-9a-z]", "", lower)


def _joint_key(joint: str) -> tuple[str | None, str, int]:
    """'left_index2' -> ('l', 'index', 2); 'left_shoulder' -> ('l', 'shoulder', 0); 'spine2' -> (None, 'spine', 2)."""
    side = None
    base = joint
    if joint.startswith("left_"):
        side, base = "l", joint[5:]
    elif joint.startswith("right_"):
        side, base = "r", joint[6:]
    base = base.replace("_smplhf", "")
    m = re.fullmatch(r"([a-z]+)(\d)", base)
    if m:
        return side, m.group(1), int(m.group(2))
    return side, base, 0


def _finger_match(core: str, finger: str, number: int) -> bool:
    for word in _FINGERS[finger]:
        if re.fullmatch(rf"(?:hand)?(?:f)?{word}(?:finger)?0?{number}", core):
            return True
    return False


def auto_match(bone_names, parents: dict[str, str | None] | None = None) -> BoneMap:
    """A map from the rig's bone names alone: synonyms (Hips/pelvis, UpLeg/thigh, ForeArm/lowerarm...),
    sides (Left, _l, .L, L_), numbered fingers, and the spine chain between the pelvis and neck bones
    (given `parents`), split over spine1..3. Bones named ORG-/MCH-/DEF-... are never picked."""
    names = [n for n in bone_names if _normal(_strip_namespace(n).split("-")[0]) not in _IGNORED_PREFIXES
             or "-" not in _strip_namespace(n)]
    info = {n: _split_side(n) for n in names}
    found: dict[str, str] = {}
    used: set[str] = set()

    def pick(joint, predicate):
        if joint in found:
            return
        for n in names:
            if n not in used and predicate(*info[n]):
                found[joint] = n
                used.add(n)
                return

    for joint in JOINT_NAMES:
        side, base, number = _joint_key(joint)
        if base in _FINGERS:
            pick(joint, lambda s, core, side=side, base=base, number=number: s == side and
                 _finger_match(core, base, number))
        elif base in ("spine",):
            continue
        elif base in _CORES:
            pick(joint, lambda s, core, side=side, base=base: s == side and core in _CORES[base])
    # The spine: the chain of bones from the pelvis bone up to the neck bone's parent, over spine1..3.
    if parents is not None and "pelvis" in found and ("neck" in found or "head" in found):
        top = found.get("neck") or found["head"]
        chain = []
        bone = parents.get(top)
        while bone is not None and bone != found["pelvis"]:
            chain.append(bone)
            bone = parents.get(bone)
        if bone == found["pelvis"] and chain:
            chain.reverse()   # from the pelvis upwards
            picks = {1: chain[0], 3: chain[-1]}
            if len(chain) >= 3:
                picks[2] = chain[len(chain) // 2]
            for k, bone in picks.items():
                if bone not in used:
                    found[f"spine{k}"] = bone
                    used.add(bone)
    else:
        for k, words in ((1, ("spine", "spine01", "spine1")), (2, ("spine02", "spine2", "chest")),
                         (3, ("spine03", "spine3", "upperchest", "chest1"))):
            pick(f"spine{k}", lambda s, core, words=words: s is None and core in words)
    return BoneMap.from_dict(found, name="Auto (by name)")


def expected_child(joint: str) -> int | None:
    """The SMPL-X parent joint index of `joint` (None for the pelvis); for hierarchy checks."""
    p = PARENTS[JOINT_INDEX[joint]]
    return None if p < 0 else p
