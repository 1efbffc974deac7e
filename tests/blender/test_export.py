"""One-click export of the playing take: FBX (Unity, Unreal), BVH and BEAT2 .npz, checked by reading back."""
import re
import struct

import numpy as np
import pytest

from blender_helpers import ctx, fk_blender, registered, synthetic_take, world_heads  # noqa: F401
from conftest import requires_bpy
from echomask.core.motion import skeleton as S
from studio_helpers import data_snapshot, make_rig, settings_for

pytestmark = requires_bpy


def _setup(ctx, n=24, fps=30):
    from echomask.echomask_blender.takes import nla as takes

    ctx.scene.render.fps = fps
    rig = make_rig(ctx, with_face=False)
    take = synthetic_take(n=n, fps=fps, scale=0.4)
    takes.write_new_take(rig, synthetic_take(n=n, seed=5, fps=fps), name="older", frame_start=1)
    takes.write_new_take(rig, take, name="playing", frame_start=1)
    settings_for(ctx, rig)
    return rig, take


def _fbx_unit_scale(path) -> float:
    data = open(path, "rb").read()
    i = data.index(b"UnitScaleFactor")
    j = data.index(b"D", i + len(b"UnitScaleFactor") + 20)   # the property's double value record
    return struct.unpack("<d", data[j + 1:j + 9])[0]


def _imported_armature(before):
    import bpy

    return next(o for o in bpy.data.objects if o.name not in before and o.type == "ARMATURE")


@pytest.mark.parametrize("preset, unit_scale", [("UNITY", 100.0), ("UNREAL", 1.0)])
def test_fbx_presets_round_trip_the_playing_take(ctx, tmp_path, preset, unit_scale):
    import bpy

    from echomask.echomask_blender.exchange import export

    rig, take = _setup(ctx)
    snap = data_snapshot(ctx.scene)
    path = export.export_fbx(ctx, rig, str(tmp_path / f"take_{preset}"), preset)
    assert path.endswith(".fbx")
    assert data_snapshot(ctx.scene) == snap                     # export leaves the scene as it was
    assert _fbx_unit_scale(path) == pytest.approx(unit_scale)   # metres (Unity) / centimetres (Unreal)
    before = set(bpy.data.objects.keys())
    bpy.ops.import_scene.fbx(filepath=path)                    # the importer's default settings
    imported = _imported_armature(before)
    assert sorted(b.name for b in imported.data.bones) == sorted(S.JOINT_NAMES)   # no leaf bones
    action = imported.animation_data.action
    assert tuple(round(f) for f in action.frame_range) == (1, 24)   # only the playing take's frames
    pos, _ = fk_blender(take)
    for frame in (1, 12, 24):
        ctx.scene.frame_set(frame)
        np.testing.assert_allclose(world_heads(imported), pos[frame - 1], atol=2e-4)


def test_fbx_starts_on_the_speech_and_is_named_after_the_take(ctx, tmp_path):
    """A take that starts at frame 11 (where its strip's sound starts): the FBX animation is the take's,
    from time 0, so Blender's importer at its DEFAULT settings puts take frame 0 on frame 1."""
    import bpy

    from echomask.echomask_blender.exchange import export
    from echomask.echomask_blender.takes import nla as takes

    rig = make_rig(ctx, with_face=False)
    take = synthetic_take(n=30, scale=0.4)
    takes.write_new_take(rig, synthetic_take(n=30, seed=5), name="older", frame_start=1)
    takes.write_new_take(rig, take, name="line_04 · seed 7", frame_start=11)
    settings_for(ctx, rig)
    snap = data_snapshot(ctx.scene)
    path = export.export_fbx(ctx, rig, str(tmp_path / "line_04"), "UNITY")
    assert data_snapshot(ctx.scene) == snap
    assert [(t.name, t.mute) for t in rig.animation_data.nla_tracks] == [
        ("EchoMask: older", True), ("EchoMask: line_04 · seed 7", False)]   # the NLA as it was
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.import_scene.fbx(filepath=path) == {"FINISHED"}
    imported = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    action = imported.animation_data.action
    assert action.name == f"{imported.name}|line_04 · seed 7"          # not "Scene"
    assert tuple(round(f) for f in action.frame_range) == (1, 30)
    pos, _ = fk_blender(take)
    for k in (0, 14, 29):
        bpy.context.scene.frame_set(1 + k)
        np.testing.assert_allclose(world_heads(imported), pos[k], atol=2e-4)


