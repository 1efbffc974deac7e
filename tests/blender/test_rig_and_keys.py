"""The SMPL-X rig and the bulk take writer: Blender's evaluated pose must equal core forward kinematics."""
import numpy as np
import pytest

from echomask.core.motion import skeleton as S
from echomask.core.errors import RigError
from echomask.core.motion.take import load_take

from blender_helpers import (C, ctx, fcurve_values, fk_blender, registered, synthetic_take,  # noqa: F401
                             world_heads, world_rotation_deltas)
from conftest import requires_bpy, shared_path

pytestmark = requires_bpy
SAMPLE_FRAMES = (0, 7, 23, 47)


def _rig_and_keys():
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.rigs import rig
    from echomask.echomask_blender.takes import keys

    return compat, keys, rig


def _assert_pose_matches_fk(scene, obj, take, frames, frame_start=1, scale=1.0, rest=None):
    pos, glob = fk_blender(take, rest_yup=rest, scale=scale)
    for k in frames:
        scene.frame_set(frame_start + k)
        np.testing.assert_allclose(world_heads(obj), pos[k], atol=1e-4 * scale,
                                   err_msg=f"joint positions differ from core FK at take frame {k}")
        np.testing.assert_allclose(world_rotation_deltas(obj), glob[k], atol=1e-4,
                                   err_msg=f"joint rotations differ from core FK at take frame {k}")


def test_create_rig_builds_55_bones_straight_up_at_the_rest_joints(ctx):
    _, _, rig = _rig_and_keys()
    obj = rig.create_smplx_armature(ctx)
    bones = obj.data.bones
    assert obj.type == "ARMATURE" and len(bones) == 55
    assert sorted(b.name for b in bones) == sorted(S.JOINT_NAMES)
    for j, name in enumerate(S.JOINT_NAMES):
        bone = bones[name]
        parent = S.PARENTS[j]
        assert (bone.parent.name if bone.parent else None) == (S.JOINT_NAMES[parent] if parent >= 0 else None)
        np.testing.assert_allclose(np.array(bone.matrix_local)[:3, :3], C, atol=1e-6)  # bone frame = SMPL-X frame
        np.testing.assert_allclose(np.array(bone.head_local), C @ S.REST_JOINTS_YUP[j], atol=1e-6)
    assert all(pb.rotation_mode == "QUATERNION" for pb in obj.pose.bones)
    frames = rig.rig_frames(obj)
    assert frames.is_direct and frames.scale == 1.0


def test_armature_lacking_bones_is_rejected_with_their_names(ctx):
    import bpy

    _, _, rig = _rig_and_keys()
    obj = rig.create_smplx_armature(ctx)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    for name in ("jaw", "left_thumb3"):
        obj.data.edit_bones.remove(obj.data.edit_bones[name])
    bpy.ops.object.mode_set(mode="OBJECT")
    with pytest.raises(RigError, match=r"2 of its 55 bones are missing \(jaw, left_thumb3\)"):
        rig.check_smplx_armature(obj)
    empty = bpy.data.objects.new("Empty", None)
    with pytest.raises(RigError, match="not an armature"):
        rig.check_smplx_armature(empty)


def test_new_action_is_assigned_with_its_own_slot_and_bulk_keys(ctx):
    compat, keys, rig = _rig_and_keys()
    obj = rig.create_smplx_armature(ctx)
    take = synthetic_take(n=48)
    result = keys.write_take_to_armature(obj, take, name="take A", frame_start=5)
    action = obj.animation_data.action
    assert action is not None and action.name == result.action == "take A"
    assert (result.frame_start, result.frame_end) == (5, 52)
    slot = compat.assigned_slot(obj)
    if compat.HAS_SLOTTED_ACTIONS:  # 4.4+: must be assigned explicitly or nothing plays
        assert slot is not None and slot.target_id_type == "OBJECT" and slot in list(action.slots)
    fcurves = compat.action_fcurves(action, slot)
    assert len(fcurves) == 55 * 4 + 3
    values = fcurve_values(fcurves)
    assert all(len(co) == 48 for co in values.values())
    co = values[('pose.bones["jaw"].rotation_quaternion', 0)]
    np.testing.assert_allclose(co[:, 0], np.arange(5, 53))


