"""Re-key a range / body parts (keys outside stay bit-exact), simplify keys within tolerance, scale intensity."""
import numpy as np
import pytest

from blender_helpers import ctx, registered, synthetic_take  # noqa: F401
from conftest import requires_bpy
from studio_helpers import add_sound_strip, all_keys, make_rig, needs_audaspace, settings_for, studio, write_wav  # noqa: F401

pytestmark = requires_bpy


def _mods():
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.run import generate_op
    from echomask.echomask_blender.takes import rekey, nla as takes

    return compat, generate_op, rekey, takes


def _action_keys(name):
    import bpy

    compat, *_ = _mods()
    action = bpy.data.actions[name]
    return all_keys(action, action.slots[0] if compat.HAS_SLOTTED_ACTIONS else None)


def _generated_take(studio, tmp_path, seconds=2.0):
    compat, generate_op, rekey, takes = _mods()
    studio.scene.frame_start, studio.scene.frame_end = 1, 100
    rig = make_rig(studio)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "talk.wav", seconds=seconds), seed=1)
    run = generate_op.start_generation(studio)
    assert run.drive(studio) == "FINISHED", run.error
    return rig, takes.playing_take(rig)


def test_rekey_replaces_only_the_chosen_parts_inside_the_range(studio, tmp_path, monkeypatch):
    import bpy

    compat, generate_op, rekey, takes = _mods()
    rig, source = _generated_take(studio, tmp_path)
    assert (source.frame_start, source.frame_end) == (1, 60)
    # the animator edits a key of a part that is not re-keyed, inside the range
    action = bpy.data.actions[source.name]
    slot = action.slots[0] if compat.HAS_SLOTTED_ACTIONS else None
    fc = next(f for f in compat.action_fcurves(action, slot)
              if f.data_path == 'pose.bones["left_knee"].rotation_quaternion' and f.array_index == 1)
    fc.keyframe_points[29].co.y += 0.3
    before = _action_keys(source.name)
    face_before = _action_keys(source.face_actions[0])
    record = tmp_path / "sent"
    monkeypatch.setenv("ECHOMASK_FAKE_RECORD", str(record))
    settings_for(studio, rig, rekey_start=20, rekey_end=40, rekey_blend=2, seed=99,
                 part_face=False, part_upper=True, part_hands=True, part_lower=False, part_root=False)
    assert rekey.ECHOMASK_OT_rekey.disabled_reason(studio) is None
    run = rekey.start_rekey(studio)
    assert run.drive(studio) == "FINISHED", run.error
    new = takes.playing_take(rig)
    assert new.name == "talk · seed 1 · rekey 20-40" and new.name != source.name
    assert (new.frame_start, new.frame_end) == (1, 60)
    after = _action_keys(new.name)
    assert set(after) == set(before)
    regenerated = {f'pose.bones["{b}"].rotation_quaternion' for b in ("left_elbow", "spine2", "right_index2", "neck")}
    changed_inside = 0
    for key, old in before.items():
        cur = after[key]
        outside_old = (old["co"][:, 0] < 20) | (old["co"][:, 0] > 40)
        outside_new = (cur["co"][:, 0] < 20) | (cur["co"][:, 0] > 40)
        for attr in old:   # every key outside the range: bit-exact, every attribute
            np.testing.assert_array_equal(old[attr][outside_old], cur[attr][outside_new], err_msg=f"{key} {attr}")
        if key[0] in regenerated:
            inside = ~outside_new
            assert inside.sum() == 21
            changed_inside += int(np.any(cur["co"][inside, 1] != old["co"][~outside_old, 1]))
        elif "left_knee" in key[0] or "pelvis" in key[0] or "jaw" in key[0]:   # parts not re-keyed: all exact
            for attr in old:
                np.testing.assert_array_equal(old[attr], cur[attr], err_msg=f"{key} {attr}")
    assert changed_inside >= 3
    assert after[('pose.bones["left_knee"].rotation_quaternion', 1)]["co"][29, 1] == pytest.approx(
        before[('pose.bones["left_knee"].rotation_quaternion', 1)]["co"][29, 1])   # the edit survived
    face_after = _action_keys(new.face_actions[0])
    for key in face_before:                 # the face was not re-keyed: its action is an exact copy
        for attr in face_before[key]:
            np.testing.assert_array_equal(face_before[key][attr], face_after[key][attr])
    assert [t.name for t in takes.list_takes(rig)] == [source.name, new.name]   # the source take is kept
    # what the masked model was given: the take with the edit as known frames, and the mask
    from echomask.core.motion.take import load_take

    import json

    sent = json.loads((record / "request.json").read_text())
    assert sent["parts"] == ["upper", "hands"] and sent["seed"] == 99     # the model's part names
    known = load_take(record / "known_take.npz")
    mask = np.load(record / "known_mask.npy")
    assert known.num_frames == 60 and mask.shape == (60, 5)
    assert not mask[19:40, 1:3].any() and mask[19:40, [0, 3, 4]].all() and mask[:19].all() and mask[40:].all()
    edited = takes.read_take(rig, source.name)
    np.testing.assert_allclose(known.poses, edited.poses, atol=1e-6)


