"""Takes on NLA tracks: one plays, switch, solo/compare, delete, read back; the animator's keys untouched."""
import numpy as np
import pytest

from blender_helpers import ctx, fk_blender, registered, synthetic_take, world_heads  # noqa: F401
from conftest import requires_bpy
from studio_helpers import all_keys, make_rig, undo_context

pytestmark = requires_bpy


def _takes():
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.takes import nla as takes

    return compat, takes


def _tracks(owner):
    return [(t.name, t.mute) for t in owner.animation_data.nla_tracks]


def test_a_new_take_plays_from_its_own_track_and_matches_core_fk(ctx):
    compat, takes = _takes()
    rig = make_rig(ctx)
    take = synthetic_take(n=40)
    info = takes.write_new_take(rig, take, name="hello · seed 3", frame_start=11, meta={"seed": 3, "audio": "hello"})
    assert (info.name, info.frame_start, info.frame_end, info.seed, info.audio) == ("hello · seed 3", 11, 50, 3, "hello")
    assert info.playing and not info.solo
    assert rig.animation_data.action is None
    assert _tracks(rig) == [("EchoMask: hello · seed 3", False)]
    strip = rig.animation_data.nla_tracks[0].strips[0]
    assert (strip.frame_start, strip.frame_end) == (11, 50)
    if compat.HAS_SLOTTED_ACTIONS:
        assert strip.action_slot is not None and strip.action_slot.target_id_type == "OBJECT"
    pos, _ = fk_blender(take)
    for k in (0, 17, 39):
        ctx.scene.frame_set(11 + k)
        np.testing.assert_allclose(world_heads(rig), pos[k], atol=1e-4)
    face = rig.children[0]
    assert _tracks(face.data.shape_keys) == [("EchoMask: hello · seed 3 face", False)]
    ctx.scene.frame_set(11 + 20)
    assert face.data.shape_keys.key_blocks["Exp002"].value == pytest.approx(take.expressions[20, 2], abs=1e-5)


def test_switching_compare_and_solo(ctx):
    _, takes = _takes()
    rig = make_rig(ctx)
    a = takes.write_new_take(rig, synthetic_take(n=30, seed=1), name="A", frame_start=1)
    b = takes.write_new_take(rig, synthetic_take(n=30, seed=2), name="B", frame_start=1)
    assert [(t.name, t.playing) for t in takes.list_takes(rig)] == [("A", False), ("B", True)]
    face_keys = rig.children[0].data.shape_keys
    assert _tracks(face_keys) == [("EchoMask: A face", True), ("EchoMask: B face", False)]
    ctx.scene.frame_set(10)
    pose_b = np.array(rig.pose.bones["left_elbow"].rotation_quaternion)
    takes.set_playing_take(rig, "A")
    assert takes.playing_take(rig).name == "A"
    assert _tracks(face_keys) == [("EchoMask: A face", False), ("EchoMask: B face", True)]
    ctx.scene.frame_set(10)
    pose_a = np.array(rig.pose.bones["left_elbow"].rotation_quaternion)
    assert np.abs(pose_a - pose_b).max() > 1e-3
    assert takes.swap_with_previous(rig) == "B" and takes.playing_take(rig).name == "B"   # A/B
    assert takes.swap_with_previous(rig) == "A"
    takes.set_solo(rig, "B", True)
    assert [t.solo for t in takes.list_takes(rig)] == [False, True]
    ctx.scene.frame_set(10)                    # solo wins over the muted state: B plays
    np.testing.assert_allclose(np.array(rig.pose.bones["left_elbow"].rotation_quaternion), pose_b, atol=1e-6)
    takes.set_solo(rig, "B", False)
    assert not any(t.solo for t in takes.list_takes(rig))


def test_the_animators_own_action_and_keys_are_never_touched(ctx):
    import bpy

    compat, takes = _takes()
    rig = make_rig(ctx, with_face=False)
    mine, bag = compat.new_action_for(rig, "my hand animation")
    compat.write_fcurve(bag, 'pose.bones["head"].rotation_quaternion', 0, np.arange(1, 6), np.linspace(1, 0.9, 5))
    before = all_keys(mine, compat.assigned_slot(rig))
    takes.write_new_take(rig, synthetic_take(n=20), name="gen", frame_start=1)
    assert "my hand animation" in bpy.data.actions
    stash = [t for t in rig.animation_data.nla_tracks if t.strips[0].action.name == "my hand animation"]
    assert len(stash) == 1 and stash[0].mute                       # stashed on a muted track, not deleted
    after = all_keys(bpy.data.actions["my hand animation"], stash[0].strips[0].action_slot
                     if compat.HAS_SLOTTED_ACTIONS else None)
    assert before.keys() == after.keys()
    for key in before:
        for attr in before[key]:
            np.testing.assert_array_equal(before[key][attr], after[key][attr])
    assert [t.name for t in takes.list_takes(rig)] == ["gen"]       # the stash is not listed as a take


