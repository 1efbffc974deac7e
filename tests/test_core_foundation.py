"""Foundation of the core: rotations, forward kinematics, takes (load/save/validate/resample), audio loading."""
import numpy as np
import pytest

from echomask.core.motion import rotations as R
from echomask.core.motion import skeleton as S
from echomask.core.speech.audio import SAMPLE_RATE, is_silent, load_speech
from echomask.core.errors import AudioError, TakeFormatError
from echomask.core.motion.take import Take, load_take, neutral_take, resample_take, save_take

from conftest import requires_torch, shared_path

RNG = np.random.default_rng(7)


def random_axis_angle(n):
    axis = RNG.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return axis * RNG.uniform(0, np.pi - 1e-3, size=(n, 1))


def random_take(n=40, fps=30.0):
    return Take(poses=(random_axis_angle(n * 55).reshape(n, 165) * 0.3).astype(np.float32),
                trans=RNG.normal(size=(n, 3)).astype(np.float32) * 0.1,
                expressions=RNG.normal(size=(n, 100)).astype(np.float32), fps=fps)


# ---------------------------------------------------------------- rotations
def test_skeleton_tables_are_consistent():
    assert len(S.JOINT_NAMES) == len(S.PARENTS) == S.REST_JOINTS_YUP.shape[0] == 55
    assert all(p < j for j, p in enumerate(S.PARENTS))  # parents come first: FK can run in order
    assert sum(S.PART_DIMS.values()) == 425
    assert all(S.MIRROR_INDEX[S.MIRROR_INDEX[j]] == j for j in range(55))
    assert S.JOINT_NAMES[S.MIRROR_INDEX[S.JOINT_INDEX["left_wrist"]]] == "right_wrist"


def test_axis_angle_matrix_quaternion_rot6d_round_trips_numpy():
    aa = random_axis_angle(500)
    m = R.axis_angle_to_matrix(aa)
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)
    np.testing.assert_allclose(R.matrix_to_axis_angle(m), aa, atol=1e-9)
    np.testing.assert_allclose(R.quaternion_to_axis_angle(R.axis_angle_to_quaternion(aa)), aa, atol=1e-9)
    np.testing.assert_allclose(R.rot6d_to_matrix(R.matrix_to_rot6d(m)), m, atol=1e-12)
    np.testing.assert_allclose(R.quaternion_to_matrix(R.matrix_to_quaternion(m)), m, atol=1e-12)


