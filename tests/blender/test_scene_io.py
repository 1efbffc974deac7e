"""Importing takes into a scene: speech strip and sync, frame rates, the face mesh, operators, bad input."""
import os

import numpy as np
import pytest

from echomask.core.errors import AudioError, RigError, SmplxModelError, TakeFormatError
from echomask.core.motion.take import Take, resample_take

from blender_helpers import (ctx, evaluated_vertices, fcurve_values, fk_blender, lbs_blender, make_synthetic_smplx_model,  # noqa: F401
                             registered, scene_snapshot, synthetic_take, world_heads, write_take)
from studio_helpers import write_wav
from conftest import requires_bpy

pytestmark = requires_bpy


def _modules():
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.exchange import scene_io

    return compat, scene_io


def _wav(path, seconds=2.0, rate=16000):
    return write_wav(path, seconds=seconds, rate=rate)  # stdlib wave: Blender has no soundfile


def _no_audaspace():
    from echomask.echomask_blender import compat

    return not compat.HAS_AUDASPACE


def test_strip_timing_is_read_through_compat_without_deprecated_api(ctx, tmp_path):
    """Blender 5.1+ renamed strip timing (content_start, left/right_handle, duration); 5.3 warns on the old
    names. The add-on reads it through compat, the same numbers on every version, and no warning."""
    import warnings

    from echomask.echomask_blender.run import speech_source

    compat, _ = _modules()
    if not compat.HAS_AUDASPACE:
        pytest.skip("this bpy build (the PyPI 4.2 wheel) has no Audaspace: sound strips cannot exist")
    ctx.scene.render.fps, ctx.scene.render.fps_base = 30, 1.0
    strip = compat.new_sound_strip(ctx.scene, "line.wav", _wav(tmp_path / "line.wav", seconds=2.0), 11)
    # trim 5 frames at the start and 3 at the end (the test sets them the way this version names them)
    if compat.HAS_STRIP_HANDLES:
        strip.left_handle_offset, strip.right_handle_offset = 5, 3
    else:
        strip.frame_offset_start, strip.frame_offset_end = 5, 3
    settings = ctx.scene.echomask
    settings.audio_source, settings.strip, settings.range_mode = "STRIP", strip.name, "SCENE"
    ctx.scene.frame_start, ctx.scene.frame_end = 1, 100
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert compat.strip_content_start(strip) == 11                   # the sound's first sample, untrimmed
        assert compat.strip_span(strip) == (16, 68) and compat.strip_duration(strip) == 52
        assert speech_source.strips_in_range(ctx.scene, 1, 15) == []       # plays from frame 16 on
        assert speech_source.strips_in_range(ctx.scene, 67, 90) == [strip]
        assert speech_source.plan_speech(ctx.scene, settings).frame_start == 11


def test_import_with_speech_places_the_strip_at_the_take_start_and_syncs_to_audio(ctx, tmp_path):
    compat, scene_io = _modules()
    if not compat.HAS_AUDASPACE:
        pytest.skip("this bpy build (the PyPI 4.2 wheel) has no Audaspace: sound strips cannot exist; "
                    "test_speech_without_audaspace_is_a_clear_error covers it")
    take_path = write_take(tmp_path / "take.npz", synthetic_take(n=60))
    ctx.scene.frame_start = 10
    result = scene_io.import_take(ctx, take_path, scene_io.ImportOptions(audio_path=_wav(tmp_path / "s.wav"),
                                                                         fps_mode="TAKE"))
    strips = compat.all_sound_strips(ctx.scene)
    assert [s.name for s in strips] == [result.sound_strip] == ["s.wav"]
    assert compat.strip_content_start(strips[0]) == result.frame_start == 10
    assert compat.strip_duration(strips[0]) == 60  # 2 s at 30 fps
    assert ctx.scene.sync_mode == "AUDIO_SYNC"
    assert (ctx.scene.frame_start, ctx.scene.frame_end) == (10, 69)
    assert ctx.scene.render.fps == 30 and ctx.scene.render.fps_base == 1.0


