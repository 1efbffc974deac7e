"""What happens to a take after the model: the parts and frames the animator keeps, gesture intensity,
the phone-accurate mouth; and the neutral pose that seeds generation. Shared by this project's models
(`loop`) and the official release (`official`)."""
from __future__ import annotations

import numpy as np

from ..motion.skeleton import PARTS, STANCE_JOINTS
from ..motion.take import Take

MODEL_PARTS_FOR_INTENSITY = ("face", "upper", "hands", "lower")   # root translation is left as generated
# The gesture gain (a weights' decoding record, `set-decoding --gesture-gain`) scales the arms and hands only: the
# legs carry the stance (scaling them slid the feet: speech-only skating 6.3 cm/s vs 5.3 at gain 1.2) and the face
# the mouth.
GESTURE_GAIN_PARTS = ("upper", "hands")


def neutral_standing(frames: int) -> Take:
    """Seed pose of the first window: neutral standing, arms relaxed down (not the SMPL-X T-pose), on the floor."""
    from ..motion.take import neutral_take

    take = neutral_take(frames)
    pose = take.poses.reshape(frames, 55, 3)
    pose[:, 16] = (0.0, 0.0, -1.2)   # left shoulder: arm down
    pose[:, 17] = (0.0, 0.0, 1.2)    # right shoulder
    take.trans[:, 1] = 1.30          # pelvis height of a standing SMPL-X neutral body (BEAT2 ~1.30 m)
    return take


def _scaled_about_mean_pose(take: Take, scale: float, parts) -> Take:
    if scale == 1.0:
        return take
    from ..motion.intensity import scale_take

    scaled = scale_take(take, scale, parts)
    scaled.meta = dict(take.meta)
    return scaled


def apply_gesture_gain(take: Take, gain: float) -> Take:
    """The arm and hand gestures scaled about the take's mean pose by `gain` (core.motion.intensity), the
    amplitude calibration some weights record for themselves (weights/MODEL_CARD.md); 1 = as decoded."""
    return _scaled_about_mean_pose(take, gain, GESTURE_GAIN_PARTS)


def apply_intensity(take: Take, intensity: float) -> Take:
    """Gesture amplitude about the take's mean pose (core.motion.intensity: the one meaning of intensity)."""
    return _scaled_about_mean_pose(take, intensity, MODEL_PARTS_FOR_INTENSITY)


# The pelvis (the whole body's orientation) and the legs: a talking speaker's stance moves slowly, and token
# jitter there shakes every joint (the pelvis is the root) and slides the planted feet. Measured on speech no
# training used and on the held-out tails (docs/RESULTS.md, "Stance smoothing"): 6x the body's sigma took world
# jerk from 1.4-1.6x the capture's to 1.1-1.2x and foot skating on the tails from 10.8 to 4.9 cm/s (capture
# 5.2), FGD within 1.4 of before, when takes kept the coarse RVQ level only. With every predicted level (the
# default since 2026-12-02) the legs carry more detail: on the speech-only clips (5 seeds) skating was 6.9 cm/s
# at 6x against the capture's 3.4, 4.8 at 10x, 3.4 at 16x, FGD 105.5 / 106.6 / 108.0; 10x is the least that
# keeps skating within 2 cm/s of the capture.
STANCE_SMOOTHING_FACTOR = 10.0


def smooth_body(take: Take, sigma_frames: float) -> Take:
    """Gaussian smoothing of every joint's rotation over time (quaternions, sign-continuous, renormalised)
    with `sigma_frames` (0 = unchanged), the pelvis and legs with STANCE_SMOOTHING_FACTOR times that; the
    jaw is left to the face. Token boundaries every 4 frames are where decoded motion jerks; a sigma of a
    frame removes that and hardly changes the gesture (measured in docs/RESULTS.md)."""
    if sigma_frames <= 0:
        return take
    from ..motion import rotations as R
    from ..face.signals import smooth

    n = take.num_frames
    q = R.make_quaternions_continuous(R.axis_angle_to_quaternion(take.poses.reshape(n, 55, 3).astype(np.float64)), axis=0)
    qs = smooth(q.reshape(n, -1), sigma_frames).reshape(q.shape)
    stance = list(STANCE_JOINTS)
    qs[:, stance] = smooth(q[:, stance].reshape(n, -1), STANCE_SMOOTHING_FACTOR * sigma_frames).reshape(n, len(stance), 4)
    qs /= np.linalg.norm(qs, axis=-1, keepdims=True).clip(1e-9)
    poses = R.quaternion_to_axis_angle(qs).reshape(n, -1).astype(np.float32)
    poses[:, 66:69] = take.poses[:, 66:69]   # the jaw: the face's (and the phone mouth's) own timing
    take.poses = poses
    return take


def apply_phone_mouth(take: Take, phones, strength: float, known_frames=None) -> Take:
    """Combine the model's face with the recognised phones (lips close on p/b/m, open on vowels, rest in
    pauses); frames given as known keep their face exactly. Strength 0 returns the take unchanged."""
    if strength == 0.0 or not phones:
        return take
    from ..face.lipsync import apply_phone_mouth as mouth

    mouthed = mouth(take, phones, strength=strength)
    new = np.ones(take.num_frames, bool) if known_frames is None else ~np.asarray(known_frames, bool)
    take.poses[new, 66:69] = mouthed.poses[new, 66:69]
    take.expressions[new] = mouthed.expressions[new]
    take.meta["lipsync"] = strength
    return take


def splice_known(feats: dict, known_parts: dict, keep: np.ndarray, parts_to_generate) -> dict:
    """Per-part features of one chunk of frames with the animator's kept parts and frames put back:
    parts not generated come from `known_parts` entirely, kept frames (`keep`) of generated parts too."""
    for p in PARTS:
        if p not in parts_to_generate:
            feats[p] = known_parts[p].copy()
        elif keep.any():
            feats[p][keep] = known_parts[p][keep]
    return feats


def keep_known(take: Take, known: Take, known_frames, parts_to_generate) -> Take:
    """`take` with the known take's frames (`known_frames`) and the parts not generated put back exactly
    (after intensity and root motion, which would otherwise touch them), and the generated frames eased into
    the kept ones at each seam (core.motion.take_parts.blend_seams)."""
    from ..motion.take_parts import ANIM_PARTS, blend_seams, merge_known

    n = take.num_frames
    frames = np.zeros(n, bool) if known_frames is None else np.asarray(known_frames, bool)[:n]
    mask = np.zeros((n, len(ANIM_PARTS)), bool)
    for i, part in enumerate(ANIM_PARTS):
        model_part = "lower" if part == "root" else part
        mask[:, i] = frames | (model_part not in parts_to_generate)
    return blend_seams(merge_known(take, known, mask), mask)


def music_like(audio: np.ndarray) -> bool:
    """Crude check: speech has pauses; continuous energy for a minute suggests music (warning only)."""
    frame = 1600
    n = min(len(audio) // frame, 600)
    if n < 20:
        return False
    e = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    return bool((e < 0.1 * np.median(e)).mean() < 0.02)
