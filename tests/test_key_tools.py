"""bpy-free key tools: RDP key reduction within tolerance, intensity scaling by slerp, body-part merging."""
import numpy as np
import pytest

from echomask.core.motion import rotations as R
from echomask.core.motion import skeleton as S
from echomask.core.motion.intensity import mean_quaternion, quaternion_power, scale_take
from echomask.core.motion.keyreduce import max_interpolation_error, quaternion_tolerance, reduce_keys
from echomask.core.motion.take import Take
from echomask.core.motion.take import save_take
from echomask.core.motion.take_parts import (ANIM_PARTS, PART_JOINT_INDICES, SEAM_BLEND_FRAMES, blend_seams, load_known,
                                             merge_known, model_parts)


def _take(n=120, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / 30.0
    poses = 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 1.2, (1, 165)) * t + rng.uniform(0, 6, (1, 165)))
    trans = np.stack([0.2 * np.sin(t[:, 0]), 0.9 + 0.02 * np.cos(t[:, 0]), 0.1 * t[:, 0]], -1)
    expressions = np.sin(2 * np.pi * rng.uniform(0.3, 2, (1, 100)) * t)
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=expressions.astype(np.float32))


def test_reduce_keys_keeps_every_frame_within_tolerance_and_drops_most_keys():
    times = np.arange(300, dtype=float)
    values = np.stack([np.sin(times / 20.0), np.cos(times / 35.0) * 2], 1)
    for tol in (0.01, 0.05):
        kept = reduce_keys(times, values, tolerances=tol)
        assert kept[0] == 0 and kept[-1] == 299
        assert len(kept) < 80
        for c in range(2):
            assert max_interpolation_error(times, values, kept, slice(c, c + 1)) <= tol + 1e-12


def test_reduce_keys_on_straight_lines_keeps_only_the_ends_and_the_corner():
    times = np.arange(11, dtype=float)
    values = np.concatenate([np.arange(6), 5 - np.arange(1, 6) * 2.0])[:, None]
    assert list(reduce_keys(times, values, tolerances=1e-6)) == [0, 5, 10]


def test_grouped_reduction_measures_quaternion_distance_jointly():
    q = R.axis_angle_to_quaternion(np.stack([np.zeros(200), np.linspace(0, 2.0, 200) ** 2, np.zeros(200)], 1))
    tol = quaternion_tolerance(0.5)
    kept = reduce_keys(np.arange(200.0), q, groups=[slice(0, 4)], tolerances=[tol])
    assert max_interpolation_error(np.arange(200.0), q, kept, slice(0, 4)) <= tol
    assert 3 < len(kept) < 60


def test_quaternion_tolerance_matches_the_angle_between_rotations():
    a = R.axis_angle_to_quaternion(np.array([0.0, 0.3, 0.0]))
    b = R.axis_angle_to_quaternion(np.array([0.0, 0.3 + np.radians(2.0), 0.0]))
    assert np.linalg.norm(a - b) == pytest.approx(quaternion_tolerance(2.0), rel=1e-9)


def test_quaternion_power_scales_the_angle_about_the_same_axis():
    aa = np.array([[0.2, -0.4, 0.1], [1.0, 0.0, 0.0]])
    q = R.axis_angle_to_quaternion(aa)
    for s in (0.0, 0.5, 1.0, 1.7):
        np.testing.assert_allclose(R.quaternion_to_axis_angle(quaternion_power(q, s)), s * aa, atol=1e-9)