def test_speech_without_audaspace_is_a_clear_error_and_changes_nothing(ctx, tmp_path):
    compat, scene_io = _modules()
    if compat.HAS_AUDASPACE:
        pytest.skip("this bpy build has Audaspace (4.5/5.0); the 4.2 wheel runs this test")
    take_path = write_take(tmp_path / "take.npz", synthetic_take(n=10))
    before = scene_snapshot(ctx.scene)
    with pytest.raises(AudioError, match="no audio support"):
        scene_io.import_take(ctx, take_path, scene_io.ImportOptions(audio_path=_wav(tmp_path / "s.wav")))
    assert scene_snapshot(ctx.scene) == before


def test_scene_rate_is_kept_and_the_take_resampled_to_it(ctx, tmp_path):
    compat, scene_io = _modules()
    take = synthetic_take(n=61, fps=30.0)
    ctx.scene.render.fps, ctx.scene.render.fps_base = 24, 1.0
    result = scene_io.import_take(ctx, write_take(tmp_path / "t.npz", take), scene_io.ImportOptions())
    resampled = resample_take(Take(poses=take.poses, trans=take.trans, expressions=take.expressions, fps=30.0), 24.0)
    assert result.resampled and result.fps == 24.0 and result.frames == resampled.num_frames == 49
    assert ctx.scene.render.fps == 24
    obj = ctx.scene.objects[result.armature]
    pos, _ = fk_blender(resampled)
    for k in (0, 20, 48):  # 2 s of motion still spans 2 s
        ctx.scene.frame_set(result.frame_start + k)
        np.testing.assert_allclose(world_heads(obj), pos[k], atol=1e-4)


@pytest.mark.parametrize("fps, expected", [(30.0, (30, 1.0)), (29.97, (30, 1.001)), (23.976, (24, 1.001)),
                                           (25.0, (25, 1.0)), (60.0, (60, 1.0))])
def test_take_rate_mode_and_ntsc_rates(ctx, tmp_path, fps, expected):
    _, scene_io = _modules()
    take = synthetic_take(n=12, fps=fps)
    result = scene_io.import_take(ctx, write_take(tmp_path / "t.npz", take), scene_io.ImportOptions(fps_mode="TAKE"))
    assert not result.resampled
    assert (ctx.scene.render.fps, round(ctx.scene.render.fps_base, 6)) == expected
    assert abs(scene_io.scene_fps(ctx.scene) - fps) < 1e-3


def test_model_file_builds_the_skinned_mesh_with_expression_shape_keys(ctx, tmp_path):
    import bpy

    compat, scene_io = _modules()
    model = make_synthetic_smplx_model(tmp_path / "SMPLX_TEST.npz")
    take = synthetic_take(n=30, seed=5)
    result = scene_io.import_take(ctx, write_take(tmp_path / "t.npz", take),
                                  scene_io.ImportOptions(smplx_model_path=model, fps_mode="TAKE"))
    mesh_obj = bpy.data.objects[result.mesh]
    blocks = mesh_obj.data.shape_keys.key_blocks
    assert [b.name for b in blocks] == ["Basis"] + [f"Exp{i:03d}" for i in range(100)]
    assert mesh_obj.parent.name == result.armature and len(mesh_obj.vertex_groups) == 55
    key = mesh_obj.data.shape_keys
    assert key.animation_data.action.name == result.shape_actions[0]
    if compat.HAS_SLOTTED_ACTIONS:
        assert key.animation_data.action_slot.target_id_type == "KEY"
    for k in (0, 13, 29):
        ctx.scene.frame_set(result.frame_start + k)
        values = np.array([blocks[f"Exp{i:03d}"].value for i in range(100)])
        np.testing.assert_allclose(values, take.expressions[k], atol=1e-5)
        # Shape keys + armature skinning == SMPL-X linear blend skinning of the same frame.
        np.testing.assert_allclose(evaluated_vertices(mesh_obj), lbs_blender(model, take, k), atol=1e-4)


