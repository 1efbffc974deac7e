"""FBX export of a take and its re-import: bone names, frame range, sampled joint motion and face keys."""
import numpy as np
import pytest

from echomask.core.motion import skeleton as S
from echomask.core.errors import EchoMaskError

from blender_helpers import (ctx, evaluated_vertices, fk_blender, lbs_blender, make_synthetic_smplx_model,  # noqa: F401
                             registered, synthetic_take, world_heads, world_rotation_deltas, write_take)
from conftest import requires_bpy

pytestmark = requires_bpy


def _reimport(path):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    # the importer at its defaults (as an animator imports): the take's first frame lands on frame 1
    assert bpy.ops.import_scene.fbx(filepath=str(path)) == {"FINISHED"}
    armatures = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    assert len(armatures) == 1
    return bpy.context, armatures[0], meshes


def test_fbx_round_trip_keeps_bones_motion_and_face(ctx, tmp_path):
    from echomask.echomask_blender.exchange import scene_io

    take = synthetic_take(n=36, seed=11)
    model = make_synthetic_smplx_model(tmp_path / "SMPLX_TEST.npz")
    result = scene_io.import_take(ctx, write_take(tmp_path / "t.npz", take),
                                  scene_io.ImportOptions(fps_mode="TAKE", smplx_model_path=model))
    out = scene_io.export_take_fbx(ctx, ctx.scene.objects[result.armature], str(tmp_path / "take.fbx"))

    ctx, armature, meshes = _reimport(out)
    names = sorted(b.name for b in armature.data.bones)
    assert names == sorted(S.JOINT_NAMES), "exactly the 55 SMPL-X bones (no leaf bones)"
    action = armature.animation_data.action
    assert tuple(action.frame_range) == (1.0, 36.0)
    assert action.name == f"{armature.name}|t"         # the take's (the file's) name, not the scene's
    assert ctx.scene.render.fps == 30
    pos, glob = fk_blender(take)
    for k in (0, 17, 35):
        ctx.scene.frame_set(1 + k)
        np.testing.assert_allclose(world_heads(armature), pos[k], atol=1e-4)
        np.testing.assert_allclose(world_rotation_deltas(armature), glob[k], atol=1e-4)
    (mesh,) = meshes
    blocks = mesh.data.shape_keys.key_blocks
    assert [b.name for b in blocks][1:] == [f"Exp{i:03d}" for i in range(100)]
    for k in (3, 30):
        ctx.scene.frame_set(1 + k)
        np.testing.assert_allclose([blocks[f"Exp{i:03d}"].value for i in range(100)], take.expressions[k], atol=1e-4)
        np.testing.assert_allclose(evaluated_vertices(mesh), lbs_blender(model, take, k), atol=1e-4)


def test_fbx_holds_only_the_active_take(ctx, tmp_path):
    from echomask.echomask_blender.exchange import scene_io

    first = scene_io.import_take(ctx, write_take(tmp_path / "long.npz", synthetic_take(n=50, seed=1)),
                                 scene_io.ImportOptions(fps_mode="TAKE"))
    scene_io.import_take(ctx, write_take(tmp_path / "short.npz", synthetic_take(n=20, seed=2)),
                         scene_io.ImportOptions(fps_mode="TAKE", armature_name=first.armature))
    ctx.scene.frame_end = 80  # export bakes the active take's range, not the scene's
    out = scene_io.export_take_fbx(ctx, ctx.scene.objects[first.armature], str(tmp_path / "short.fbx"))
    assert (ctx.scene.frame_start, ctx.scene.frame_end) == (1, 80)  # restored after export
    import bpy

    ctx, armature, _ = _reimport(out)
    armature_actions = [a for a in bpy.data.actions if a.name.startswith(armature.name)]
    assert len(armature_actions) == 1, [a.name for a in bpy.data.actions]
    assert tuple(armature.animation_data.action.frame_range) == (1.0, 20.0)
    pos, _ = fk_blender(synthetic_take(n=20, seed=2))
    ctx.scene.frame_set(10)
    np.testing.assert_allclose(world_heads(armature), pos[9], atol=1e-4)


def test_fbx_export_needs_a_take_and_a_folder(ctx, tmp_path):
    from echomask.echomask_blender.exchange import scene_io
    from echomask.echomask_blender.rigs import rig

    armature = rig.create_smplx_armature(ctx)
    with pytest.raises(EchoMaskError, match="no active take"):
        scene_io.export_take_fbx(ctx, armature, str(tmp_path / "x.fbx"))
    scene_io.import_take(ctx, write_take(tmp_path / "t.npz", synthetic_take(n=5)),
                         scene_io.ImportOptions(armature_name=armature.name))
    with pytest.raises(EchoMaskError, match="does not exist"):
        scene_io.export_take_fbx(ctx, armature, str(tmp_path / "no" / "such" / "x.fbx"))
