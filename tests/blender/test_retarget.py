"""Retargeting in Blender: the real Mixamo BVH skeleton, a UE5-named rig, a generated Rigify rig; take
semantics (new Action on its own NLA track, the rig's animation stashed, rotation modes kept), reading a
take back, Simplify/Scale/A-B/exports on a mapped rig, bad input, and the command line end to end."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, requires_bpy, shared_path
from blender_helpers import ctx, registered  # noqa: F401  (fixtures)
from echomask.core.retarget import solve
from echomask.core.retarget.bone_map import BoneMap, BoneRow, load_bone_map, preset_path
from echomask.core.retarget.quality import measure
from echomask.core.motion.take import Take, load_take, save_take

import retarget_rigs as rigs

pytestmark = requires_bpy


def _take(n=40, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / 30.0
    poses = 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0, (1, 165)) * t + rng.uniform(0, 6, (1, 165)))
    trans = np.stack([0.05 * np.sin(t[:, 0]), 1.29 + 0.01 * np.cos(3 * t[:, 0]), 0.02 * t[:, 0]], -1)
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=np.zeros((n, 100), np.float32))


def _quality(context, obj, take, info, measure_bones=None, step=3):
    from echomask.echomask_blender.rigs import retarget

    plan, _ = retarget.plan_for(obj)
    frames = np.arange(info.frame_start, info.frame_end + 1, step)
    bones = [b for b in set(plan.joint_bone.values()) | set((measure_bones or {}).values()) if b in obj.pose.bones]
    heads, rots = rigs.evaluate_rig(context, obj, bones, frames)
    pos_s, G = solve.source_fk(take)
    rows = frames - info.frame_start
    return measure(plan, pos_s[rows], G[rows], heads, rots, measure_bones=measure_bones).summary()


def _state(obj):
    import bpy

    anim = obj.animation_data
    return (len(bpy.data.actions), len(anim.nla_tracks) if anim else 0, anim.action.name if anim and anim.action else None,
            obj.get("echomask_applied_bone_map"))


def test_euler_matches_mathutils(ctx):
    from mathutils import Euler

    rng = np.random.default_rng(0)
    for order in ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"):
        angles = rng.uniform(-1.5, 1.5, 3)
        ours = solve.euler_to_matrix(angles, order)
        theirs = np.array(Euler(angles, order).to_matrix())
        assert np.abs(ours - theirs).max() < 1e-6, order


def test_mixamo_bvh_skeleton_in_its_rest_pose(ctx):
    import bpy

    from echomask.core.motion import rotations as R
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.rigs import bone_mapping
    from echomask.echomask_blender.takes import rekey, nla as takes

    obj = rigs.import_bvh(shared_path(*rigs.MIXAMO_BVH))
    own = obj.animation_data.action.name       # the BVH's own motion stands for the animator's animation
    own_keys = [tuple(fc.keyframe_points[3].co) for fc in compat.action_fcurves(obj.animation_data.action)]
    mode = obj.pose.bones["LeftArm"].rotation_mode
    take = _take()
    info, notes = bone_mapping.apply_bone_map(ctx, obj, load_bone_map(preset_path("mixamo")), solve.RetargetOptions(),
                                              take, name="speech", frame_start=1)
    assert any("far from a T- or A-pose" in n for n in notes) and any(own in n for n in notes)
    assert obj.pose.bones["LeftArm"].rotation_mode == mode != "QUATERNION"    # the rig's own modes
    anim = obj.animation_data
    assert anim.action is None and any(t.name.startswith("[Stash]") and t.mute for t in anim.nla_tracks)
    assert [tuple(fc.keyframe_points[3].co) for fc in compat.action_fcurves(bpy.data.actions[own])] == own_keys
    assert takes.playing_take(obj).name == info.name
    q = _quality(ctx, obj, take, info)
    assert q["mean_deg"] < 5 and q["p95_deg"] < 12 and q["flipped"] == 0
    # the take back as SMPL-X (re-key's known frames, .npz export): the body as it was written
    back = takes.read_take(obj, info.name)
    m0 = R.axis_angle_to_matrix(take.poses.reshape(-1, 55, 3)[:, :22].astype(np.float64))
    m1 = R.axis_angle_to_matrix(back.poses.reshape(-1, 55, 3)[:, :22].astype(np.float64))
    assert np.abs(m0 - m1).max() < 2e-3
    # Scale Intensity and Simplify make new takes; A/B swaps back
    scaled = rekey.scale_take_intensity(obj, info.name, 1.5, ("upper", "hands"))
    assert takes.playing_take(obj).name == scaled.name != info.name
    # (Euler tolerances are the rotation tolerance / sqrt(3): 3° keeps this short jittery take below its frames)
    result = rekey.simplify_take(obj, info.name, rotation_deg=3.0, location=0.005, expression=0.02)
    simplified = result.info
    assert result.kept < result.total
    assert takes.playing_take(obj).name == simplified.name
    takes.set_playing_take(obj, scaled.name)
    assert takes.swap_with_previous(obj) == simplified.name and takes.playing_take(obj).name == simplified.name


def test_ue5_rig_exports_and_bad_input(ctx, tmp_path):
    import bpy

    from echomask.core.errors import EchoMaskError
    from echomask.echomask_blender.exchange import export
    from echomask.echomask_blender.rigs import bone_mapping, retarget

    obj = rigs.build_ue5_rig(ctx)
    take = _take(30)
    before = _state(obj)
    ue5 = load_bone_map(preset_path("ue5"))
    # bad input: the scene stays as it was
    dup = BoneMap("dup", [BoneRow(r.joint, r.bone) for r in ue5.rows])
    next(r for r in dup.rows if r.joint == "left_wrist").bone = "lowerarm_l"
    missing = BoneMap("missing", [BoneRow(r.joint, r.bone) for r in ue5.rows] + [])
    next(r for r in missing.rows if r.joint == "head").bone = "Head_NotHere"
    for bad, text in ((dup, "lowerarm_l"), (missing, "Head_NotHere"), (BoneMap("none", [BoneRow("pelvis", "xyz")]), "xyz")):
        with pytest.raises(EchoMaskError, match=text):
            bone_mapping.apply_bone_map(ctx, obj, bad, solve.RetargetOptions(), take)
        assert _state(obj) == before
    empty = bpy.data.objects.new("NoBones", bpy.data.armatures.new("NoBones"))
    ctx.scene.collection.objects.link(empty)
    with pytest.raises(EchoMaskError, match="recognised|None of the bone map"):
        bone_mapping.apply_bone_map(ctx, empty, retarget.auto_map(empty), solve.RetargetOptions(), take)
    # a good map: a take that plays, keyed in the rig's own rotation modes, exports
    info, notes = bone_mapping.apply_bone_map(ctx, obj, ue5, solve.RetargetOptions(), take, name="ue", frame_start=1)
    assert obj.pose.bones["clavicle_l"].rotation_mode == "YXZ"
    from echomask.echomask_blender import compat

    paths = {fc.data_path for fc in compat.action_fcurves(bpy.data.actions[info.name])}
    assert 'pose.bones["clavicle_l"].rotation_euler' in paths and 'pose.bones["pelvis"].location' in paths
    assert 'pose.bones["spine_02"].rotation_quaternion' in paths          # the link between mapped bones, at rest
    assert not any("twist" in p or "ik_foot" in p for p in paths)          # helper bones untouched
    q = _quality(ctx, obj, take, info)
    assert q["mean_deg"] < 5 and q["p95_deg"] < 12 and q["flipped"] == 0
    for fmt, fn in (("fbx", lambda p: export.export_fbx(ctx, obj, p, preset="UNREAL")),
                    ("bvh", lambda p: export.export_bvh(ctx, obj, p)), ("npz", lambda p: export.export_npz(ctx, obj, p))):
        out = fn(str(tmp_path / f"take.{fmt}"))
        assert (tmp_path / f"take.{fmt}").stat().st_size > 1000, out
    assert load_take(tmp_path / "take.npz").num_frames == 30


def test_generated_rigify_rig(tmp_path):
    """In a subprocess: a bpy module that generated a Rigify rig hangs on exit, so bench_retarget.py leaves
    with os._exit; it reports the figures as JSON (measured on the rig's DEF- bones, after its constraints)."""
    import json

    take_file, out = tmp_path / "take.npz", tmp_path / "rigify.json"
    save_take(_take(48), take_file)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_retarget.py"), "--rigs", "rigify", "--step", "4",
                           "--take", str(take_file), "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "rigify: skipped" in proc.stdout:
        pytest.skip(proc.stdout.split("rigify: skipped", 1)[1].strip().splitlines()[0])
    (r,) = json.loads(out.read_text())
    assert r["mean_deg"] < 5 and r["p95_deg"] < 12 and r["flipped"] == 0, r
    assert r["constraints_intact"], r


def test_cli_retarget_end_to_end(ctx, tmp_path):
    import bpy

    obj = rigs.build_ue5_rig(ctx)
    rig_file = tmp_path / "ue5_rig.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(rig_file), check_existing=False)
    take_file = tmp_path / "take.npz"
    save_take(_take(20), take_file)
    for out in ("out.fbx", "out.blend"):
        proc = subprocess.run([sys.executable, "-m", "core", "retarget", str(take_file), "--rig", str(rig_file),
                               "--preset", "ue5", "-o", str(tmp_path / out)], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Retargeted 20 frames" in proc.stdout and (tmp_path / out).exists()
    proc = subprocess.run([sys.executable, "-m", "core", "retarget", str(take_file), "--rig", str(rig_file),
                           "--preset", "mixamo", "-o", str(tmp_path / "bad.fbx")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "has no bones" in proc.stderr


def test_bone_mapping_panel_operators(ctx, tmp_path):
    """The list (rows, missing bones, Check), presets loaded and saved as JSON, Apply: one new take."""
    import bpy

    from echomask.echomask_blender.rigs import retarget
    from echomask.echomask_blender.takes import nla as takes

    obj = rigs.build_ue5_rig(ctx)
    ctx.view_layer.objects.active = obj
    settings = obj.echomask_bone_map
    settings.preset = "ue5.json"
    assert bpy.ops.echomask.bone_map_load_preset() == {"FINISHED"}
    rows = {r.joint: r.bone for r in settings.rows}
    assert rows["left_elbow"] == "lowerarm_l" and len(settings.rows) == 55
    assert bpy.ops.echomask.bone_map_check() == {"FINISHED"}
    assert not retarget.is_mapped(obj)                                   # nothing changed before Apply
    saved = tmp_path / "my_rig.json"
    assert bpy.ops.echomask.bone_map_save_preset(filepath=str(saved)) == {"FINISHED"}
    assert load_bone_map(saved).as_dict()["left_elbow"] == "lowerarm_l"
    next(r for r in settings.rows if r.joint == "head").bone = "NoSuchBone"   # shows red; Check and Apply refuse
    with pytest.raises(RuntimeError, match="NoSuchBone"):
        bpy.ops.echomask.bone_map_check()
    with pytest.raises(RuntimeError, match="NoSuchBone"):
        bpy.ops.echomask.bone_map_apply()
    assert not retarget.is_mapped(obj) and obj.animation_data is None
    settings.preset = "__auto__"                                          # matching by name
    assert bpy.ops.echomask.bone_map_load_preset() == {"FINISHED"}
    rows = {r.joint: r.bone for r in settings.rows}
    assert rows["left_knee"] == "calf_l" and rows["spine3"] == "spine_05"
    take_file = tmp_path / "take.npz"
    save_take(_take(15), take_file)
    settings.take_file, settings.source = str(take_file), "FILE"
    assert bpy.ops.echomask.bone_map_apply() == {"FINISHED"}
    assert retarget.is_mapped(obj) and takes.playing_take(obj).name == "take"
    assert [t.name for t in obj.animation_data.nla_tracks] == ["EchoMask: take"]


def test_generate_and_rekey_stage_onto_a_mapped_rig(ctx):
    """What Generate (StagedTake) and Re-key (StagedRekey) write on a mapped rig: only the ticked parts, a
    range spliced into a copy of the source take, the source left as it was."""
    import bpy

    from echomask.echomask_blender import compat
    from echomask.echomask_blender.rigs import bone_mapping
    from echomask.echomask_blender.takes import rekey, nla as takes

    obj = rigs.build_ue5_rig(ctx)
    bone_mapping.apply_bone_map(ctx, obj, load_bone_map(preset_path("ue5")), solve.RetargetOptions())
    staged = takes.StagedTake(obj, _take(30, seed=1), name="gen", frame_start=1, parts=("upper", "hands"))
    info = takes.write_staged(staged)
    paths = {fc.data_path for fc in compat.action_fcurves(bpy.data.actions[info.name])}
    assert 'pose.bones["upperarm_l"].rotation_quaternion' in paths and 'pose.bones["index_01_l"].rotation_quaternion' in paths
    assert 'pose.bones["pelvis"].location' not in paths and 'pose.bones["calf_l"].rotation_quaternion' not in paths
    full = takes.write_new_take(obj, _take(30, seed=2), name="full", frame_start=1)
    before = {(fc.data_path, fc.array_index): [tuple(k.co) for k in fc.keyframe_points]
              for fc in compat.action_fcurves(bpy.data.actions[full.name])}
    new = _take(30, seed=3)
    staged = rekey.StagedRekey(obj, full.name, new, start=10, end=20, parts=("upper",), blend=2, name="rekeyed")
    out = takes.write_staged(staged)
    after = {(fc.data_path, fc.array_index): fc for fc in compat.action_fcurves(bpy.data.actions[out.name])}
    assert set(after) == set(before)
    arm = after[('pose.bones["upperarm_l"].rotation_quaternion', 0)]
    leg = after[('pose.bones["calf_l"].rotation_quaternion', 0)]
    old_arm = dict(before[('pose.bones["upperarm_l"].rotation_quaternion', 0)])
    assert abs(arm.evaluate(15) - old_arm[15.0]) > 1e-4 and abs(arm.evaluate(3) - old_arm[3.0]) < 1e-6
    assert [tuple(k.co) for k in leg.keyframe_points] == before[('pose.bones["calf_l"].rotation_quaternion', 0)]
    assert {(fc.data_path, fc.array_index): [tuple(k.co) for k in fc.keyframe_points]
            for fc in compat.action_fcurves(bpy.data.actions[full.name])} == before     # the source untouched


def test_a_linked_rig_is_refused_by_name(ctx, tmp_path):
    import bpy

    from echomask.core.errors import EchoMaskError
    from echomask.echomask_blender.rigs import bone_mapping

    rigs.build_ue5_rig(ctx, name="LibRig")
    lib = tmp_path / "lib.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(lib), check_existing=False)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    with bpy.data.libraries.load(str(lib), link=True) as (src, dst):
        dst.objects = ["LibRig"]
    obj = dst.objects[0]
    bpy.context.scene.collection.objects.link(obj)
    with pytest.raises(EchoMaskError, match="LibRig.*linked.*library override"):
        bone_mapping.apply_bone_map(bpy.context, obj, load_bone_map(preset_path("ue5")), solve.RetargetOptions(), _take(5))