ANIMATOR_MODES = {"head": "ZXY", "left_elbow": "XYZ", "left_knee": "YZX", "right_wrist": "AXIS_ANGLE"}


def _animator_keys_in_own_modes(compat, rig):
    """The animator's blocking: Euler keys (in each bone's order) and axis-angle keys, on frames 1-9."""
    for bone, mode in ANIMATOR_MODES.items():
        rig.pose.bones[bone].rotation_mode = mode
    action, bag = compat.new_action_for(rig, "my blocking")
    frames = np.array([1.0, 5.0, 9.0])
    keyed = {"head": [[0.1, -0.3, 0.5], [0.6, 0.2, -0.4], [1.2, 0.9, 2.8]],
             "left_elbow": [[0.0, 0.0, 0.0], [-0.5, 1.2, 0.3], [0.4, -0.2, 3.0]],
             "left_knee": [[0.2, 0.1, 0.0], [1.0, -0.3, 0.2], [0.1, 0.4, -0.6]],
             "right_wrist": [[0.0, 0.0, 1.0, 0.0], [0.8, 1.0, 0.0, 0.0], [1.5, 0.0, 0.6, 0.8]]}
    for bone, values in keyed.items():
        prop = "rotation_axis_angle" if ANIMATOR_MODES[bone] == "AXIS_ANGLE" else "rotation_euler"
        values = np.array(values)
        for c in range(values.shape[1]):
            compat.write_fcurve(bag, f'pose.bones["{bone}"].{prop}', c, frames, values[:, c], group=bone)
    return action, keyed


def test_bones_keep_their_rotation_modes_and_the_animators_keys_still_play(ctx):
    """The take is keyed in each bone's own rotation mode (Euler order included); the animator's stashed
    Euler / axis-angle action plays back exactly as keyed."""
    import bpy

    compat, takes = _takes()
    rig = make_rig(ctx, with_face=False)
    _, keyed = _animator_keys_in_own_modes(compat, rig)
    played = {}
    for frame in (1, 3, 5, 9):
        ctx.scene.frame_set(frame)
        played[frame] = (world_heads(rig), {b: np.array(rig.pose.bones[b].matrix_basis) for b in ANIMATOR_MODES})
    take = synthetic_take(n=40)
    info = takes.write_new_take(rig, take, name="gen", frame_start=1)
    assert {b: rig.pose.bones[b].rotation_mode for b in ANIMATOR_MODES} == ANIMATOR_MODES   # never switched
    assert all(rig.pose.bones[b].rotation_mode == "QUATERNION" for b in ("neck", "left_wrist"))
    action = bpy.data.actions[info.name]
    paths = {fc.data_path for fc in compat.action_fcurves(action, action.slots[0] if compat.HAS_SLOTTED_ACTIONS
                                                          else None)}
    assert 'pose.bones["head"].rotation_euler' in paths and 'pose.bones["head"].rotation_quaternion' not in paths
    assert 'pose.bones["right_wrist"].rotation_axis_angle' in paths
    pos, _ = fk_blender(take)
    for k in (0, 11, 27, 39):                  # the take plays right on every bone, whatever its mode
        ctx.scene.frame_set(1 + k)
        np.testing.assert_allclose(world_heads(rig), pos[k], atol=1e-4)
    back = takes.read_take(rig, info.name)
    dots = np.abs(np.sum(back.quaternions() * take.quaternions(), -1))
    assert np.abs(dots - 1).max() < 1e-6
    # the animator switches back to their own action: it plays exactly as before the take was made
    for track in rig.animation_data.nla_tracks:
        track.mute = track.strips[0].action.name != "my blocking"
    for bone in rig.pose.bones:               # bones it does not key keep the take's last pose: rest them
        bone.matrix_basis = np.eye(4).T.tolist()
    for frame, (heads, bases) in played.items():
        ctx.scene.frame_set(frame)
        np.testing.assert_allclose(world_heads(rig), heads, atol=1e-6)
        for bone, basis in bases.items():
            np.testing.assert_allclose(np.array(rig.pose.bones[bone].matrix_basis), basis, atol=1e-6)
    ctx.scene.frame_set(5)
    np.testing.assert_allclose(np.array(rig.pose.bones["head"].rotation_euler), keyed["head"][1], atol=1e-6)