def _wav_frames(path):
    import wave

    with wave.open(str(path), "rb") as w:
        return w.getnframes(), w.getframerate()


@pytest.mark.parametrize("last_frame", [90, 1860])
def test_rekey_of_a_take_made_from_scene_sound(studio, tmp_path, monkeypatch, last_frame):
    """Scene Sound (the default source): Blender's mixdown runs past the range (frames 1-1860 mix to
    1861.4 frames of samples); the speech handed to the worker is exactly the take's frames."""
    needs_audaspace()
    compat, generate_op, rekey, takes = _mods()
    scene = studio.scene
    scene.frame_start, scene.frame_end = 1, last_frame
    rig = make_rig(studio, with_face=False)
    add_sound_strip(scene, write_wav(tmp_path / "scene_line.wav", seconds=last_frame / 30 + 1.5), frame_start=1)
    record = tmp_path / "sent"
    monkeypatch.setenv("ECHOMASK_FAKE_RECORD", str(record))
    settings_for(studio, rig, audio_source="MIX")
    assert generate_op.start_generation(studio).drive(studio, timeout=300) == "FINISHED"
    source = takes.playing_take(rig)
    assert (source.frame_start, source.frame_end) == (1, last_frame)
    assert _wav_frames(record / "speech.wav") == (last_frame * 16000 // 30, 16000)   # exactly the range
    settings_for(studio, rig, rekey_start=20, rekey_end=40, part_upper=True, part_face=False, part_hands=False,
                 part_lower=False, part_root=False)
    assert rekey.ECHOMASK_OT_rekey.disabled_reason(studio) is None
    run = rekey.start_rekey(studio)
    assert run.drive(studio, timeout=300) == "FINISHED", run.error
    new = takes.playing_take(rig)
    assert new.name != source.name and (new.frame_start, new.frame_end) == (1, last_frame)
    from echomask.core.motion.take import load_take

    assert _wav_frames(record / "speech.wav")[0] == load_take(record / "known_take.npz").num_frames * 16000 // 30


def test_rekey_is_refused_without_a_take_or_outside_it(studio, tmp_path):
    compat, generate_op, rekey, takes = _mods()
    rig = make_rig(studio, with_face=False)
    settings_for(studio, rig)
    assert "no playing take" in rekey.ECHOMASK_OT_rekey.disabled_reason(studio)
    takes.write_new_take(rig, synthetic_take(n=30), name="t", frame_start=1, meta={"source": "FILE"})
    settings_for(studio, rig, rekey_start=50, rekey_end=80)
    assert "outside the playing take (frames 1–30)" in rekey.ECHOMASK_OT_rekey.disabled_reason(studio)
    settings_for(studio, rig, rekey_start=10, rekey_end=20)
    from echomask.core.errors import EchoMaskError

    with pytest.raises(EchoMaskError, match="No speech file is chosen"):   # the take's speech is needed
        rekey.start_rekey(studio)
    assert generate_op.current_run() is None


def test_known_mask_marks_only_the_range_of_the_chosen_parts():
    *_, rekey, _ = _mods()
    mask = rekey.known_mask(10, take_start=5, start=7, end=9, parts=("face", "root"))
    assert mask.shape == (10, 5)
    assert not mask[2:5, 0].any() and not mask[2:5, 4].any() and mask[2:5, 1:4].all()
    assert mask[:2].all() and mask[5:].all()


def _smooth_take(n=120, seed=0):
    """Gesture-like motion (0.1-0.4 Hz sways), where key reduction pays off."""
    from echomask.core.motion.take import Take

    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / 30.0
    poses = 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4, (1, 165)) * t + rng.uniform(0, 6, (1, 165)))
    trans = 0.05 * np.sin(2 * np.pi * 0.2 * t) * np.array([[1.0, 0.2, 0.5]])
    expressions = np.sin(2 * np.pi * rng.uniform(0.1, 0.4, (1, 100)) * t)
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=expressions.astype(np.float32))


