"""Take <-> the network's motion features (per body part, and the 337-d whole-body frame).

Per-part features (docs/METHOD.md §1), one row per frame, float32:
  face  (106) = jaw rot6d (6) + 100 expression coefficients
  upper  (78) = 13 joints x rot6d, in core.motion.skeleton.UPPER_JOINTS order
  hands (180) = 30 finger joints (25..54) x rot6d
  lower  (61) = 9 joints x rot6d (LOWER_JOINTS order) + translation (3) + 4 foot contacts
rot6d = the first two rows of the rotation matrix (core.motion.rotations). Eyes are not modelled (zero on output).

Translation features (lower dims 54..56) = (vx, y, vz): x/z *velocities* in metres per second
(forward difference: v[t] = (p[t+1] - p[t]) * fps, the last frame repeats the one before) and the
*absolute* height y. This is what the official global-motion predictor outputs (x/z velocities
integrated, absolute y). Velocities make the features independent of where on the floor the speaker
stands, so the character stays in place by default (`root_motion="in_place"` keeps x/z at the start
point) and can travel when asked (`root_motion="travel"` integrates: p[t] = p[t-1] + v[t-1] / fps).
The official RVQ-VAE and its 337-d generator input used *absolute* x/y/z instead;
`take_to_motion337(..., trans_mode="absolute")` gives that layout for official parity.

Foot contacts (lower dims 57..60) = SMPL-X joints 7, 8, 10, 11 (ankles, feet) moving less than 1 cm to
the next frame (world positions by forward kinematics with translation; the last frame repeats).

337-d frame = 55 joints x rot6d (SMPL-X order, joint j at 6j..6j+5) + translation (3) + contacts (4).

Augmentation: `mirror_take` (left/right) and `time_stretch_take` (slower / faster by a small factor).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import rotations as R
from .skeleton import (FOOT_CONTACT_JOINTS, FOOT_CONTACT_SPEED, HAND_JOINTS, JAW, LOWER_JOINTS, MIRROR_INDEX,
                       NUM_EXPRESSIONS, NUM_JOINTS, PARENTS, PART_DIMS, PARTS, REST_JOINTS_YUP, UPPER_JOINTS)
from .take import Take, resample_take

# Channel layout inside each part's feature vector.
FACE_JAW = slice(0, 6)
FACE_EXPR = slice(6, 6 + NUM_EXPRESSIONS)
LOWER_ROT = slice(0, 54)
LOWER_TRANS = slice(54, 57)
LOWER_CONTACTS = slice(57, 61)
MOTION_DIM = NUM_JOINTS * 6 + 3 + 4  # 337
MOTION_TRANS = slice(330, 333)
MOTION_CONTACTS = slice(333, 337)

# Joints whose rotations each part carries (face: the jaw), in feature order.
PART_ROT_JOINTS: dict[str, tuple[int, ...]] = {
    "face": (JAW,), "upper": UPPER_JOINTS, "hands": HAND_JOINTS, "lower": LOWER_JOINTS,
}
# Number of leading rot6d channels of each part.
PART_ROT_DIMS = {part: 6 * len(joints) for part, joints in PART_ROT_JOINTS.items()}

ROOT_MOTION_MODES = ("in_place", "travel")
_IDENTITY_6D = np.array([1, 0, 0, 0, 1, 0], np.float32)


# ----------------------------------------------------------------------------------------------------------
# Translation and contacts

def trans_to_features(trans: np.ndarray, fps: float) -> np.ndarray:
    """(N, 3) absolute translation -> (N, 3) (vx, y, vz): x/z velocity in m/s, absolute height y."""
    trans = np.asarray(trans, np.float64)
    out = np.empty_like(trans)
    out[:, 1] = trans[:, 1]
    if len(trans) > 1:
        vel = (trans[1:] - trans[:-1]) * fps
        out[:-1, 0], out[:-1, 2] = vel[:, 0], vel[:, 2]
        out[-1, 0], out[-1, 2] = vel[-1, 0], vel[-1, 2]
    else:
        out[:, 0] = out[:, 2] = 0.0
    return out.astype(np.float32)


def features_to_trans(features: np.ndarray, fps: float, root_motion: str = "in_place",
                      start: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) (vx, y, vz) -> (N, 3) absolute translation.

    root_motion "in_place": x/z stay at the start point (default (0, 0)); "travel": x/z integrate the
    velocities from the start point. y is always the decoded absolute height.
    """
    if root_motion not in ROOT_MOTION_MODES:
        raise ValueError(f"root_motion must be one of {ROOT_MOTION_MODES}, not {root_motion!r}")
    feats = np.asarray(features, np.float64)
    start = np.zeros(3) if start is None else np.asarray(start, np.float64)
    out = np.empty_like(feats)
    out[:, 1] = feats[:, 1]
    if root_motion == "in_place":
        out[:, 0], out[:, 2] = start[0], start[2]
    else:
        for axis in (0, 2):
            steps = np.concatenate([[0.0], np.cumsum(feats[:-1, axis]) / fps])
            out[:, axis] = start[axis] + steps
    return out.astype(np.float32)