def test_world_joints_equal_core_fk_on_a_synthetic_take(ctx):
    _, keys, rig = _rig_and_keys()
    obj = rig.create_smplx_armature(ctx)
    take = synthetic_take(n=48, scale=1.2)
    keys.write_take_to_armature(obj, take, frame_start=1)
    _assert_pose_matches_fk(ctx.scene, obj, take, SAMPLE_FRAMES)


def test_bones_are_keyed_in_their_own_rotation_modes(ctx):
    """An animator's rig with Euler (any order) and axis-angle bones: their modes stay, the take plays."""
    compat, keys, rig = _rig_and_keys()
    obj = rig.create_smplx_armature(ctx)
    modes = {"spine3": "ZYX", "left_shoulder": "XZY", "right_hip": "YZX", "jaw": "AXIS_ANGLE"}
    for bone, mode in modes.items():
        obj.pose.bones[bone].rotation_mode = mode
    take = synthetic_take(n=48, scale=1.2)
    keys.write_take_to_armature(obj, take, frame_start=1)
    assert {b: obj.pose.bones[b].rotation_mode for b in modes} == modes
    paths = {fc.data_path for fc in compat.action_fcurves(obj.animation_data.action, compat.assigned_slot(obj))}
    assert 'pose.bones["spine3"].rotation_euler' in paths and 'pose.bones["jaw"].rotation_axis_angle' in paths
    assert 'pose.bones["spine3"].rotation_quaternion' not in paths
    _assert_pose_matches_fk(ctx.scene, obj, take, SAMPLE_FRAMES)   # every bone plays the take, any mode


def test_world_joints_equal_core_fk_on_a_real_beat2_take(ctx):
    _, keys, rig = _rig_and_keys()
    take = load_take(shared_path("beat2_samples", "smplxflame_30", "2_scott_0_1_1.npz"))
    obj = rig.create_smplx_armature(ctx)
    keys.write_take_to_armature(obj, take, frame_start=1)
    _assert_pose_matches_fk(ctx.scene, obj, take, (0, 311, 1000, take.num_frames - 1))
    ctx.scene.frame_set(1)
    feet = world_heads(obj)[[S.JOINT_INDEX["left_foot"], S.JOINT_INDEX["right_foot"]], 2]
    assert np.all(np.abs(feet) < 0.1), f"feet should stand near z = 0 in Blender, got {feet}"


def _build_foreign_rig(ctx, name, object_rotation_x, scale, bone_axis):
    """An SMPL-X-named rig laid out differently from ours: Y-up armature space under a rotated object
    (the SMPL-X add-on's layout), optionally in centimetres, with bones along their child direction."""
    import bpy
    from mathutils import Euler

    arm = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, arm)
    ctx.scene.collection.objects.link(obj)
    obj.rotation_euler = Euler((object_rotation_x, 0.0, 0.0))
    ctx.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    heads = scale * S.REST_JOINTS_YUP
    for j, bone_name in enumerate(S.JOINT_NAMES):
        bone = arm.edit_bones.new(bone_name)
        bone.head = heads[j]
        kids = S.children(j)
        direction = (heads[kids[0]] - heads[j]) if (bone_axis == "child" and kids) else np.array([0, 1.0, 0])
        bone.tail = heads[j] + 0.05 * scale * direction / np.linalg.norm(direction)
        bone.roll = 0.3 * j if bone_axis == "child" else 0.0
        if S.PARENTS[j] >= 0:
            bone.parent = arm.edit_bones[S.JOINT_NAMES[S.PARENTS[j]]]
    bpy.ops.object.mode_set(mode="OBJECT")
    ctx.view_layer.update()
    return obj


