"""Motion representation (take <-> part features), augmentation, and the training windows/manifests."""
import numpy as np
import pytest

from conftest import requires_torch, shared_path
from echomask.core.motion import motion_repr as M
from echomask.core.motion import rotations as R
from echomask.core.training.data import MotionWindows, TakeEntry, folder_manifest, shared_training_manifest
from echomask.core.errors import EchoMaskError
from echomask.core.motion.skeleton import MIRROR_INDEX, PARENTS, PART_DIMS, PARTS, REST_JOINTS_YUP
from echomask.core.motion.take import Take, save_take


def synthetic_take(n=120, seed=0, fps=30.0) -> Take:
    """Smooth random motion on every joint, drifting root, changing expressions."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / fps
    freq = rng.uniform(0.2, 1.5, (1, 165))
    phase = rng.uniform(0, 2 * np.pi, (1, 165))
    poses = 0.4 * np.sin(2 * np.pi * freq * t + phase)
    trans = np.concatenate([0.1 * np.sin(t), 1.3 + 0.02 * np.sin(3 * t), 0.05 * t], axis=1)
    expr = 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2, (1, 100)) * t)
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=expr.astype(np.float32), fps=fps)


def rotmats(take):
    return R.axis_angle_to_matrix(take.joint_rotations().astype(np.float64))


def test_parts_shapes_and_layout():
    take = synthetic_take()
    parts = M.take_to_parts(take)
    assert {p: parts[p].shape for p in PARTS} == {p: (take.num_frames, PART_DIMS[p]) for p in PARTS}
    assert all(parts[p].dtype == np.float32 for p in PARTS)
    np.testing.assert_array_equal(parts["face"][:, M.FACE_EXPR], take.expressions)
    np.testing.assert_allclose(parts["lower"][:, 55], take.trans[:, 1], atol=1e-6)  # absolute height
    np.testing.assert_allclose(parts["lower"][:-1, 54], np.diff(take.trans[:, 0]) * take.fps, atol=1e-4)
    contacts = parts["lower"][:, M.LOWER_CONTACTS]
    assert set(np.unique(contacts)) <= {0.0, 1.0}


def test_round_trip_take_parts_take():
    take = synthetic_take()
    back = M.parts_to_take(M.take_to_parts(take), fps=take.fps, root_motion="travel", start_trans=take.trans[0])
    want = rotmats(take)
    want[:, 23:25] = np.eye(3)  # eyes are not modelled
    np.testing.assert_allclose(rotmats(back), want, atol=1e-5)
    np.testing.assert_allclose(back.trans, take.trans, atol=1e-5)
    np.testing.assert_array_equal(back.expressions, take.expressions)
    assert back.fps == take.fps


def test_in_place_root_motion_keeps_xz_at_start():
    take = synthetic_take()
    back = M.parts_to_take(M.take_to_parts(take), root_motion="in_place")
    np.testing.assert_array_equal(back.trans[:, [0, 2]], 0.0)
    np.testing.assert_allclose(back.trans[:, 1], take.trans[:, 1], atol=1e-6)
    with pytest.raises(ValueError):
        M.parts_to_take(M.take_to_parts(take), root_motion="fly")


def test_contacts_on_planted_foot():
    n = 40
    poses = np.zeros((n, 165), np.float32)
    # Left knee (joint 4) bends progressively: left ankle/foot swing; the right leg stays planted.
    poses[:, 4 * 3] = np.linspace(0, 1.2, n)
    take = Take(poses=poses, trans=np.zeros((n, 3), np.float32), expressions=np.zeros((n, 100), np.float32))
    contacts = M.take_to_parts(take)["lower"][:, M.LOWER_CONTACTS]  # joints 7, 8, 10, 11
    assert (contacts[:, 1] == 1).all() and (contacts[:, 3] == 1).all()  # right ankle, right foot planted
    assert (contacts[:, 0] == 0).all() and (contacts[:, 2] == 0).all()  # left ankle, left foot moving
    # Whole body sliding 2 cm per frame after frame 20: nothing is planted while it slides.
    trans = np.zeros((n, 3), np.float32)
    trans[20:, 0] = 0.02 * np.arange(n - 20)
    still = Take(poses=np.zeros((n, 165), np.float32), trans=trans, expressions=np.zeros((n, 100), np.float32))
    c = M.take_to_parts(still)["lower"][:, M.LOWER_CONTACTS]
    assert (c[:19] == 1).all() and (c[20:] == 0).all()


def test_mirror_twice_is_identity():
    take = synthetic_take(seed=3)
    twice = M.mirror_take(M.mirror_take(take))
    np.testing.assert_allclose(rotmats(twice), rotmats(take), atol=1e-6)
    np.testing.assert_array_equal(twice.trans, take.trans)
    np.testing.assert_array_equal(twice.expressions, take.expressions)


def test_mirrored_fk_equals_reflected_fk():
    # A left/right symmetric rest skeleton (the SMPL-X rest pose is symmetric only to ~1 mm).
    reflect = np.diag([-1.0, 1.0, 1.0])
    rest = 0.5 * (REST_JOINTS_YUP + REST_JOINTS_YUP[list(MIRROR_INDEX)] @ reflect)
    take = synthetic_take(seed=4)
    pos = M.joint_positions(take.poses, take.trans, rest)
    mirrored = M.mirror_take(take)
    pos_m = M.joint_positions(mirrored.poses, mirrored.trans, rest)
    np.testing.assert_allclose(pos_m, (pos @ reflect)[:, list(MIRROR_INDEX)], atol=1e-5)


def test_time_stretch():
    take = synthetic_take(n=101)
    slow = M.time_stretch_take(take, 1.1)
    assert slow.fps == take.fps and slow.num_frames == 111
    np.testing.assert_allclose(slow.poses[0], take.poses[0], atol=1e-5)
    np.testing.assert_allclose(slow.trans[-1], take.trans[-1], atol=1e-5)
    assert slow.meta["time_stretch"] == pytest.approx(1.1)
    with pytest.raises(ValueError):
        M.time_stretch_take(take, 3.0)


def test_motion337_numpy_and_torch():
    take = synthetic_take()
    parts = M.take_to_parts(take)
    m = M.take_to_motion337(take)
    assert m.shape == (take.num_frames, M.MOTION_DIM)
    rot = R.axis_angle_to_rot6d(take.joint_rotations().astype(np.float64)).reshape(take.num_frames, -1)
    body = [j for j in range(55) if j not in (23, 24)]
    np.testing.assert_allclose(m[:, :330].reshape(-1, 55, 6)[:, body], rot.reshape(-1, 55, 6)[:, body], atol=1e-6)
    np.testing.assert_array_equal(m[:, M.MOTION_TRANS], parts["lower"][:, M.LOWER_TRANS])
    absolute = M.take_to_motion337(take, trans_mode="absolute")
    np.testing.assert_array_equal(absolute[:, M.MOTION_TRANS], take.trans)
    back = M.motion337_to_parts(m)
    for p in ("upper", "hands", "lower"):
        np.testing.assert_array_equal(back[p], parts[p])
    torch = pytest.importorskip("torch")
    mt = M.parts_to_motion337({p: torch.from_numpy(v)[None] for p, v in parts.items()})
    np.testing.assert_array_equal(mt[0].numpy(), m)


def test_norm_stats():
    take = synthetic_take()
    parts = M.take_to_parts(take)
    stats = M.NormStats.compute({p: [parts[p]] for p in PARTS})
    for p in PARTS:
        z = stats.normalize(p, parts[p])
        np.testing.assert_allclose(stats.denormalize(p, z), parts[p], atol=1e-5)
    # contacts are not normalised (decoded contacts stay in [0, 1]); near-constant channels get a floor
    assert (stats.mean["lower"][M.LOWER_CONTACTS] == 0).all() and (stats.std["lower"][M.LOWER_CONTACTS] == 1).all()
    assert (stats.std["hands"] >= M.NormStats.STD_FLOOR).all()
    again = M.NormStats.from_arrays(stats.to_arrays())
    np.testing.assert_array_equal(again.std["face"], stats.std["face"])


# ---------------------------------------------------------------------------------------------------------
# Windows and manifests

def _write_takes(folder, lengths, with_wav=True):
    import soundfile as sf

    for i, n in enumerate(lengths):
        save_take(synthetic_take(n=n, seed=i), folder / f"take{i}.npz")
        if with_wav:
            sf.write(folder / f"take{i}.wav", np.zeros(16000 * n // 30, np.float32), 16000)


def test_windows_split_by_time(tmp_path):
    _write_takes(tmp_path, [600, 500])
    entries = folder_manifest(tmp_path)
    assert [e.wav is not None for e in entries] == [True, True]
    train = MotionWindows(entries, "train", window=64, stride=20, stretch_factors=(0.9, 1.1))
    val = MotionWindows(entries, "val", window=64, stride=20, takes=train.takes)
    assert len(train) > 0 and len(val) > 0
    for ds in (train, val):
        for i in range(len(ds)):
            item = ds[i]
            take = ds.takes[item["take_id"]]
            split = take.num_frames - round(take.num_frames * 0.15)
            src = ds.source_frames(i)
            if ds.split == "train":
                assert np.ceil(src[-1]) <= split - 1, "a training window reaches into the held-out tail"
            else:
                assert src[0] >= split and not item["mirrored"] and item["stretch"] == 1.0
            assert item["parts"]["upper"].shape == (64, 78)
    assert {bool(train[i]["mirrored"]) for i in range(len(train))} == {False, True}
    assert sorted({round(float(train[i]["stretch"]), 3) for i in range(len(train))}) == [0.9, 1.0, 1.1]
    b = train.batch([0, 1, 2])
    assert b["parts"]["lower"].shape == (3, 64, 61) and b["weight"].shape == (3,)


def test_masked_parts_and_model_outputs(tmp_path):
    _write_takes(tmp_path, [200, 200])
    gt = TakeEntry(str(tmp_path / "take0.npz"), None, 1.0, "gt")
    model = TakeEntry(str(tmp_path / "take1.npz"), None, 0.3, "model", ("face",), holdout=0.0)
    train = MotionWindows([gt, model], "train", mirror=False, stretch_factors=())
    val = MotionWindows([gt, model], "val", takes=train.takes)
    assert all(val[i]["take_id"] == 0 for i in range(len(val)))  # model outputs never validate
    items = [train[i] for i in range(len(train))]
    assert all(it["part_mask"]["face"] == (it["take_id"] == 0) for it in items)
    assert sorted({round(float(it["weight"]), 3) for it in items}) == [0.3, 1.0]
    stats = train.compute_stats()
    assert stats.mean["face"].shape == (106,)


def test_manifest_errors(tmp_path):
    with pytest.raises(EchoMaskError, match="No .npz"):
        folder_manifest(tmp_path)
    with pytest.raises(EchoMaskError, match="not found"):
        folder_manifest(tmp_path / "missing")
    with pytest.raises(EchoMaskError, match="empty"):
        MotionWindows([], "train")


def test_shared_manifest():
    root = shared_path()
    entries = shared_training_manifest(root)
    gt = [e for e in entries if e.kind == "gt"]
    assert len(gt) >= 2 and all(e.weight == 1.0 and e.wav for e in gt)
    model = [e for e in entries if e.kind == "model"]
    assert model and all(e.weight < 1.0 for e in model)
    chgs = [e for e in model if "chgs" in e.npz]
    assert chgs and all("face" in e.masked_parts for e in chgs)
    # model outputs on a ground-truth take's speech drop the same tail (no validation speech in training)
    gt_names = {e.name for e in gt}
    assert all(e.holdout == 0.15 for e in model if e.name in gt_names)
