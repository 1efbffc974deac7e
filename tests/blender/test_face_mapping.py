"""Face mapping on a synthetic character with its own shape keys (bpy 4.2 / 4.5 / 5.0)."""
import numpy as np
import pytest

from echomask.core.face.mapping import FaceChannels, FaceMapping, FaceMappingError, FaceTarget, load_preset
from echomask.core.motion.take import save_take

from blender_helpers import ctx, fcurve_values, registered, synthetic_take  # noqa: F401
from conftest import ROOT, requires_bpy

pytestmark = requires_bpy
PRESETS = ROOT / "echomask_blender" / "presets"
B_PHONES = [(0.0, 0.3, "SIL"), (0.3, 0.7, "AA"), (0.7, 0.8, "B"), (0.8, 1.2, "AA"), (1.2, 1.6, "SIL")]
TEXTGRID = """File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.6
tiers? <exists>
size = 1
item []:
    item [1]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 1.6
        intervals: size = 5
""" + "".join(f"""        intervals [{i + 1}]:
            xmin = {a}
            xmax = {b}
            text = "{'' if p == 'SIL' else p + ('1' if p == 'AA' else '')}"
""" for i, (a, b, p) in enumerate(B_PHONES))


def character(name="Toon", keys=("jawOpen", "mouthClose", "Mouth_A", "Mouth_D", "Smile")):
    """A small mesh with a Basis and the given shape keys (each moves one vertex)."""
    import bpy

    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)], [], [(0, 1, 3, 2)])
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    if keys is not None:
        obj.shape_key_add(name="Basis")
        for i, key in enumerate(keys):
            block = obj.shape_key_add(name=key, from_mix=False)
            block.data[i % 4].co.z = 1.0
    bpy.context.view_layer.objects.active = obj
    return obj


def _fw():
    from echomask.echomask_blender import compat
    from echomask.echomask_blender.rigs import face_mapping

    return compat, face_mapping


def _evaluated_key_values(obj, names, frame):
    import bpy

    bpy.context.scene.frame_set(frame)
    return {n: obj.data.shape_keys.key_blocks[n].value for n in names}


def test_mapping_keys_the_characters_own_shape_keys_in_bulk(ctx):
    compat, fm = _fw()
    obj = character()
    take = synthetic_take(n=48)
    mapping = load_preset(PRESETS / "arkit52.json")
    mapping.targets += load_preset(PRESETS / "rhubarb_mouths.json").targets
    channels = FaceChannels.from_take(take, phones=B_PHONES)
    expected = mapping.evaluate(channels)
    result = fm.write_face_mapping(obj, channels, mapping, frame_start=5)
    driven = {t.target for t in mapping.active()}                          # jawOpen is always fitted
    wanted = {"jawOpen": "jawOpen", "mouthClose": "mouthClose", "A": "Mouth_A", "D": "Mouth_D"}
    assert result.written == {k: v for k, v in wanted.items() if k in driven} and "jawOpen" in driven
    assert "B" in result.missing and (result.frame_start, result.frame_end) == (5, 52)
    key = obj.data.shape_keys
    assert key.animation_data.action.name == result.action
    if compat.HAS_SLOTTED_ACTIONS:
        assert key.animation_data.action_slot is not None
    curves = fcurve_values(compat.action_fcurves(key.animation_data.action, compat.assigned_slot(key)))
    assert len(curves) == len(result.written) and all(len(co) == 48 for co in curves.values())
    for frame in (0, 22, 47):
        got = _evaluated_key_values(obj, ["jawOpen", "Mouth_A"], 5 + frame)
        assert got["jawOpen"] == pytest.approx(expected["jawOpen"][frame], abs=1e-5)
        assert got["Mouth_A"] == pytest.approx(expected["A"][frame], abs=1e-5)
    assert _evaluated_key_values(obj, ["Mouth_A"], 5 + 22)["Mouth_A"] > 0.5   # the b closes the mouth
    assert not any("Smile" in path for path, _ in curves)                  # keys the mapping does not drive