def test_bvh_has_every_joint_and_frame_and_reimports_to_the_same_motion(ctx, tmp_path):
    import bpy

    from echomask.echomask_blender.exchange import export

    rig, take = _setup(ctx)
    snap = data_snapshot(ctx.scene)
    path = export.export_bvh(ctx, rig, str(tmp_path / "take.bvh"))
    assert data_snapshot(ctx.scene) == snap
    text = open(path).read()
    joints = re.findall(r"(?:ROOT|JOINT) (\S+)", text)
    assert sorted(joints) == sorted(S.JOINT_NAMES)
    assert re.search(r"Frames: 24\b", text)
    channels = sum(int(c) for c in re.findall(r"CHANNELS (\d+)", text))
    motion = text.split("Frame Time:")[1].strip().splitlines()[1:]
    assert len(motion) == 24 and all(len(line.split()) == channels for line in motion)
    before = set(bpy.data.objects.keys())
    offsets = {name: np.array(xyz, float) for name, *xyz in re.findall(
        r"(?:ROOT|JOINT) (\S+)\s*\{\s*OFFSET (\S+) (\S+) (\S+)", text)}
    shin = offsets["left_ankle"]                       # knee -> ankle at rest: straight down, in Y-up axes
    assert shin[1] < -0.3 and abs(shin[2]) < 0.05
    bpy.ops.import_anim.bvh(filepath=path)                          # Blender's importer at its defaults (Y up)
    imported = _imported_armature(before)
    pos, _ = fk_blender(take)
    for frame in (1, 13, 24):
        ctx.scene.frame_set(frame)
        heads = np.array([imported.matrix_world @ imported.pose.bones[n].head for n in S.JOINT_NAMES])
        np.testing.assert_allclose(heads, pos[frame - 1], atol=1e-3)


@pytest.mark.parametrize("scene_fps", [30, 24])
def test_npz_is_beat2_at_30_fps_and_matches_the_take(ctx, tmp_path, scene_fps):
    from echomask.core.motion.take import load_take, resample_take
    from echomask.echomask_blender.exchange import export

    rig, take = _setup(ctx, n=48, fps=scene_fps)
    path = export.export_npz(ctx, rig, str(tmp_path / "take"))
    out = load_take(path)
    assert out.fps == 30
    data = np.load(path)
    assert {"poses", "trans", "expressions", "betas", "mocap_frame_rate", "gender", "model"} <= set(data.files)
    want = take if scene_fps == 30 else resample_take(take, 30.0)
    assert out.num_frames == want.num_frames
    q0, q1 = out.quaternions(), want.quaternions()
    assert np.abs(np.abs(np.sum(q0 * q1, -1)) - 1).max() < 1e-5
    np.testing.assert_allclose(out.trans, want.trans, atol=1e-5)


def test_export_operator_and_its_refusals(ctx, tmp_path):
    import bpy

    rig = make_rig(ctx, with_face=False)
    settings_for(ctx, rig)
    assert not bpy.ops.echomask.export.poll()            # no take yet
    _setup(ctx)
    assert bpy.ops.echomask.export(format="NPZ", filepath=str(tmp_path / "a.npz")) == {"FINISHED"}
    assert (tmp_path / "a.npz").exists()
    with pytest.raises(RuntimeError, match="folder .* does not exist"):
        bpy.ops.echomask.export(format="BVH", filepath=str(tmp_path / "missing" / "a.bvh"))