def test_only_the_chosen_parts_are_keyed(ctx):
    compat, takes = _takes()
    rig = make_rig(ctx)
    info = takes.write_new_take(rig, synthetic_take(n=10), name="hands only", frame_start=1, parts=("hands", "root"))
    import bpy

    action = bpy.data.actions[info.name]
    paths = {fc.data_path for fc in compat.action_fcurves(action, action.slots[0] if compat.HAS_SLOTTED_ACTIONS else None)}
    assert 'pose.bones["left_index1"].rotation_quaternion' in paths
    assert 'pose.bones["pelvis"].location' in paths
    assert 'pose.bones["pelvis"].rotation_quaternion' not in paths and 'pose.bones["jaw"].rotation_quaternion' not in paths
    assert info.parts == ("hands", "root") and info.face_actions == []


def test_read_take_returns_what_was_written_including_edits(ctx):
    compat, takes = _takes()
    rig = make_rig(ctx)
    take = synthetic_take(n=50)
    info = takes.write_new_take(rig, take, name="rt", frame_start=5)
    back = takes.read_take(rig, info.name)
    q0, q1 = take.quaternions(), back.quaternions()
    assert np.abs(np.abs(np.sum(q0 * q1, -1)) - 1).max() < 1e-6
    np.testing.assert_allclose(back.trans, take.trans, atol=1e-6)
    np.testing.assert_allclose(back.expressions[:, :4], take.expressions[:, :4], atol=1e-6)
    assert np.all(back.expressions[:, 4:] == 0)       # the stand-in face has only 4 expression keys
    # an animator's edit (a sparse key moved) is read through the curve, not the dense cache
    import bpy

    action = bpy.data.actions[info.name]
    slot = action.slots[0] if compat.HAS_SLOTTED_ACTIONS else None
    fc = next(f for f in compat.action_fcurves(action, slot)
              if f.data_path == 'pose.bones["pelvis"].location' and f.array_index == 0)
    fc.keyframe_points[10].co.y += 0.25
    fc.update()
    edited = takes.read_take(rig, info.name)
    assert edited.trans[10, 0] == pytest.approx(take.trans[10, 0] + 0.25, abs=1e-5)


def test_delete_take_and_undo_brings_it_back(ctx):
    import bpy

    _, takes = _takes()
    rig = make_rig(ctx)
    takes.write_new_take(rig, synthetic_take(n=10), name="keep", frame_start=1)
    takes.write_new_take(rig, synthetic_take(n=10), name="drop", frame_start=1)
    bpy.ops.ed.undo_push(message="two takes")
    ctx.scene.echomask.target = rig
    # "EXEC_DEFAULT", True: called as from the UI, where an UNDO operator pushes its undo step
    assert bpy.ops.echomask.take_delete("EXEC_DEFAULT", True, take="drop") == {"FINISHED"}
    assert [t.name for t in takes.list_takes(rig)] == ["keep"] and takes.playing_take(rig).name == "keep"
    assert "drop" not in bpy.data.actions and "drop face" not in bpy.data.actions
    assert [t.name for t in rig.children[0].data.shape_keys.animation_data.nla_tracks] == ["EchoMask: keep face"]
    name = rig.name
    with undo_context():
        bpy.ops.ed.undo()
    rig = bpy.data.objects[name]          # undo replaces every datablock: look it up again
    assert [t.name for t in takes.list_takes(rig)] == ["keep", "drop"]


def test_take_operators_and_the_list_index_switch_takes(ctx):
    import bpy

    _, takes = _takes()
    rig = make_rig(ctx, with_face=False)
    takes.write_new_take(rig, synthetic_take(n=10), name="one", frame_start=1)
    takes.write_new_take(rig, synthetic_take(n=10), name="two", frame_start=1)
    ctx.scene.echomask.target = rig
    assert bpy.ops.echomask.take_play(take="one") == {"FINISHED"} and takes.playing_take(rig).name == "one"
    assert bpy.ops.echomask.take_solo(take="two") == {"FINISHED"} and takes.list_takes(rig)[1].solo
    assert bpy.ops.echomask.take_compare() == {"FINISHED"}
    ctx.scene.echomask.take_index = 0             # picking a row in the list plays that take
    assert takes.playing_take(rig).name == "one"
    with pytest.raises(RuntimeError, match="'nope' is not a take of"):   # an ERROR report, from Python
        bpy.ops.echomask.take_play(take="nope")


def test_take_names_fit_blender_and_name_audio_and_seed():
    _, takes = _takes()
    assert takes.take_name("interview_take_03", 12) == "interview_take_03 · seed 12"
    long = takes.take_name("x" * 200, 1)
    assert len(long.encode()) <= 63 and long.endswith(" · seed 1")