def _quat_angle_error(q_ref, q):
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    dot = np.clip(np.abs(np.sum(q_ref * q, -1)), -1, 1)
    return np.degrees(2 * np.arccos(dot))


@pytest.mark.parametrize("mode", ["POSE", "CHANNEL"])
def test_simplify_keeps_every_frame_within_tolerance_with_far_fewer_keys(ctx, mode):
    import bpy

    compat, generate_op, rekey, takes = _mods()
    rig = make_rig(ctx)
    takes.write_new_take(rig, _smooth_take(120), name="dense", frame_start=1)
    before = _action_keys("dense")
    result = rekey.simplify_take(rig, "dense", rotation_deg=1.0, location=0.005, expression=0.05, mode=mode)
    info, kept, total = result.info, result.kept, result.total
    assert total == 120 and kept < 40 and not result.budget_reached and result.max_error_deg <= 1.0 * 1.02
    after = _action_keys(info.name)
    assert set(after) == set(before)
    counts = {len(v["co"]) for v in after.values()}
    if mode == "POSE":
        assert counts == {kept}     # every channel keyed at the same frames: key poses
        face = _action_keys(info.face_actions[0])     # the face's shape keys: key poses of their own
        assert len({len(v["co"]) for v in face.values()}) == 1
    assert max(counts) < 120
    frames = np.arange(1, 121)
    action = bpy.data.actions[info.name]
    curves = {(fc.data_path, fc.array_index): fc for fc in compat.action_fcurves(
        action, action.slots[0] if compat.HAS_SLOTTED_ACTIONS else None)}
    for bone in ("left_elbow", "spine3", "right_thumb2", "head"):
        path = f'pose.bones["{bone}"].rotation_quaternion'
        q = np.stack([[curves[(path, c)].evaluate(f) for c in range(4)] for f in frames])
        q_ref = np.stack([before[(path, c)]["co"][:, 1] for c in range(4)], -1).astype(np.float64)
        q_ref /= np.linalg.norm(q_ref, axis=-1, keepdims=True)
        assert _quat_angle_error(q_ref, q).max() <= 1.0 * 1.02
    loc = np.stack([[curves[('pose.bones["pelvis"].location', c)].evaluate(f) for c in range(3)] for f in frames])
    loc_ref = np.stack([before[('pose.bones["pelvis"].location', c)]["co"][:, 1] for c in range(3)], -1)
    assert np.linalg.norm(loc - loc_ref, axis=1).max() <= 0.005 + 1e-6
    source_now = _action_keys("dense")
    assert all(np.array_equal(source_now[k][a], before[k][a]) for k in before for a in before[k])  # untouched
    assert len(info.face_actions) == 1 and takes.playing_take(rig).name == info.name