@pytest.mark.parametrize("layout", ["smplx_addon", "centimetre_child_axes"])
def test_other_rigs_with_smplx_bone_names_follow_the_same_motion(ctx, layout):
    _, keys, rig = _rig_and_keys()
    if layout == "smplx_addon":  # bones along +Y in a Y-up armature, object turned +90 deg about X
        obj, scale = _build_foreign_rig(ctx, "addon_rig", np.pi / 2, 1.0, "up"), 1.0
        frames = rig.rig_frames(obj)
        assert frames.is_direct, "the SMPL-X add-on layout takes SMPL-X rotations as they are"
    else:  # centimetres, bones pointing at their children with arbitrary rolls
        obj, scale = _build_foreign_rig(ctx, "cm_rig", np.pi / 2, 100.0, "child"), 100.0
        frames = rig.rig_frames(obj)
        assert not frames.is_direct and frames.scale == 100.0
    take = synthetic_take(n=48, seed=3)
    keys.write_take_to_armature(obj, take)
    _assert_pose_matches_fk(ctx.scene, obj, take, SAMPLE_FRAMES, scale=scale)


def test_written_quaternions_are_sign_continuous(ctx):
    compat, keys, rig = _rig_and_keys()
    obj = rig.create_smplx_armature(ctx)
    take = synthetic_take(n=40)
    # The wrist turns steadily through 180 degrees: axis-angle wraps, the quaternion must not flip.
    angle = np.linspace(2.5, 3.8, 40)
    axis_angle = np.where(angle[:, None] <= np.pi, angle[:, None] * [0, 0, 1.0],
                          (2 * np.pi - angle[:, None]) * [0, 0, -1.0])
    j = S.JOINT_INDEX["left_wrist"]
    take.poses[:, 3 * j:3 * j + 3] = axis_angle
    keys.write_take_to_armature(obj, take)
    values = fcurve_values(compat.action_fcurves(obj.animation_data.action, compat.assigned_slot(obj)))
    path = 'pose.bones["left_wrist"].rotation_quaternion'
    q = np.stack([values[(path, c)][:, 1] for c in range(4)], -1)
    assert np.all(np.sum(q[1:] * q[:-1], -1) > 0.9)


def test_second_import_keeps_existing_actions_and_keys(ctx):
    import bpy

    compat, keys, rig = _rig_and_keys()
    obj = rig.create_smplx_armature(ctx)
    first = keys.write_take_to_armature(obj, synthetic_take(n=30, seed=1), name="take A")
    hand_keyed = bpy.data.actions.new("hand keyed")  # an unrelated action the animator owns
    hand_keyed.use_fake_user = True
    before_a = fcurve_values(compat.action_fcurves(bpy.data.actions["take A"], compat.assigned_slot(obj)))
    second = keys.write_take_to_armature(obj, synthetic_take(n=20, seed=2), name="take B")

    assert second.stashed == ["take A"]
    assert obj.animation_data.action.name == "take B" != first.action
    assert set(bpy.data.actions.keys()) == {"take A", "take B", "hand keyed"}
    tracks = obj.animation_data.nla_tracks
    assert len(tracks) == 1 and tracks[0].mute and tracks[0].strips[0].action.name == "take A"
    after_a = fcurve_values(compat.action_fcurves(bpy.data.actions["take A"], tracks[0].strips[0].action_slot
                                                  if compat.HAS_SLOTTED_ACTIONS else None))
    assert before_a.keys() == after_a.keys()
    for key in before_a:
        np.testing.assert_array_equal(before_a[key], after_a[key])
    # The muted stash does not play: the pose follows take B.
    take_b = synthetic_take(n=20, seed=2)
    _assert_pose_matches_fk(ctx.scene, obj, take_b, (0, 19))