def test_scale_take_scales_only_the_chosen_parts_around_their_mean_pose():
    take = _take()
    big = scale_take(take, 1.5, parts=("hands", "face"))
    q0 = R.axis_angle_to_quaternion(take.joint_rotations().astype(np.float64))
    q1 = R.axis_angle_to_quaternion(big.joint_rotations().astype(np.float64))
    hands = list(PART_JOINT_INDICES["hands"])
    for j in hands[:3]:
        mean = mean_quaternion(q0[:, j])
        angle = lambda q: 2 * np.arccos(np.clip(np.abs(q @ mean), 0, 1))   # distance from the mean rotation
        np.testing.assert_allclose(angle(q1[:, j]), 1.5 * angle(q0[:, j]), atol=1e-4)
    others = [j for j in range(S.NUM_JOINTS) if j not in hands and j not in PART_JOINT_INDICES["face"]]
    np.testing.assert_allclose(big.joint_rotations()[:, others], take.joint_rotations()[:, others], atol=1e-5)
    mean_e = take.expressions.mean(0)
    np.testing.assert_allclose(big.expressions, mean_e + 1.5 * (take.expressions - mean_e), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(big.trans, take.trans)
    same = scale_take(take, 1.0, parts=ANIM_PARTS)
    np.testing.assert_allclose(same.joint_rotations(), take.joint_rotations(), atol=1e-5)
    still = scale_take(take, 0.0, parts=ANIM_PARTS)
    qs = R.axis_angle_to_quaternion(still.joint_rotations().astype(np.float64))
    assert np.abs(np.abs((qs * qs[:1]).sum(-1)) - 1).max() < 1e-6      # every joint holds one pose ...
    for j in (0, 16, 30):
        assert abs(abs(qs[0, j] @ mean_quaternion(q0[:, j])) - 1) < 1e-6   # ... its mean pose, not the rest pose
    np.testing.assert_allclose(still.trans, np.broadcast_to(take.trans.mean(0), take.trans.shape), atol=1e-6)
    np.testing.assert_allclose(still.expressions, np.broadcast_to(mean_e, take.expressions.shape), atol=1e-6)


def test_merge_known_copies_known_frames_per_part():
    gen, known = _take(seed=1), _take(seed=2)
    mask = np.zeros((gen.num_frames, len(ANIM_PARTS)), bool)
    mask[:40] = True                    # frames 0-39 fully known
    mask[40:, ANIM_PARTS.index("lower")] = True
    out = merge_known(gen, known, mask)
    np.testing.assert_array_equal(out.poses[:40], known.poses[:40])
    np.testing.assert_array_equal(out.trans[:40], known.trans[:40])
    lower = list(PART_JOINT_INDICES["lower"])
    np.testing.assert_array_equal(out.joint_rotations()[40:, lower], known.joint_rotations()[40:, lower])
    upper = list(PART_JOINT_INDICES["upper"])
    np.testing.assert_array_equal(out.joint_rotations()[40:, upper], gen.joint_rotations()[40:, upper])
    np.testing.assert_array_equal(out.expressions[40:], gen.expressions[40:])


def test_blend_seams_eases_a_rekeyed_range_into_the_kept_frames():
    """A generated range that starts and ends far from the kept motion (an offset of 1.4 rad, 0.3 m, 3.0 in the
    expressions) joins it without a pop; kept frames, kept parts and frames away from the seams are untouched."""
    known = _take(seed=3)
    gen = _take(seed=3)
    upper = list(PART_JOINT_INDICES["upper"])
    rot = gen.joint_rotations().copy()
    rot[:, upper] += 0.8
    gen = Take(poses=rot.reshape(gen.num_frames, -1), trans=gen.trans + 0.3, expressions=gen.expressions + 3.0)
    mask = np.ones((known.num_frames, len(ANIM_PARTS)), bool)
    mask[40:80] = False                              # re-key frames 40-79 of every part but the hands
    mask[:, ANIM_PARTS.index("hands")] = True
    merged = merge_known(gen, known, mask)
    out = blend_seams(merged, mask)

    def jumps(take):
        q = R.axis_angle_to_quaternion(take.joint_rotations()[:, upper].astype(np.float64))
        angle = 2 * np.arccos(np.clip(np.abs(np.sum(q[1:] * q[:-1], -1)), 0, 1)).max(-1)   # per frame, worst joint
        return angle, np.linalg.norm(np.diff(take.trans, axis=0), axis=-1), np.abs(np.diff(take.expressions, axis=0)).max(-1)

    before, after, smooth = jumps(merged), jumps(out), jumps(known)
    for b, a, k in zip(before, after, smooth):
        assert b[39] > 5 * k.max() and b[79] > 5 * k.max()          # the pops without blending
        assert a[39] < 2 * k.max() + 1e-6 and a[79] < 2 * k.max() + 1e-6
    kept = mask[:, 0]
    np.testing.assert_array_equal(out.poses[kept], merged.poses[kept])
    np.testing.assert_array_equal(out.trans[kept], merged.trans[kept])
    np.testing.assert_array_equal(out.expressions[kept], merged.expressions[kept])
    hands = list(PART_JOINT_INDICES["hands"])
    np.testing.assert_array_equal(out.joint_rotations()[:, hands], merged.joint_rotations()[:, hands])
    middle = slice(40 + SEAM_BLEND_FRAMES, 80 - SEAM_BLEND_FRAMES)
    np.testing.assert_allclose(out.joint_rotations()[middle], merged.joint_rotations()[middle], atol=1e-5)
    np.testing.assert_allclose(out.trans[middle], merged.trans[middle], atol=1e-6)
    assert blend_seams(merged, np.ones_like(mask)) is merged and blend_seams(merged, np.zeros_like(mask)) is merged


def test_model_parts_put_root_motion_in_the_lower_body():
    assert model_parts(("face", "hands")) == ["face", "hands"]
    assert model_parts(("root",)) == ["lower"]
    assert model_parts(ANIM_PARTS) == ["face", "upper", "hands", "lower"]


def test_load_known_gives_generate_a_30fps_take_and_a_per_frame_mask(tmp_path):
    from echomask.core.motion.take import resample_take

    take = resample_take(_take(n=120), 24.0)               # a 24 fps scene's take
    save_take(take, tmp_path / "known.npz")
    mask = np.ones((take.num_frames, len(ANIM_PARTS)), bool)
    mask[40:60, 1] = False                                 # upper body re-keyed in frames 40-59 (24 fps)
    np.save(tmp_path / "mask.npy", mask)
    known, frames = load_known(str(tmp_path / "known.npz"), str(tmp_path / "mask.npy"))
    assert known.fps == 30 and frames.shape == (known.num_frames,)
    unknown = np.flatnonzero(~frames)
    assert unknown[0] == 50 and unknown[-1] == 74           # 40/24 s and 59/24 s at 30 fps
    with pytest.raises(ValueError, match="known_mask has shape"):
        np.save(tmp_path / "bad.npy", np.ones(7, bool))
        load_known(str(tmp_path / "known.npz"), str(tmp_path / "bad.npy"))


def test_fit_known_to_speech_pads_a_frame_or_two_and_refuses_other_speech():
    from echomask.core.errors import EchoMaskError
    from echomask.core.motion.take_parts import fit_known_to_speech

    take = _take(n=60)
    mask = np.ones(60, bool)
    mask[20:40] = False
    same, same_mask = fit_known_to_speech(take, mask, 60)
    assert same is take and same_mask is mask                       # long enough: as it is
    padded, padded_mask = fit_known_to_speech(take, mask, 62)       # a mixdown's rounding
    assert padded.num_frames == 62 and padded_mask.shape == (62,)
    np.testing.assert_array_equal(padded.poses[:60], take.poses)
    np.testing.assert_array_equal(padded.poses[60:], take.poses[[59, 59]])
    np.testing.assert_array_equal(padded.trans[61], take.trans[59])
    assert padded_mask[60:].all()                                   # the last frame's mask, repeated
    _, per_part = fit_known_to_speech(take, np.ones((60, len(ANIM_PARTS)), bool), 61)
    assert per_part.shape == (61, len(ANIM_PARTS))
    assert fit_known_to_speech(take, None, 61)[1] is None
    with pytest.raises(EchoMaskError, match="not the speech the take was made from"):
        fit_known_to_speech(take, mask, 70)


def test_a_key_budget_keeps_the_worst_errors_out_first():
    from echomask.core.motion.keyreduce import interpolate_kept, quaternion_angle_deg

    rng = np.random.default_rng(4)
    times = np.arange(400, dtype=float)
    values = np.stack([np.sin(times / 15.0), np.cos(times / 40.0)], 1) + 0.01 * rng.standard_normal((400, 2))
    unlimited = reduce_keys(times, values, tolerances=0.005)
    assert len(unlimited) > 200                                       # jitter: the tolerance alone keeps most
    assert np.array_equal(reduce_keys(times, values, tolerances=0.005, max_keys=400), unlimited)
    errors = []
    for budget in (10, 50, 100):
        kept = reduce_keys(times, values, tolerances=0.005, max_keys=budget)
        assert len(kept) == budget and kept[0] == 0 and kept[-1] == 399
        errors.append(np.abs(values - interpolate_kept(times, values, kept)).max())
    assert errors[0] > errors[1] > errors[2] > 0.005
    with pytest.raises(ValueError, match="at least 2"):
        reduce_keys(times, values, max_keys=1)
    q = R.axis_angle_to_quaternion(np.array([[0.0, 0.0, 0.0], [0.0, np.radians(30), 0.0]]))
    np.testing.assert_allclose(quaternion_angle_deg(q[:1], q), [0.0, 30.0], atol=1e-6)
    np.testing.assert_allclose(quaternion_angle_deg(q, -2 * q), [0.0, 0.0], atol=1e-6)   # sign, length