def test_existing_shape_key_action_is_stashed_not_edited(ctx):
    compat, fm = _fw()
    obj = character()
    key = obj.data.shape_keys
    old, bag = compat.new_action_for(key, "hand keyed")
    compat.write_fcurve(bag, 'key_blocks["Smile"].value', 0, np.array([1.0, 10.0]), np.array([0.0, 1.0]))
    before = fcurve_values(compat.action_fcurves(old, compat.assigned_slot(key)))
    mapping = FaceMapping("m", [FaceTarget("jawOpen", "arkit.jawOpen")])
    result = fm.write_face_mapping(obj, FaceChannels.from_take(synthetic_take(n=12)), mapping)
    assert result.stashed == "hand keyed" and key.animation_data.action.name != "hand keyed"
    assert any(s.action and s.action.name == "hand keyed" for t in key.animation_data.nla_tracks for s in t.strips)
    import bpy

    after = fcurve_values(compat.action_fcurves(bpy.data.actions["hand keyed"], key.animation_data.nla_tracks[0].strips[0].action_slot
                                                if compat.HAS_SLOTTED_ACTIONS else None))
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("keys", [None, ("Smile", "Frown")])
def test_character_without_matching_shape_keys_gets_a_clear_message(ctx, keys):
    import bpy

    _, fm = _fw()
    obj = character(keys=keys)
    actions = set(bpy.data.actions.keys())
    mapping = load_preset(PRESETS / "arkit52.json")
    with pytest.raises(FaceMappingError) as err:
        fm.write_face_mapping(obj, FaceChannels.from_take(synthetic_take(n=12)), mapping)
    text = str(err.value)
    assert "'Toon' has none of the shape keys the 'ARKit 52' mapping drives" in text
    assert "jawOpen" in text and "Expected names" in text
    assert ("no shape keys at all" in text) if keys is None else ("Smile, Frown" in text)
    assert set(bpy.data.actions.keys()) == actions                       # nothing written


def test_operators_load_preset_and_apply_from_a_take_file(ctx, tmp_path):
    import bpy

    _, fm = _fw()
    ctx.scene.render.fps, ctx.scene.render.fps_base = 30, 1.0
    obj = character()
    take_path = tmp_path / "take.npz"
    save_take(synthetic_take(n=48), take_path)
    (tmp_path / "take.TextGrid").write_text(TEXTGRID)
    settings = obj.echomask_face_mapping
    assert bpy.ops.echomask.face_mapping_load_preset(filepath=str(PRESETS / "rhubarb_mouths.json")) == {"FINISHED"}
    assert [r.target for r in settings.targets][:3] == ["A", "B", "C"] and settings.mapping_name.startswith("Rhubarb")
    assert bpy.ops.echomask.face_mapping_add(from_shape_keys=True) == {"FINISHED"}   # rows for keys not listed
    assert "jawOpen" in [r.target for r in settings.targets]
    settings.targets[-1].formula = ""                                   # an unmapped row is ignored
    row = next(r for r in settings.targets if r.target == "jawOpen")
    row.formula = "arkit.jawOpen"
    settings.source, settings.take_file, settings.frame_start = "FILE", str(take_path), 1
    settings.phones, settings.phones_file = "TEXTGRID", str(tmp_path / "take.TextGrid")
    assert bpy.ops.echomask.face_mapping_check() == {"FINISHED"}
    assert bpy.ops.echomask.face_mapping_apply() == {"FINISHED"}
    values = _evaluated_key_values(obj, ["Mouth_A", "Mouth_D"], 1 + 22)
    assert values["Mouth_A"] > 0.5 and values["Mouth_D"] < 0.5
    assert _evaluated_key_values(obj, ["Mouth_D"], 1 + 15)["Mouth_D"] > 0.9
    assert obj.data.shape_keys.animation_data.action.frame_range[1] == pytest.approx(48)


def test_take_at_another_frame_rate_is_resampled_to_the_scene(ctx, tmp_path):
    import bpy

    ctx.scene.render.fps, ctx.scene.render.fps_base = 24, 1.0
    obj = character()
    save_take(synthetic_take(n=61), tmp_path / "take.npz")              # 2 s at 30 fps
    settings = obj.echomask_face_mapping
    bpy.ops.echomask.face_mapping_load_preset(filepath=str(PRESETS / "arkit52.json"))
    settings.source, settings.take_file, settings.phones = "FILE", str(tmp_path / "take.npz"), "NONE"
    assert bpy.ops.echomask.face_mapping_apply() == {"FINISHED"}
    assert obj.data.shape_keys.animation_data.action.frame_range[1] == pytest.approx(49)   # 2 s at 24 fps


