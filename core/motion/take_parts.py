"""The body parts an animator picks in Blender, mapped onto a Take's arrays.

Parts (the panel's check boxes and the worker request's `parts` / `known_mask` columns, in this order):
    face   jaw + eyes rotations and the 100 expression coefficients
    upper  spine, neck, head, collars, arms (skeleton.UPPER_JOINTS)
    hands  the 30 finger joints
    lower  pelvis rotation, legs, feet (skeleton.LOWER_JOINTS)
    root   root motion: the translation `trans`
Every joint of the 55 belongs to exactly one part, so a per-part mask covers the whole take.

Re-key contract with the worker (request fields; core/jobs/worker.py turns the files into generate()'s inputs
with `load_known`):
    known_take  a BEAT2 .npz (any frame rate: its mocap_frame_rate says which), frame 0 at audio time 0
    known_mask  a .npy bool array (frames of known_take, 5); column order ANIM_PARTS; True = keep this part
                at this frame (a known frame for the masked model), False = generate it.
    parts       the model's parts to generate (core.motion.skeleton.PARTS; `model_parts` maps the panel's parts:
                root motion lives in the model's lower-body part).
generate() itself takes the known take at 30 fps and a per-frame mask (frames where every part is known).
The speech may be a frame or two longer than the known take (Blender's mixdown rounds up to its buffer,
frame-rate conversion rounds): `fit_known_to_speech` pads the take with its last frame; the extra frames
are trimmed away again when the take goes back onto the rig.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import skeleton
from ..errors import EchoMaskError
from .take import Take, load_take, resample_take

ANIM_PARTS: tuple[str, ...] = ("face", "upper", "hands", "lower", "root")
PART_LABELS = {"face": "Face", "upper": "Upper Body", "hands": "Hands", "lower": "Lower Body", "root": "Root Motion"}

_FACE_JOINTS = (skeleton.JAW, *skeleton.EYES)
PART_JOINT_INDICES: dict[str, tuple[int, ...]] = {
    "face": _FACE_JOINTS,
    "upper": tuple(skeleton.UPPER_JOINTS),
    "hands": tuple(skeleton.HAND_JOINTS),
    "lower": tuple(skeleton.LOWER_JOINTS),
    "root": (),
}


def check_parts(parts) -> tuple[str, ...]:
    """Validate a list of part names; returns them in ANIM_PARTS order."""
    parts = tuple(parts)
    unknown = [p for p in parts if p not in ANIM_PARTS]
    if unknown:
        raise ValueError(f"unknown body part(s) {unknown}; known: {', '.join(ANIM_PARTS)}")
    return tuple(p for p in ANIM_PARTS if p in parts)


def joint_part(joint: int) -> str:
    for part, joints in PART_JOINT_INDICES.items():
        if joint in joints:
            return part
    raise ValueError(f"joint {joint} belongs to no part")


def merge_known(generated: Take, known: Take, mask: np.ndarray) -> Take:
    """`generated` with every (frame, part) that `mask` marks as known copied from `known`.

    Both takes must have the same frame rate; frames beyond either take are left as generated.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or mask.shape[1] != len(ANIM_PARTS):
        raise ValueError(f"known_mask must be (frames, {len(ANIM_PARTS)}), got {mask.shape}")
    if abs(generated.fps - known.fps) > 1e-6:
        raise ValueError("merge_known needs both takes at the same frame rate")
    n = min(generated.num_frames, known.num_frames, mask.shape[0])
    poses = generated.poses.copy().reshape(generated.num_frames, skeleton.NUM_JOINTS, 3)
    known_poses = known.poses.reshape(known.num_frames, skeleton.NUM_JOINTS, 3)
    trans = generated.trans.copy()
    expressions = generated.expressions.copy()
    for p, part in enumerate(ANIM_PARTS):
        rows = np.flatnonzero(mask[:n, p])
        if rows.size == 0:
            continue
        if part == "root":
            trans[rows] = known.trans[rows]
            continue
        joints = list(PART_JOINT_INDICES[part])
        poses[np.ix_(rows, joints)] = known_poses[np.ix_(rows, joints)]
        if part == "face":
            expressions[rows] = known.expressions[rows]
    return Take(poses=poses.reshape(generated.num_frames, -1), trans=trans, expressions=expressions,
                betas=generated.betas, fps=generated.fps, gender=generated.gender, meta=dict(generated.meta))