def test_rotations_match_rodrigues_reference_and_small_angles():
    from scipy.spatial.transform import Rotation

    aa = np.concatenate([random_axis_angle(100), np.zeros((1, 3)), np.full((1, 3), 1e-9)])
    np.testing.assert_allclose(R.axis_angle_to_matrix(aa), Rotation.from_rotvec(aa).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(R.matrix_to_axis_angle(np.eye(3)[None]), np.zeros((1, 3)), atol=1e-12)


def test_rot6d_is_first_two_rows_and_orthonormalises():
    m = R.axis_angle_to_matrix(random_axis_angle(10))
    np.testing.assert_allclose(R.matrix_to_rot6d(m), m[:, :2, :].reshape(10, 6))
    noisy = R.matrix_to_rot6d(m) + RNG.normal(size=(10, 6)) * 0.01
    back = R.rot6d_to_matrix(noisy)
    np.testing.assert_allclose(back @ np.swapaxes(back, -1, -2), np.broadcast_to(np.eye(3), back.shape), atol=1e-12)


@requires_torch
def test_torch_matches_numpy_and_has_gradients():
    import torch

    aa = random_axis_angle(64)
    t = torch.tensor(aa, requires_grad=True)
    for fn in (R.axis_angle_to_matrix, R.axis_angle_to_quaternion, R.axis_angle_to_rot6d):
        np.testing.assert_allclose(fn(t).detach().numpy(), fn(aa), atol=1e-12)
    R.rot6d_to_axis_angle(R.axis_angle_to_rot6d(t)).sum().backward()
    assert torch.isfinite(t.grad).all()
    z = torch.zeros(3, 3, requires_grad=True)  # zero rotation: gradients must stay finite
    R.axis_angle_to_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_quaternion_continuity_removes_sign_flips():
    q = R.axis_angle_to_quaternion(np.linspace([0, 0, 0.1], [0, 0, 3.0], 50))
    flipped = q.copy()
    flipped[10:20] *= -1
    flipped[30:] *= -1
    fixed = R.make_quaternions_continuous(flipped)
    assert (np.sum(fixed[1:] * fixed[:-1], -1) > 0).all()
    np.testing.assert_allclose(np.abs(np.sum(fixed * q, -1)), 1.0, atol=1e-12)  # same rotations


def test_slerp_midpoint_is_half_rotation():
    q0 = R.axis_angle_to_quaternion(np.array([0.0, 0, 0]))
    q1 = R.axis_angle_to_quaternion(np.array([0.0, 0, 2.0]))
    np.testing.assert_allclose(R.quaternion_to_axis_angle(R.quaternion_slerp(q0, q1, 0.5)), [0, 0, 1.0], atol=1e-12)


def test_forward_kinematics_rest_pose_and_rigid_root():
    rot = np.broadcast_to(np.eye(3), (2, 55, 3, 3)).copy()
    pos, _ = R.forward_kinematics(rot, S.REST_JOINTS_YUP, S.PARENTS, np.zeros((2, 3)))
    np.testing.assert_allclose(pos[0], S.REST_JOINTS_YUP, atol=1e-12)
    # Rotating the root rotates everything about the pelvis; bone lengths are preserved.
    rot[1, 0] = R.axis_angle_to_matrix(np.array([0.0, 1.0, 0.0]))
    pos, _ = R.forward_kinematics(rot, S.REST_JOINTS_YUP, S.PARENTS)
    par = np.array(S.PARENTS[1:])
    np.testing.assert_allclose(np.linalg.norm(pos[1, 1:] - pos[1, par], axis=-1),
                               np.linalg.norm(pos[0, 1:] - pos[0, par], axis=-1), atol=1e-12)


def test_forward_kinematics_on_real_takes_feet_on_ground_head_at_height():
    for name in ("2_scott_0_1_1.npz", "2_scott_0_2_2.npz"):
        take = load_take(shared_path("beat2_samples", "smplxflame_30", name))
        sub = take.slice(0, take.num_frames, )
        rot = R.axis_angle_to_matrix(sub.joint_rotations()[::10].astype(np.float64))
        pos, _ = R.forward_kinematics(rot, S.REST_JOINTS_YUP, S.PARENTS, sub.trans[::10].astype(np.float64))
        feet = pos[:, [S.JOINT_INDEX["left_foot"], S.JOINT_INDEX["right_foot"]], 1]
        assert abs(np.median(feet.min(axis=1))) < 0.05, "the lower foot should touch y = 0"
        assert 1.4 < np.median(pos[:, S.JOINT_INDEX["head"], 1]) < 1.65, "head near 1.5 m"


# ---------------------------------------------------------------- takes
def test_take_save_load_round_trip(tmp_path):
    take = random_take()
    save_take(take, tmp_path / "t.npz")
    back = load_take(tmp_path / "t.npz")
    for field in ("poses", "trans", "expressions", "betas"):
        np.testing.assert_array_equal(getattr(back, field), getattr(take, field))
    assert back.fps == 30.0 and back.num_frames == 40
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30, 60])
def test_resample_keeps_duration_and_motion(fps):
    take = random_take(91)
    # Smooth motion so that interpolation is meaningful: slow rotation about a fixed axis per joint.
    t = np.arange(91)[:, None, None] / 30.0
    axis = RNG.normal(size=(1, 55, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    take.poses = (axis * (0.5 + 0.4 * np.sin(t * 2))).reshape(91, 165).astype(np.float32)
    out = resample_take(take, fps)
    assert out.fps == fps
    assert abs(out.duration - take.duration) <= 1.0 / fps + 1e-9
    # Sample k of the output lies at time k/fps: compare with the analytic motion there.
    k = np.arange(out.num_frames)[:, None, None] / fps
    expected = (axis * (0.5 + 0.4 * np.sin(k * 2))).reshape(out.num_frames, 165)
    np.testing.assert_allclose(out.poses, expected, atol=2e-3)


def test_resample_handles_quaternion_sign_and_round_trip():
    take = random_take(30)
    back = resample_take(resample_take(take, 60), 30)
    m0 = R.axis_angle_to_matrix(take.joint_rotations().astype(np.float64))
    m1 = R.axis_angle_to_matrix(back.joint_rotations().astype(np.float64))
    np.testing.assert_allclose(m1[: len(m0)], m0[: len(m1)], atol=1e-5)


def _write_npz(path, **fields):
    np.savez(path, **fields)
    return path


@pytest.mark.parametrize("fields,message", [
    (dict(trans=np.zeros((5, 3)), expressions=np.zeros((5, 100))), "'poses' is missing"),
    (dict(poses=np.zeros((5, 160)), trans=np.zeros((5, 3))), "'poses' has shape (5, 160)"),
    (dict(poses=np.zeros((5, 165)), trans=np.zeros((4, 3))), "'trans' has shape (4, 3)"),
    (dict(poses=np.full((5, 165), np.nan), trans=np.zeros((5, 3))), "'poses' contains NaN"),
    (dict(poses=np.zeros((0, 165)), trans=np.zeros((0, 3))), "no frames"),
])
def test_bad_take_files_name_the_problem(tmp_path, fields, message):
    path = _write_npz(tmp_path / "bad.npz", **fields)
    with pytest.raises(TakeFormatError) as err:
        load_take(path)
    assert message in str(err.value) and "bad.npz" in str(err.value)


def test_missing_and_corrupt_take_files(tmp_path):
    with pytest.raises(TakeFormatError, match="not found"):
        load_take(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(TakeFormatError, match="cannot be read"):
        load_take(tmp_path / "junk.npz")


def test_neutral_take_is_still():
    take = neutral_take(10)
    assert take.num_frames == 10 and not take.poses.any() and not take.trans.any()


# ---------------------------------------------------------------- audio
def test_audio_formats_rates_and_channels(tmp_path):
    import soundfile as sf

    t = np.arange(48000 * 2) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 220 * t)], 1).astype(np.float32) * 0.5
    for ext in ("wav", "flac", "ogg", "mp3"):
        sf.write(tmp_path / f"s.{ext}", stereo, 48000)
        audio = load_speech(tmp_path / f"s.{ext}")
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(len(audio) - 2 * SAMPLE_RATE) < 0.05 * SAMPLE_RATE  # mp3 pads a little
        assert 0.3 < np.abs(audio).max() <= 1.0