def test_reimport_onto_a_rig_with_a_face_keeps_both_old_actions(ctx, tmp_path):
    import bpy

    compat, scene_io = _modules()
    model = make_synthetic_smplx_model(tmp_path / "SMPLX_TEST.npz")
    first = scene_io.import_take(ctx, write_take(tmp_path / "a.npz", synthetic_take(n=20, seed=1)),
                                 scene_io.ImportOptions(smplx_model_path=model, fps_mode="TAKE"))
    key = bpy.data.objects[first.mesh].data.shape_keys
    old_face = fcurve_values(compat.action_fcurves(key.animation_data.action, compat.assigned_slot(key)))
    assert len(old_face) == 100
    second = scene_io.import_take(ctx, write_take(tmp_path / "b.npz", synthetic_take(n=25, seed=2)),
                                  scene_io.ImportOptions(armature_name=first.armature, fps_mode="TAKE"))
    assert second.armature == first.armature and second.mesh == first.mesh
    assert sorted(second.stashed) == sorted([first.action, first.shape_actions[0]])
    assert key.animation_data.action.name == second.shape_actions[0]
    face_tracks = key.animation_data.nla_tracks
    assert len(face_tracks) == 1 and face_tracks[0].mute
    stash = face_tracks[0].strips[0]
    assert stash.action.name == first.shape_actions[0]
    after = fcurve_values(compat.action_fcurves(stash.action, stash.action_slot if compat.HAS_SLOTTED_ACTIONS else None))
    assert after.keys() == old_face.keys()
    assert all(np.array_equal(after[k], old_face[k]) for k in after)


# ------------------------------------------------------------------------------------------- bad input

def _bad_take(tmp_path, kind):
    take = synthetic_take(n=10)
    path = tmp_path / f"{kind}.npz"
    fields = dict(poses=take.poses, trans=take.trans, expressions=take.expressions, betas=take.betas,
                  mocap_frame_rate=np.int32(30))
    if kind == "missing_field":
        del fields["trans"]
    elif kind == "nan":
        fields["poses"] = fields["poses"].copy()
        fields["poses"][4, 7] = np.nan
    elif kind == "wrong_shape":
        fields["poses"] = fields["poses"][:, :150]
    elif kind == "no_frames":
        fields = {k: (v[:0] if getattr(v, "ndim", 0) == 2 else v) for k, v in fields.items()}
    np.savez(path, **fields)
    return str(path)


@pytest.mark.parametrize("kind, error, words", [
    ("missing_field", TakeFormatError, "'trans' is missing"),
    ("nan", TakeFormatError, "NaN"),
    ("wrong_shape", TakeFormatError, "'poses' has shape"),
    ("no_frames", TakeFormatError, "no frames"),
    ("missing_audio", AudioError, "not found"),
    ("corrupt_audio", AudioError, None),
    ("rig_lacks_bones", RigError, "missing"),
    ("bad_model_file", SmplxModelError, "no weights"),
])
def test_bad_input_names_the_problem_and_leaves_the_scene_unchanged(ctx, tmp_path, kind, error, words):
    import bpy

    _, scene_io = _modules()
    # A scene with something in it: an animated rig and a frame range.
    good = write_take(tmp_path / "good.npz", synthetic_take(n=15))
    existing = scene_io.import_take(ctx, good, scene_io.ImportOptions(fps_mode="TAKE"))
    ctx.scene.render.fps = 24  # the next import would resample and set ranges if it got that far
    options = scene_io.ImportOptions()
    take_path = good
    if kind in ("missing_field", "nan", "wrong_shape", "no_frames"):
        take_path = _bad_take(tmp_path, kind)
    elif kind == "missing_audio":
        options.audio_path = str(tmp_path / "nowhere.wav")
    elif kind == "corrupt_audio":
        (tmp_path / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + os.urandom(3000))
        options.audio_path = str(tmp_path / "broken.wav")
        if _no_audaspace():
            words = "no audio support"
    elif kind == "rig_lacks_bones":
        arm = bpy.data.armatures.new("NotSMPLX")
        obj = bpy.data.objects.new("NotSMPLX", arm)
        ctx.scene.collection.objects.link(obj)
        options.armature_name = "NotSMPLX"
    elif kind == "bad_model_file":
        np.savez(tmp_path / "not_a_model.npz", v_template=np.zeros((3, 3)), f=np.zeros((1, 3), np.int32),
                 J_regressor=np.zeros((55, 3)), shapedirs=np.zeros((3, 3, 400)))
        options.smplx_model_path = str(tmp_path / "not_a_model.npz")
    before = scene_snapshot(ctx.scene)
    with pytest.raises(error) as info:
        scene_io.import_take(ctx, take_path, options)
    if words:
        assert words in str(info.value)
    assert len(str(info.value)) > 20
    assert scene_snapshot(ctx.scene) == before
    assert existing.action in bpy.data.actions