def _jittery_take(n=1860, seed=0, jitter_deg=1.5):
    """A generated-looking take: gesture sways plus frame-to-frame jitter on every joint (the model at
    Variation > 0), which key reduction at a tight tolerance cannot drop."""
    from echomask.core.motion.take import Take

    take = _smooth_take(n, seed)
    rng = np.random.default_rng(seed + 1)
    take.poses += np.radians(jitter_deg) * rng.standard_normal(take.poses.shape).astype(np.float32)
    return take


def test_simplify_defaults_give_editable_key_poses_and_report_the_error(ctx, capfd):
    """The panel's defaults on a 62 s jittery take: a quarter of the frames or fewer become key poses and
    the report states the rotation error that is left, measured as the new keys play."""
    import bpy

    compat, generate_op, rekey, takes = _mods()
    rig = make_rig(ctx, with_face=False)
    settings_for(ctx, rig)
    takes.write_new_take(rig, _jittery_take(1860), name="jittery", frame_start=1)
    capfd.readouterr()
    assert bpy.ops.echomask.simplify_keys() == {"FINISHED"}        # the panel's button, default settings
    reported = capfd.readouterr().out                               # Blender prints the operator's report
    new = takes.playing_take(rig)
    assert new.name == "jittery · simplified"
    kept = len(_action_keys(new.name)[('pose.bones["left_elbow"].rotation_quaternion', 0)]["co"])
    assert kept <= 1860 // 4 + 1                                   # about a quarter of the frames or fewer
    q_ref = takes.read_take(rig, "jittery").quaternions()
    err = _quat_angle_error(q_ref, takes.read_take(rig, new.name).quaternions())
    measured = rekey.simplify_take(rig, "jittery", rotation_deg=ctx.scene.echomask.simplify_rotation,
                                   location=ctx.scene.echomask.simplify_location,
                                   expression=ctx.scene.echomask.simplify_expression,
                                   max_keys=rekey.key_budget(1860, ctx.scene.echomask.simplify_budget))
    assert measured.kept == kept
    assert measured.max_error_deg == pytest.approx(err.max(), abs=0.05)
    assert measured.mean_error_deg == pytest.approx(err.mean(), abs=0.01)
    text = measured.report(ctx.scene.echomask.simplify_rotation, ctx.scene.echomask.simplify_budget)
    assert text.startswith(f"'jittery · simplified.001': {kept} key poses for 1860 frames (25%); rotation error max ")
    assert f"{measured.max_error_deg:.1f}° ({measured.worst_bone}), mean {measured.mean_error_deg:.2f}°" in text
    if measured.budget_reached:
        assert "The key budget (25% of the frames) was reached before the 3° tolerance" in text
    assert text.replace("simplified.001", "simplified") in reported                  # what the animator read


EULER_BONES = {"head": "ZXY", "left_elbow": "XYZ", "right_shoulder": "YXZ", "right_wrist": "AXIS_ANGLE"}


def _set_modes(rig, modes=EULER_BONES):
    for bone, mode in modes.items():
        rig.pose.bones[bone].rotation_mode = mode


def test_simplify_on_euler_bones_stays_within_the_rotation_tolerance(ctx):
    compat, generate_op, rekey, takes = _mods()
    rig = make_rig(ctx, with_face=False)
    _set_modes(rig)
    takes.write_new_take(rig, _smooth_take(120), name="dense", frame_start=1)
    result = rekey.simplify_take(rig, "dense", rotation_deg=1.0, location=0.005, expression=0.05, mode="POSE")
    info, kept, total = result.info, result.kept, result.total
    assert total == 120 and kept < 60
    assert {b: rig.pose.bones[b].rotation_mode for b in EULER_BONES} == EULER_BONES
    after = _action_keys(info.name)
    assert len(after[('pose.bones["head"].rotation_euler', 0)]["co"]) == kept      # reduced with the pose
    q_ref = takes.read_take(rig, "dense").quaternions()
    q = takes.read_take(rig, info.name).quaternions()       # evaluated from the kept keys, as Blender plays
    assert _quat_angle_error(q_ref, q).max() <= 1.0 * 1.02


