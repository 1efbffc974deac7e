"""Measured retargeting quality: limb directions, twist (flips), foot contact, on the target against the source.

Inputs are the source take's SMPL-X forward kinematics and the target's posed bones in armature space, as
evaluated by Blender (or by `solve`'s own pose for the core tests). Every figure is in degrees or in the
target's metres (armature units x `unit` metres).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..motion.skeleton import FOOT_CONTACT_SPEED, JOINT_INDEX, REST_JOINTS_YUP
from .solve import FOOT_JOINTS, RetargetPlan

# (label, joint, child joint): the segment from a joint to its child, compared as world directions.
SEGMENTS = (
    ("upper arm", "left_shoulder", "left_elbow"), ("upper arm", "right_shoulder", "right_elbow"),
    ("forearm", "left_elbow", "left_wrist"), ("forearm", "right_elbow", "right_wrist"),
    ("hand", "left_wrist", "left_middle1"), ("hand", "right_wrist", "right_middle1"),
    ("thigh", "left_hip", "left_knee"), ("thigh", "right_hip", "right_knee"),
    ("shin", "left_knee", "left_ankle"), ("shin", "right_knee", "right_ankle"),
    ("foot", "left_ankle", "left_foot"), ("foot", "right_ankle", "right_foot"),
    ("spine", "pelvis", "spine1"), ("spine", "spine1", "spine2"), ("spine", "spine2", "spine3"),
    ("spine", "spine3", "neck"),
    ("neck", "neck", "head"),
)
SPINE_CHAIN = ("pelvis", "spine1", "spine2", "spine3", "neck")


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def _rotation_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rel = np.swapaxes(a, -1, -2) @ b
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)))


@dataclasses.dataclass
class Quality:
    segments: dict[str, np.ndarray]      # label -> (frames * segments,) direction errors, degrees
    twist_max: float                     # worst rotation error of a mapped bone (twist included), degrees
    flipped: int                         # (bone, frame) pairs with a rotation error over 45 degrees
    contact_height_p95: float            # |target clearance - scaled source clearance| on contact frames, metres
    contact_height_max: float
    slide_extra_mean: float              # target foot travel minus scaled source travel, per contact frame, metres
    slide_extra_p95: float
    slide_source_mean: float             # the scaled source's own sliding on its contact frames, metres/frame
    penetration_target: float            # deepest target foot joint below its planted height, metres
    penetration_source: float            # the same for the scaled source
    contact_frames: int

    @property
    def all_errors(self) -> np.ndarray:
        return np.concatenate([v for v in self.segments.values()]) if self.segments else np.zeros(0)

    def summary(self) -> dict:
        errs = self.all_errors
        out = {"mean_deg": float(errs.mean()) if errs.size else float("nan"),
               "p95_deg": float(np.percentile(errs, 95)) if errs.size else float("nan"),
               "max_deg": float(errs.max()) if errs.size else float("nan"),
               "twist_max_deg": self.twist_max, "flipped": self.flipped,
               "contact_height_p95_cm": 100 * self.contact_height_p95,
               "contact_height_max_cm": 100 * self.contact_height_max,
               "slide_extra_mean_cm": 100 * self.slide_extra_mean, "slide_extra_p95_cm": 100 * self.slide_extra_p95,
               "slide_source_mean_cm": 100 * self.slide_source_mean,
               "penetration_target_cm": 100 * self.penetration_target,
               "penetration_source_cm": 100 * self.penetration_source, "contact_frames": self.contact_frames}
        out["per_segment"] = {k: (float(v.mean()), float(np.percentile(v, 95))) for k, v in self.segments.items()}
        return out


def measure(plan: RetargetPlan, pos_s: np.ndarray, G: np.ndarray, heads: dict[str, np.ndarray],
            rotations: dict[str, np.ndarray] | None = None, measure_bones: dict[str, str] | None = None,
            unit: float = 1.0) -> Quality:
    """Compare a posed target with its source.

    pos_s (N, 55, 3), G (N, 55, 3, 3): the source's FK. heads: bone -> (N, 3) armature-space heads of the
    posed target; rotations: bone -> (N, 3, 3) armature-space rotations of the mapped bones (for twist and
    flips). measure_bones: joint -> the bone whose head stands for the joint (default: the mapped bone;
    Rigify's deform bones for a control-rig mapping). `unit`: metres per armature unit.
    """
    F, s = plan.model_frame, plan.scale
    bones = dict(plan.joint_bone)
    bones.update(measure_bones or {})
    segments: dict[str, list[np.ndarray]] = {}
    spine = [j for j in SPINE_CHAIN if j in bones]
    pairs = [(label, a, b) for label, a, b in SEGMENTS if label != "spine"]
    pairs += [("spine", a, b) for a, b in zip(spine[:-1], spine[1:])]
    for label, a, b in pairs:
        if a not in bones or b not in bones or bones[a] not in heads or bones[b] not in heads:
            continue
        src = (pos_s[:, JOINT_INDEX[b]] - pos_s[:, JOINT_INDEX[a]]) @ F.T
        tgt = heads[bones[b]] - heads[bones[a]]
        segments.setdefault(label, []).append(_angle(src, tgt))
    twist_max, flipped = 0.0, 0
    if rotations:
        for j, b in plan.joint_bone.items():
            if b not in rotations:
                continue
            want = (F @ G[:, JOINT_INDEX[j]] @ F.T) @ (plan.align[b] @ plan.rig.bone(b).rotation)
            err = _rotation_angle(want, rotations[b])
            twist_max = max(twist_max, float(err.max()))
            flipped += int((err > 45.0).sum())
        if "head" in plan.joint_bone and plan.joint_bone["head"] in rotations:
            b = plan.joint_bone["head"]
            want = (F @ G[:, JOINT_INDEX["head"]] @ F.T) @ (plan.align[b] @ plan.rig.bone(b).rotation)
            segments.setdefault("head", []).append(_angle(want[..., 1], rotations[b][..., 1]))
    seg = {k: np.concatenate(v) for k, v in segments.items()}

    # feet
    up = plan.up
    rest = plan.source_rest if plan.source_rest is not None else REST_JOINTS_YUP
    joints = [j for j in FOOT_JOINTS if j in plan.foot_bones and bones.get(j) in heads]
    ch, slide, slide_src, pen_t, pen_s, frames = [], [], [], 0.0, 0.0, 0
    if joints:
        lowest = rest[[JOINT_INDEX[j] for j in FOOT_JOINTS], 1].min()
        for j in joints:
            k = JOINT_INDEX[j]
            planted = rest[k, 1] - lowest + 0.02
            clear_s = pos_s[:, k, 1] - planted
            tgt = heads[bones[j]]
            t_planted = plan.foot_rest_height[j]
            if bones[j] != plan.foot_bones[j]:   # a measuring bone: its own planted height at the first frame
                t_planted = plan.foot_rest_height[j] + float(
                    np.dot(heads[bones[j]][0] - heads[plan.foot_bones[j]][0], up)) if plan.foot_bones[j] in heads \
                    else plan.foot_rest_height[j]
            clear_t = tgt @ up - plan.floor - t_planted
            v_s = np.linalg.norm(np.diff(pos_s[:, k], axis=0), axis=-1)
            contact = np.concatenate([[False], v_s < FOOT_CONTACT_SPEED])
            frames += int(contact.sum())
            ch.append(np.abs(clear_t - s * clear_s)[contact])
            d_t = np.diff(tgt, axis=0)
            d_t = d_t - (d_t @ up)[:, None] * up
            d_s = np.diff(pos_s[:, k], axis=0) @ F.T * s
            d_s = d_s - (d_s @ up)[:, None] * up
            c = contact[1:]
            slide.append(np.maximum(np.linalg.norm(d_t, axis=-1) - np.linalg.norm(d_s, axis=-1), 0.0)[c])
            slide_src.append(np.linalg.norm(d_s, axis=-1)[c])
            pen_t = max(pen_t, float(np.max(-clear_t, initial=0.0)))
            pen_s = max(pen_s, float(np.max(-s * clear_s, initial=0.0)))
    ch = np.concatenate(ch) if ch else np.zeros(1)
    slide = np.concatenate(slide) if slide else np.zeros(1)
    slide_src = np.concatenate(slide_src) if slide_src else np.zeros(1)
    ch, slide, slide_src = (x if x.size else np.zeros(1) for x in (ch, slide, slide_src))
    return Quality(segments=seg, twist_max=twist_max, flipped=flipped,
                   contact_height_p95=unit * float(np.percentile(ch, 95)), contact_height_max=unit * float(ch.max()),
                   slide_extra_mean=unit * float(slide.mean()), slide_extra_p95=unit * float(np.percentile(slide, 95)),
                   slide_source_mean=unit * float(slide_src.mean()), penetration_target=unit * pen_t,
                   penetration_source=unit * pen_s, contact_frames=frames)