# ------------------------------------------------------------------------------------------- operators

def test_import_and_export_operators(ctx, tmp_path):
    import bpy

    take_path = write_take(tmp_path / "op_take.npz", synthetic_take(n=20))
    assert bpy.ops.echomask.import_take(filepath=take_path, use_audio=False, fps_mode="TAKE") == {"FINISHED"}
    rig = ctx.view_layer.objects.active
    assert rig.type == "ARMATURE" and rig.animation_data.action.name == "op_take"
    assert bpy.ops.echomask.export_take_fbx.poll()
    out = tmp_path / "op_take.fbx"
    assert bpy.ops.echomask.export_take_fbx(filepath=str(out)) == {"FINISHED"}
    assert out.stat().st_size > 10_000
    # A second import onto the active rig ("Active Armature") stashes the first take.
    assert bpy.ops.echomask.import_take(filepath=take_path, use_audio=False, target="ACTIVE") == {"FINISHED"}
    assert len(bpy.data.objects) == 1 and rig.animation_data.nla_tracks[0].strips[0].action.name == "op_take"
    assert bpy.ops.echomask.create_rig() == {"FINISHED"}
    assert len([o for o in bpy.data.objects if o.type == "ARMATURE"]) == 2


def test_import_operator_reports_bad_files_and_changes_nothing(ctx, tmp_path):
    import bpy

    bad = _bad_take(tmp_path, "nan")
    before = scene_snapshot(ctx.scene)
    with pytest.raises(RuntimeError, match="NaN"):  # bpy.ops raises an operator's ERROR report
        bpy.ops.echomask.import_take(filepath=bad, use_audio=False)
    assert scene_snapshot(ctx.scene) == before


def test_export_operator_is_disabled_without_a_take(ctx):
    import bpy

    assert not bpy.ops.echomask.export_take_fbx.poll()
    bpy.ops.echomask.create_rig()
    assert not bpy.ops.echomask.export_take_fbx.poll()  # a rig, but no take on it


def test_import_operator_finds_the_speech_next_to_the_take(ctx, tmp_path):
    import bpy

    compat, _ = _modules()
    take_path = write_take(tmp_path / "talk.npz", synthetic_take(n=30))
    _wav(tmp_path / "talk.wav", seconds=1.0)
    assert bpy.ops.echomask.import_take(filepath=take_path, fps_mode="TAKE") == {"FINISHED"}
    strips = compat.all_sound_strips(ctx.scene)
    if compat.HAS_AUDASPACE:
        assert [s.name for s in strips] == ["talk.wav"] and compat.strip_content_start(strips[0]) == ctx.scene.frame_start
    else:  # found by name only: the motion still imports on a Blender without audio
        assert strips == [] and ctx.view_layer.objects.active.animation_data.action.name == "talk"