def test_rekey_keeps_each_bone_in_its_rotation_mode(studio, tmp_path):
    compat, generate_op, rekey, takes = _mods()
    studio.scene.frame_start, studio.scene.frame_end = 1, 100
    rig = make_rig(studio, with_face=False)
    _set_modes(rig)
    settings_for(studio, rig, audio_source="FILE", audio_file=write_wav(tmp_path / "talk.wav", seconds=2.0), seed=1)
    assert generate_op.start_generation(studio).drive(studio) == "FINISHED"
    source = takes.playing_take(rig)
    before = _action_keys(source.name)
    settings_for(studio, rig, rekey_start=20, rekey_end=40, rekey_blend=2, seed=5, part_face=False, part_upper=True,
                 part_hands=False, part_lower=False, part_root=False)
    run = rekey.start_rekey(studio)
    assert run.drive(studio) == "FINISHED", run.error
    new = takes.playing_take(rig)
    after = _action_keys(new.name)
    assert set(after) == set(before)
    assert ('pose.bones["left_elbow"].rotation_euler', 2) in after
    assert ('pose.bones["left_elbow"].rotation_quaternion', 0) not in after
    assert {b: rig.pose.bones[b].rotation_mode for b in EULER_BONES} == EULER_BONES
    for key, old in before.items():            # every key outside the range exactly as it was
        cur = after[key]
        outside_old = (old["co"][:, 0] < 20) | (old["co"][:, 0] > 40)
        outside_new = (cur["co"][:, 0] < 20) | (cur["co"][:, 0] > 40)
        for attr in old:
            np.testing.assert_array_equal(old[attr][outside_old], cur[attr][outside_new], err_msg=f"{key} {attr}")
    for bone in ("left_elbow", "head", "right_shoulder"):
        euler = np.stack([after[(f'pose.bones["{bone}"].rotation_euler', c)]["co"][:, 1] for c in range(3)], -1)
        old_euler = np.stack([before[(f'pose.bones["{bone}"].rotation_euler', c)]["co"][:, 1] for c in range(3)], -1)
        assert np.abs(euler[19:40] - old_euler[19:40]).max() > 1e-3       # regenerated inside the range
        assert np.abs(np.diff(euler, axis=0)).max() < 0.5                 # continuous: no Euler wraps
    q_new = takes.read_take(rig, new.name).quaternions()
    q_old = takes.read_take(rig, source.name).quaternions()
    assert _quat_angle_error(q_old[:19], q_new[:19]).max() < 1e-3      # plays as before outside the range


def test_scale_intensity_makes_a_scaled_copy(ctx):
    compat, generate_op, rekey, takes = _mods()
    from echomask.core.motion.intensity import scale_take

    rig = make_rig(ctx)
    take = synthetic_take(n=30, scale=0.3)
    takes.write_new_take(rig, take, name="calm", frame_start=1)
    info = rekey.scale_take_intensity(rig, "calm", 1.5, ("hands", "upper"))
    assert info.name == "calm · x1.5" and takes.playing_take(rig).name == info.name
    got = takes.read_take(rig, info.name)
    want = scale_take(takes.read_take(rig, "calm"), 1.5, ("hands", "upper"))
    q0, q1 = got.quaternions(), want.quaternions()
    assert np.abs(np.abs(np.sum(q0 * q1, -1)) - 1).max() < 1e-6
    np.testing.assert_allclose(got.trans, take.trans, atol=1e-6)


def test_simplify_and_intensity_operators(ctx):
    import bpy

    compat, generate_op, rekey, takes = _mods()
    rig = make_rig(ctx, with_face=False)
    settings_for(ctx, rig)
    assert not bpy.ops.echomask.simplify_keys.poll()
    takes.write_new_take(rig, synthetic_take(n=40), name="t", frame_start=1)
    assert bpy.ops.echomask.simplify_keys() == {"FINISHED"}
    assert takes.playing_take(rig).name == "t · simplified"
    takes.set_playing_take(rig, "t")
    assert bpy.ops.echomask.scale_intensity() == {"FINISHED"}
    assert takes.playing_take(rig).name == "t · x1.25"