SEAM_BLEND_FRAMES = 16  # generated frames over which a re-keyed range eases into the kept frames around it. Measured
#                         (bench/bench_rekey_seams.py, 6 seeds, 48 seams of 90-frame ranges in the example speech): the
#                         mean joint speed within 4 frames of a seam over the take's median is 1.30 at 8 frames (the
#                         fade of a large offset shows as a speed-up), 1.12 at 16, 1.09 at 24; the same frames before
#                         re-keying: 1.18. Longer fades bend more of the new motion for little more.


def _seams(generated_rows: np.ndarray):
    """(first, last) frame of each run of True in a (frames,) bool array."""
    edges = np.diff(np.concatenate([[0], generated_rows.astype(np.int8), [0]]))
    return zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1)


def _blend_weights(frames: int) -> np.ndarray:
    """1 at the seam, easing to 0 over `frames` frames (raised cosine)."""
    return 0.5 * (1.0 + np.cos(np.pi * np.arange(frames) / frames))


def blend_seams(take: Take, mask: np.ndarray, frames: int = SEAM_BLEND_FRAMES) -> Take:
    """`take` (a merge of generated and kept motion, `mask` as in merge_known: True = kept) with each generated
    run of each part eased into the kept frames on either side: at a seam the generated motion is offset to
    continue the kept motion (its last pose plus its last step), and the offset fades out over `frames`
    generated frames. Kept frames and kept parts stay exactly as they are. Without it a re-keyed range
    popped at both ends (measured: up to 5x the take's median joint speed on the seam frame; the root moved
    up to 4 cm in one frame)."""
    from . import rotations as R

    mask = np.asarray(mask, bool)
    n = min(take.num_frames, mask.shape[0])
    if n < 3 or mask[:n].all() or not mask[:n].any():
        return take
    w = _blend_weights(frames)
    q = R.axis_angle_to_quaternion(take.poses.reshape(take.num_frames, skeleton.NUM_JOINTS, 3).astype(np.float64))
    trans = take.trans.astype(np.float64).copy()
    expressions = take.expressions.astype(np.float64).copy()
    identity = np.array([1.0, 0.0, 0.0, 0.0])
    touched = np.zeros(q.shape[:2], bool)       # (frames, joints) eased here; all others keep their exact values

    def ease(joints, arrays, first, last, kept, before, direction):
        """Offset the generated run first..last of `joints` and `arrays` towards the kept frame `kept` (and its
        neighbour `before`, for the kept motion's last step; None: none), from `first` forwards (direction +1)
        or from `last` backwards (-1)."""
        seam = first if direction > 0 else last
        span = np.arange(seam, seam + direction * min(frames, last - first + 1), direction)
        weights = w[:len(span)]
        for j in joints:
            pred = q[kept, j] if before is None else R.quaternion_multiply(
                q[kept, j], R.quaternion_multiply(q[before, j] * [1, -1, -1, -1], q[kept, j]))
            offset = R.quaternion_multiply(pred, q[seam, j] * [1, -1, -1, -1])
            offset = offset if offset[0] >= 0 else -offset
            step = R.quaternion_slerp(np.broadcast_to(identity, (len(span), 4)),
                                      np.broadcast_to(offset, (len(span), 4)), weights)
            q[span, j] = R.quaternion_multiply(step, q[span, j])
            touched[span, j] = True
        for arr in arrays:
            pred = arr[kept] if before is None else 2 * arr[kept] - arr[before]
            arr[span] += weights[:, None] * (pred - arr[seam])[None]

    for p, part in enumerate(ANIM_PARTS):
        generated_rows = ~mask[:n, p]
        if generated_rows.all() or not generated_rows.any():
            continue
        joints = list(PART_JOINT_INDICES[part])
        arrays = [trans] if part == "root" else [expressions] if part == "face" else []
        for first, last in _seams(generated_rows):
            if first > 0:                       # kept frames before the run
                ease(joints, arrays, first, last, first - 1,
                     first - 2 if first >= 2 and not generated_rows[first - 2] else None, +1)
            if last < n - 1:                    # kept frames after it
                ease(joints, arrays, first, last, last + 1,
                     last + 2 if last + 2 < n and not generated_rows[last + 2] else None, -1)
    poses = take.poses.reshape(take.num_frames, skeleton.NUM_JOINTS, 3).astype(np.float32)   # a copy
    poses[touched] = R.quaternion_to_axis_angle(q[touched])
    return Take(poses=poses.reshape(take.num_frames, -1), trans=trans.astype(np.float32),
                expressions=expressions.astype(np.float32), betas=take.betas, fps=take.fps, gender=take.gender,
                meta=dict(take.meta))