def test_apply_operator_reports_missing_inputs(ctx):
    import bpy

    obj = character()
    settings = obj.echomask_face_mapping
    bpy.ops.echomask.face_mapping_load_preset(filepath=str(PRESETS / "arkit52.json"))
    settings.source, settings.take_file = "FILE", ""
    with pytest.raises(RuntimeError, match="Choose a take file"):
        bpy.ops.echomask.face_mapping_apply()
    assert obj.data.shape_keys.animation_data is None


def test_apply_from_the_take_playing_on_an_smplx_rig(ctx):
    import bpy

    from echomask.echomask_blender.rigs import rig
    from echomask.echomask_blender.takes import nla as takes

    ctx.scene.render.fps, ctx.scene.render.fps_base = 30, 1.0
    armature = rig.create_smplx_armature(ctx)
    take = synthetic_take(n=30)
    takes.write_new_take(armature, take, name="speech · seed 0", frame_start=11)
    obj = character()
    settings = obj.echomask_face_mapping
    bpy.ops.echomask.face_mapping_load_preset(filepath=str(PRESETS / "arkit52.json"))
    settings.source, settings.rig, settings.phones = "RIG", armature, "NONE"
    assert bpy.ops.echomask.face_mapping_apply() == {"FINISHED"}
    action = obj.data.shape_keys.animation_data.action
    assert tuple(action.frame_range) == pytest.approx((11, 40))
    expected = load_preset(PRESETS / "arkit52.json").evaluate(FaceChannels.from_take(take))["jawOpen"]
    got = _evaluated_key_values(obj, ["jawOpen"], 11 + 17)["jawOpen"]
    assert got == pytest.approx(expected[17], abs=2e-3)   # read back from the rig's keys (float32 curves)


class _CheckingLayout:
    """Stands in for a UILayout: every prop/operator/list the panel draws must exist."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):  # row, column, box, split, separator, label, ... return a layout
        return lambda *args, **kwargs: self

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"no property {name!r} on {data}"
        self.log.append(("prop", name))
        return self

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        assert name in data.bl_rna.properties and search_name in search_data.bl_rna.properties
        self.log.append(("prop_search", name))
        return self

    def operator(self, idname, **kwargs):
        import bpy

        module, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, module), name) and getattr(getattr(bpy.ops, module), name).idname()
        self.log.append(("operator", idname))
        return type("Props", (), {})()

    def template_list(self, listtype, list_id, data, prop, active_data, active_prop, **kwargs):
        import bpy

        assert hasattr(bpy.types, listtype) and prop in data.bl_rna.properties
        assert active_prop in active_data.bl_rna.properties
        self.log.append(("list", listtype))
        return self


def test_panel_and_list_draw_only_what_exists(ctx):
    import bpy

    _, fm = _fw()
    obj = character()
    bpy.ops.echomask.face_mapping_load_preset(filepath=str(PRESETS / "arkit52.json"))
    log = []
    for source in ("RIG", "FILE"):
        obj.echomask_face_mapping.source = source
        panel = type("P", (), {"layout": _CheckingLayout(log)})()
        fm.VIEW3D_PT_echomask_face_mapping.draw(panel, bpy.context)
    settings = obj.echomask_face_mapping
    fm.ECHOMASK_UL_face_targets.draw_item(None, bpy.context, _CheckingLayout(log), settings, settings.targets[24],
                                          0, settings, "active_index")
    kinds = {k for k, _ in log}
    assert {"prop", "prop_search", "operator", "list"} <= kinds
    assert ("operator", "echomask.face_mapping_apply") in log and ("prop", "take_file") in log
    items = fm._preset_items(settings, bpy.context)
    assert {i[0] for i in items} >= {"arkit52.json", "rhubarb_mouths.json", "smplx_expressions.json"}