def test_audio_errors_are_clear(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_speech(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_speech(tmp_path / "empty.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match="corrupt.wav"):
        load_speech(tmp_path / "corrupt.wav")
    with pytest.raises(AudioError, match="No speech audio"):
        load_speech("")


def test_silence_detection():
    assert is_silent(np.zeros(16000, np.float32))
    assert not is_silent(np.sin(np.arange(16000) / 10).astype(np.float32) * 0.3)
    hiss = np.random.default_rng(0).standard_normal(3 * 16000).astype(np.float32) * 10 ** (-60 / 20)
    assert is_silent(hiss)                                   # room tone / hiss at -60 dBFS: nearly silent
    line = hiss.copy()
    line[16000:16000 + 4000] += 0.2 * np.sin(np.arange(4000) / 8)   # a quarter second of speech in it
    assert not is_silent(line)


def test_silence_is_refused_with_the_sounds_name():
    from echomask.core.speech.audio import check_has_speech

    with pytest.raises(AudioError, match="No speech found in the sound strip 'line_04': it is completely silent"):
        check_has_speech(np.zeros(48000, np.float32), "the sound strip 'line_04'")
    with pytest.raises(AudioError, match=r"nearly silent \(its loudest moment is -6\d dBFS\)"):
        check_has_speech(np.full(48000, 10 ** (-62 / 20), np.float32), "'x.wav'")
    check_has_speech(np.sin(np.arange(48000) / 10).astype(np.float32) * 0.3, "'speech.wav'")   # no error


def test_real_beat2_speech_float32_wav():
    audio = load_speech(shared_path("beat2_samples", "wave16k", "2_scott_0_1_1.wav"))
    assert abs(len(audio) / SAMPLE_RATE - 64.1) < 0.1


def _axis_rotation(axis, angle):
    aa = np.zeros(3)
    aa["XYZ".index(axis)] = angle
    return R.axis_angle_to_matrix(aa)


@pytest.mark.parametrize("order", R.EULER_ORDERS)
def test_euler_angles_in_blenders_convention_round_trip(order):
    """Order 'XYZ' rotates about X first (R = Rz Ry Rx); angles are laid out (x, y, z) whatever the order."""
    rng = np.random.default_rng(3)
    euler = rng.uniform(-3, 3, (40, 3))
    euler[:, "XYZ".index(order[1])] = rng.uniform(-1.5, 1.5, 40)
    m = R.euler_to_matrix(euler, order)
    e = euler[7]
    first, middle, last = (_axis_rotation(a, e["XYZ".index(a)]) for a in order)
    np.testing.assert_allclose(m[7], last @ middle @ first, atol=1e-12)
    np.testing.assert_allclose(R.matrix_to_euler(m, order), euler, atol=1e-9)   # middle angle in range
    locked = euler.copy()
    locked[:, "XYZ".index(order[1])] = np.pi / 2          # gimbal lock: the same rotation comes back
    ml = R.euler_to_matrix(locked, order)
    np.testing.assert_allclose(R.euler_to_matrix(R.matrix_to_euler(ml, order), order), ml, atol=1e-9)
    q = R.euler_to_quaternion(euler, order)
    np.testing.assert_allclose(R.euler_to_matrix(R.quaternion_to_euler(q, order), order), m, atol=1e-9)


def test_continuous_euler_angles_have_no_jumps():
    t = np.linspace(0, 1, 200)
    # a turn and a half about Z while pitching through the gimbal-lock angle of ZXY's middle axis
    mats = np.stack([_axis_rotation("Z", 3 * np.pi * s) @ _axis_rotation("X", 2.0 * s) for s in t])
    raw = R.matrix_to_euler(mats, "XYZ")
    assert np.abs(np.diff(raw, axis=0)).max() > 3          # the principal angles wrap and flip
    for order in ("XYZ", "ZXY"):
        smooth = R.make_euler_continuous(R.matrix_to_euler(mats, order), order)
        assert np.abs(np.diff(smooth, axis=0)).max() < 0.5   # fast only next to the gimbal lock
        np.testing.assert_allclose(R.euler_to_matrix(smooth, order), mats, atol=1e-9)
    ref = np.array([0.0, 0.0, 2 * np.pi])                  # continuing keys that already made a turn
    shifted = R.make_euler_continuous(R.matrix_to_euler(mats[:3], "XYZ"), "XYZ", reference=ref)
    assert abs(shifted[0, 2] - 2 * np.pi) < 0.1


def test_bvh_from_blenders_z_up_axes_to_y_up():
    from echomask.core.motion.bvh import Z_UP_TO_Y_UP, z_up_to_y_up

    text = """HIERARCHY
ROOT pelvis
{
\tOFFSET 0.000000 0.100000 0.900000
\tCHANNELS 6 Xposition Yposition Zposition Xrotation Yrotation Zrotation
\tJOINT spine
\t{
\t\tOFFSET 0.000000 0.000000 0.200000
\t\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
\t\tEnd Site
\t\t{
\t\t\tOFFSET 0.000000 0.000000 0.100000
\t\t}
\t}
}
MOTION
Frames: 2
Frame Time: 0.033333
0.1 0.2 0.9 10 20 30 0 0 0.2 5 -40 60
0.1 0.3 0.9 12 22 33 0 0 0.2 6 -41 61
"""
    out = z_up_to_y_up(text)
    lines = out.splitlines()
    assert [line.strip() for line in lines if "OFFSET" in line] == [
        "OFFSET 0.000000 0.900000 -0.100000", "OFFSET 0.000000 0.200000 0.000000",   # Z up -> Y up
        "OFFSET 0.000000 0.100000 0.000000"]                                        # the End Site too
    motion = lines.index("MOTION")
    assert lines[motion:motion + 3] == ["MOTION", "Frames: 2", "Frame Time: 0.033333"]
    assert [line.strip() for line in lines[:motion] if "OFFSET" not in line] == [
        line.strip() for line in text.splitlines()[:motion] if "OFFSET" not in line]   # hierarchy kept
    rows = np.array([[float(v) for v in line.split()] for line in lines[motion + 3:]])
    assert rows.shape == (2, 12)
    np.testing.assert_allclose(rows[1, :3], [0.1, 0.9, -0.3], atol=1e-6)
    for cols, listed, values in ((slice(3, 6), "XYZ", [12, 22, 33]), (slice(9, 12), "ZXY", [6, -41, 61])):
        before = np.eye(3)
        after = np.eye(3)
        got = dict(zip(listed, rows[1, cols]))        # each joint keeps its own channel order
        for axis, value in zip(listed, values):
            before = before @ _axis_rotation(axis, np.radians(value))
            after = after @ _axis_rotation(axis, np.radians(got[axis]))
        np.testing.assert_allclose(after, Z_UP_TO_Y_UP @ before @ Z_UP_TO_Y_UP.T, atol=1e-5)