def joint_positions(poses: np.ndarray, trans: np.ndarray | None = None,
                    rest_joints: np.ndarray | None = None) -> np.ndarray:
    """(N, 165) axis-angle (+ (N, 3) translation) -> (N, 55, 3) world joint positions (float64)."""
    rest = REST_JOINTS_YUP if rest_joints is None else rest_joints
    mats = R.axis_angle_to_matrix(np.asarray(poses, np.float64).reshape(-1, NUM_JOINTS, 3))
    tr = None if trans is None else np.asarray(trans, np.float64)
    pos, _ = R.forward_kinematics(mats, rest, PARENTS, tr)
    return pos


def foot_contacts(positions: np.ndarray, threshold: float = FOOT_CONTACT_SPEED) -> np.ndarray:
    """(N, 55, 3) world positions -> (N, 4) float32: 1 where ankle/foot joint moves < threshold to next frame."""
    feet = positions[:, list(FOOT_CONTACT_JOINTS)]
    n = len(feet)
    if n < 2:
        return np.ones((n, 4), np.float32)
    step = np.linalg.norm(feet[1:] - feet[:-1], axis=-1)   # (N-1, 4)
    step = np.concatenate([step, step[-1:]], axis=0)
    return (step < threshold).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Take <-> parts

def take_to_parts(take: Take, rest_joints: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Take -> {part: (N, D) float32} per the layout above."""
    aa = take.joint_rotations().astype(np.float64)             # (N, 55, 3)
    mats = R.axis_angle_to_matrix(aa)
    rot6d = R.matrix_to_rot6d(mats)                            # (N, 55, 6)
    n = take.num_frames
    pos, _ = R.forward_kinematics(mats, REST_JOINTS_YUP if rest_joints is None else rest_joints, PARENTS,
                                  take.trans.astype(np.float64))
    contacts = foot_contacts(pos)
    trans_feat = trans_to_features(take.trans, take.fps)

    def rots(part):
        return rot6d[:, list(PART_ROT_JOINTS[part])].reshape(n, -1)

    parts = {
        "face": np.concatenate([rots("face"), take.expressions.astype(np.float64)], axis=1),
        "upper": rots("upper"),
        "hands": rots("hands"),
        "lower": np.concatenate([rots("lower"), trans_feat, contacts], axis=1),
    }
    return {k: v.astype(np.float32) for k, v in parts.items()}


def parts_to_take(parts: dict[str, np.ndarray], fps: float = 30.0, root_motion: str = "in_place",
                  start_trans: np.ndarray | None = None, betas: np.ndarray | None = None,
                  meta: dict | None = None) -> Take:
    """{part: (N, D)} -> Take. Missing parts give the neutral pose (identity joints, zero expressions);
    eyes are zero. Any 6-vector is a valid rotation (Gram-Schmidt), so raw network outputs are fine.

    root_motion / start_trans: see `features_to_trans`. Without a lower part the root stays at start_trans.
    """
    n = _num_frames(parts)
    rot6d = np.broadcast_to(_IDENTITY_6D, (n, NUM_JOINTS, 6)).astype(np.float64).copy()
    for part, joints in PART_ROT_JOINTS.items():
        if part in parts:
            x = np.asarray(parts[part], np.float64)
            _check_part(part, x)
            rot6d[:, list(joints)] = x[:, :PART_ROT_DIMS[part]].reshape(n, len(joints), 6)
    poses = R.rot6d_to_axis_angle(rot6d)
    poses[:, 23:25] = 0.0                                      # eyes are not generated
    expressions = (np.asarray(parts["face"], np.float32)[:, FACE_EXPR] if "face" in parts
                   else np.zeros((n, NUM_EXPRESSIONS), np.float32))
    if "lower" in parts:
        trans = features_to_trans(np.asarray(parts["lower"])[:, LOWER_TRANS], fps, root_motion, start_trans)
    else:
        start = np.zeros(3) if start_trans is None else np.asarray(start_trans)
        trans = np.broadcast_to(start, (n, 3)).astype(np.float32).copy()
    kwargs = {} if betas is None else {"betas": np.asarray(betas, np.float32)}
    return Take(poses=poses.reshape(n, -1).astype(np.float32), trans=trans, expressions=expressions.copy(),
                fps=float(fps), meta=dict(meta or {}), **kwargs)


def _num_frames(parts: dict[str, np.ndarray]) -> int:
    if not parts:
        raise ValueError("no body parts given")
    lengths = {part: len(x) for part, x in parts.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"body parts have different frame counts: {lengths}")
    return next(iter(lengths.values()))


def _check_part(part: str, x: np.ndarray) -> None:
    if part not in PART_DIMS:
        raise ValueError(f"unknown body part {part!r}; expected one of {PARTS}")
    if x.ndim != 2 or x.shape[1] != PART_DIMS[part]:
        raise ValueError(f"part {part!r} must be (frames, {PART_DIMS[part]}), got {x.shape}")


# ----------------------------------------------------------------------------------------------------------
# The 337-d whole-body frame (the generator's masked motion input)

def take_to_motion337(take: Take, trans_mode: str = "velocity") -> np.ndarray:
    """Take -> (N, 337) float32: 55 x rot6d + translation + 4 contacts.

    trans_mode "velocity": (vx, y, vz) as in the lower part (this project's convention);
    "absolute": x, y, z in metres (the official release's layout).
    """
    return parts_to_motion337(take_to_parts(take), trans=take.trans if trans_mode == "absolute" else None,
                              trans_mode=trans_mode)


def parts_to_motion337(parts: dict[str, np.ndarray], trans: np.ndarray | None = None,
                       trans_mode: str = "velocity") -> np.ndarray:
    """{part: (N, D)} (numpy or torch, leading batch dims allowed) -> (..., N, 337).

    Joints no part carries (eyes) get the identity rotation. With trans_mode "absolute", `trans` (N, 3) gives
    the absolute translation; otherwise the lower part's (vx, y, vz) are used.
    """
    if trans_mode not in ("velocity", "absolute"):
        raise ValueError("trans_mode must be 'velocity' or 'absolute'")
    first = next(iter(parts.values()))
    is_torch = not isinstance(first, np.ndarray)
    lead = tuple(first.shape[:-1])
    if is_torch:
        import torch

        rot6d = torch.tensor(_IDENTITY_6D, dtype=first.dtype, device=first.device).expand(*lead, NUM_JOINTS, 6).clone()
        cat = torch.cat
    else:
        rot6d = np.broadcast_to(_IDENTITY_6D, (*lead, NUM_JOINTS, 6)).astype(np.float32).copy()
        cat = np.concatenate
    for part, joints in PART_ROT_JOINTS.items():
        if part in parts:
            rot6d[..., list(joints), :] = parts[part][..., :PART_ROT_DIMS[part]].reshape(*lead, len(joints), 6)
    lower = parts.get("lower")
    if lower is None:
        raise ValueError("the 337-d frame needs the lower part (translation and contacts)")
    tr = lower[..., LOWER_TRANS] if trans_mode == "velocity" else (
        trans if not is_torch else torch.as_tensor(trans, dtype=first.dtype, device=first.device))
    return cat([rot6d.reshape(*lead, NUM_JOINTS * 6), tr, lower[..., LOWER_CONTACTS]], -1)


def motion337_to_parts(motion) -> dict:
    """(..., N, 337) -> {part: (..., N, D)} (expressions are not in the 337-d frame: face gets zeros)."""
    lead = tuple(motion.shape[:-1])
    rot = motion[..., :NUM_JOINTS * 6].reshape(*lead, NUM_JOINTS, 6)
    is_torch = not isinstance(motion, np.ndarray)
    if is_torch:
        import torch

        cat = torch.cat
        zeros = torch.zeros(*lead, NUM_EXPRESSIONS, dtype=motion.dtype, device=motion.device)
    else:
        cat = np.concatenate
        zeros = np.zeros((*lead, NUM_EXPRESSIONS), motion.dtype)
    out = {part: rot[..., list(joints), :].reshape(*lead, 6 * len(joints)) for part, joints in PART_ROT_JOINTS.items()}
    out["face"] = cat([out["face"], zeros], -1)
    out["lower"] = cat([out["lower"], motion[..., MOTION_TRANS], motion[..., MOTION_CONTACTS]], -1)
    return out


# ----------------------------------------------------------------------------------------------------------
# Normalisation statistics (computed from the training data; saved inside checkpoints)

@dataclasses.dataclass
class NormStats:
    """Per-part, per-channel mean and std: network input = (features - mean) / std.

    Foot-contact channels are left as they are (mean 0, std 1) so decoded contacts stay in [0, 1] as the
    official model's do. `std` has a floor so near-constant channels are not blown up.
    """
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    STD_FLOOR = 0.02

    @classmethod
    def identity(cls) -> "NormStats":
        return cls({p: np.zeros(PART_DIMS[p], np.float32) for p in PARTS},
                   {p: np.ones(PART_DIMS[p], np.float32) for p in PARTS})

    @classmethod
    def compute(cls, part_arrays: dict[str, list[np.ndarray]]) -> "NormStats":
        """part_arrays: {part: [ (N_i, D) arrays ]} (all training frames). Missing parts get identity."""
        stats = cls.identity()
        for part, arrays in part_arrays.items():
            if not arrays:
                continue
            x = np.concatenate([np.asarray(a, np.float64) for a in arrays], axis=0)
            mean, std = x.mean(0), np.maximum(x.std(0), cls.STD_FLOOR)
            if part == "lower":
                mean[LOWER_CONTACTS], std[LOWER_CONTACTS] = 0.0, 1.0
            stats.mean[part], stats.std[part] = mean.astype(np.float32), std.astype(np.float32)
        return stats

    def normalize(self, part: str, x):
        return (x - self._like(self.mean[part], x)) / self._like(self.std[part], x)

    def denormalize(self, part: str, x):
        return x * self._like(self.std[part], x) + self._like(self.mean[part], x)

    @staticmethod
    def _like(arr: np.ndarray, x):
        if isinstance(x, np.ndarray):
            return arr.astype(x.dtype)
        import torch

        return torch.as_tensor(arr, dtype=x.dtype, device=x.device)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat dict for safetensors: 'stats.<part>.mean' / '.std'."""
        out = {}
        for part in PARTS:
            out[f"stats.{part}.mean"] = np.ascontiguousarray(self.mean[part], np.float32)
            out[f"stats.{part}.std"] = np.ascontiguousarray(self.std[part], np.float32)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "NormStats":
        mean = {p: np.asarray(arrays[f"stats.{p}.mean"], np.float32) for p in PARTS}
        std = {p: np.asarray(arrays[f"stats.{p}.std"], np.float32) for p in PARTS}
        for p in PARTS:
            if mean[p].shape != (PART_DIMS[p],) or std[p].shape != (PART_DIMS[p],):
                raise ValueError(f"normalisation stats of part {p!r} have the wrong size")
        return cls(mean, std)


# ----------------------------------------------------------------------------------------------------------
# Augmentation

def mirror_take(take: Take) -> Take:
    """Left/right mirror (reflect x in SMPL-X's frame): swap left/right joints, axis-angle (x, y, z) ->
    (x, -y, -z), translation x -> -x.

    Expressions are kept as they are: FLAME expression components are not left/right symmetric pairs,
    so there is no exact mirror of a face; keeping it is the usual choice and at worst leaves a mildly
    asymmetric expression on the other side. The jaw (a midline joint) is mirrored like any joint.
    Mirroring twice gives back the original take.
    """
    aa = take.joint_rotations()[:, list(MIRROR_INDEX)].copy()
    aa[..., 1:] *= -1.0
    trans = take.trans.copy()
    trans[:, 0] *= -1.0
    meta = dict(take.meta)
    meta["mirrored"] = not meta.get("mirrored", False)
    return dataclasses.replace(take, poses=aa.reshape(take.num_frames, -1).astype(np.float32),
                               trans=trans.astype(np.float32), expressions=take.expressions.copy(), meta=meta)


def time_stretch_take(take: Take, factor: float) -> Take:
    """Play the take `factor` times slower (factor > 1: longer and slower; < 1: faster), same frame rate.

    Rotations are slerped, translation and expressions interpolated linearly (core.motion.take.resample_take).
    New frame k shows the original at time k / (fps * factor).
    """
    if not (0.5 <= factor <= 2.0):
        raise ValueError(f"time-stretch factor {factor} is outside the sensible range 0.5..2")
    out = resample_take(take, take.fps * factor)
    out.fps = take.fps
    out.meta["time_stretch"] = float(take.meta.get("time_stretch", 1.0)) * factor
    return out