def model_parts(parts) -> list[str]:
    """The model's parts (skeleton.PARTS) that must be generated for these panel parts."""
    parts = check_parts(parts)
    wanted = {p for p in parts if p != "root"} | ({"lower"} if "root" in parts else set())
    return [p for p in skeleton.PARTS if p in wanted]


def load_known(take_path: str, mask_path: str | None, fps: float = 30.0) -> tuple[Take, np.ndarray | None]:
    """The re-key files as generate() wants them: the known take at `fps` and a per-frame bool mask
    (True where every part is known). A (frames,) mask is taken as per-frame already."""
    known = load_take(take_path)
    mask = None
    if mask_path:
        mask = np.load(mask_path, allow_pickle=False).astype(bool)
        if mask.ndim == 2:
            mask = mask.all(axis=1)
        if mask.ndim != 1 or len(mask) != known.num_frames:
            raise ValueError(f"known_mask has shape {mask.shape}; expected ({known.num_frames},) or "
                             f"({known.num_frames}, {len(ANIM_PARTS)}) to match the known take")
    if abs(known.fps - fps) > 1e-6:
        source_fps = known.fps
        known = resample_take(known, fps)
        if mask is not None:  # a frame is known when the nearest original frame is
            idx = np.clip(np.rint(np.arange(known.num_frames) * source_fps / fps).astype(int), 0, len(mask) - 1)
            mask = mask[idx]
    return known, mask


KNOWN_FRAME_TOLERANCE = 2   # frames the speech may run past the known take (rounding), padded with its last frame


def fit_known_to_speech(known: Take, mask: np.ndarray | None, speech_frames: int,
                        tolerance: int = KNOWN_FRAME_TOLERANCE) -> tuple[Take, np.ndarray | None]:
    """The known take (and its mask, per frame or per frame and part) long enough for `speech_frames`.

    Up to `tolerance` missing frames are filled with copies of the last frame (and its mask row); a take
    much shorter than its speech means the speech changed since the take was made, which is refused with
    what to do. A longer take is returned as it is (generate() uses its first frames).
    """
    missing = int(speech_frames) - known.num_frames
    if missing <= 0:
        return known, mask
    if missing > tolerance:
        raise EchoMaskError(
            f"The speech is {missing} frames ({missing / known.fps:.2f} s) longer than the take being re-keyed "
            f"({known.num_frames} frames): it is not the speech the take was made from. Put the original "
            "speech back (same strip, file and frame range), or generate a new take from this speech.")

    def pad(arr):
        return np.concatenate([arr, np.repeat(arr[-1:], missing, axis=0)])

    padded = dataclasses.replace(known, poses=pad(known.poses), trans=pad(known.trans),
                                 expressions=pad(known.expressions), meta=dict(known.meta))
    return padded, (None if mask is None else pad(np.asarray(mask)))
