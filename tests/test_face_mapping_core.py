"""Face mapping without Blender: formulas, channels, presets, shape-key name matching, clear messages."""
import os

import numpy as np
import pytest

from echomask.core.face import mapping as M
from echomask.core.face.fitted import default_fit
from echomask.core.face.presets import ARKIT_52

from conftest import ROOT

PRESETS = ROOT / "echomask_blender" / "presets"
FPS = 30.0
B_PHONES = [(0.0, 0.3, "SIL"), (0.3, 0.7, "AA"), (0.7, 0.8, "B"), (0.8, 1.2, "AA"), (1.2, 1.6, "SIL")]


def random_face(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return default_fit().neutral + 0.2 * rng.normal(size=(n, 103))


@pytest.mark.parametrize("text, terms, constant", [
    ("arkit.jawOpen", ((1.0, "arkit.jawOpen"),), 0.0),
    ("0.8*viseme.A - 0.1*exp003 + 0.05", ((0.8, "viseme.A"), (-0.1, "exp003")), 0.05),
    ("25*jaw_open-0.05", ((25.0, "jaw_open"),), -0.05),
    ("-exp001*2", ((-2.0, "exp001"),), 0.0),
    ("", (), 0.0),
])
def test_formulas_parse(text, terms, constant):
    formula = M.parse_formula(text)
    assert formula.terms == terms and formula.constant == pytest.approx(constant)
    assert M.parse_formula(str(formula)) == formula   # what the list shows reads back the same


@pytest.mark.parametrize("text", ["exp001 exp002", "3*", "a+*b", "0.5*(exp001)"])
def test_bad_formulas_say_how_to_write_one(text):
    with pytest.raises(M.FaceMappingError, match="formula"):
        M.parse_formula(text)


def test_presets_load_and_use_only_known_channels():
    files = {os.path.basename(p): name for p, name in M.list_presets(PRESETS)}
    assert {"arkit52.json", "rhubarb_mouths.json", "smplx_expressions.json"} <= set(files)
    channels = M.FaceChannels(random_face(), FPS, phones=B_PHONES)
    for filename in files:
        preset = M.load_preset(PRESETS / filename)
        preset.check(channels)                       # every formula parses and every channel exists
        values = preset.evaluate(channels)
        lo, hi = preset.value_range
        assert values and all(v.shape == (48,) and v.min() >= lo and v.max() <= hi for v in values.values())
    arkit = M.load_preset(PRESETS / "arkit52.json")
    assert [t.target for t in arkit.targets] == list(ARKIT_52) and len(ARKIT_52) == 52
    driven = {t.target for t in arkit.active()}
    assert "jawOpen" in driven and driven == set(default_fit().arkit_names)
    rhubarb = M.load_preset(PRESETS / "rhubarb_mouths.json")
    assert [t.target for t in rhubarb.targets] == list("ABCDEFGH") + ["X"]


def test_rhubarb_shapes_follow_the_phones():
    channels = M.FaceChannels(random_face(), FPS, phones=B_PHONES)
    values = M.load_preset(PRESETS / "rhubarb_mouths.json").evaluate(channels)
    # the b at 0.7-0.8 s is shape A; the vowels are D; the pauses X
    assert values["A"][22] > 0.5 and values["A"][22] == max(v[22] for v in values.values())
    assert values["D"][15] > 0.9 and values["X"][3] > 0.9
    assert not channels.notes


def test_visemes_without_phones_fall_back_to_the_face_with_a_note():
    channels = M.FaceChannels(random_face(), FPS, phones=None)
    a = channels.get("viseme.A")
    np.testing.assert_allclose(a, channels.get("shape.A"))
    assert channels.notes and "No phones" in channels.notes[0]


def test_unknown_and_unfitted_channels_are_named():
    channels = M.FaceChannels(random_face(), FPS)
    with pytest.raises(M.FaceMappingError, match="Unknown channel 'mouthOpen'"):
        channels.get("mouthOpen")
    with pytest.raises(M.FaceMappingError, match="only these ARKit shapes.*jawOpen"):
        channels.get("arkit.eyeBlinkLeft")
    bad = M.FaceMapping("bad", [M.FaceTarget("jawOpen", "2*nothing")])
    with pytest.raises(M.FaceMappingError, match="jawOpen: Unknown channel 'nothing'"):
        bad.evaluate(channels)


def test_raw_channels_and_clamping():
    face = random_face()
    channels = M.FaceChannels(face, FPS)
    np.testing.assert_allclose(channels.get("exp007"), face[:, 3 + 7])
    np.testing.assert_allclose(channels.get("jaw_x"), face[:, 0])
    mapping = M.FaceMapping("m", [M.FaceTarget("k", "100*exp000 + 0.5"), M.FaceTarget("off", "exp001", False)])
    values = mapping.evaluate(channels)
    assert set(values) == {"k"} and values["k"].min() >= 0.0 and values["k"].max() <= 1.0


def test_shape_key_names_match_loosely_but_once():
    mapping = M.FaceMapping("m", [M.FaceTarget(n, "aperture") for n in ("jawOpen", "mouthClose", "A", "B", "tongueOut")])
    keys = ["Basis", "JawOpen", "Face.mouthClose", "Mouth_A", "mouth_b", "mouthClose_old"]
    found, missing = M.match_shape_keys(mapping, keys)
    assert found == {"jawOpen": "JawOpen", "mouthClose": "Face.mouthClose", "A": "Mouth_A", "B": "mouth_b"}
    assert missing == ["tongueOut"]
    exact, _ = M.match_shape_keys(M.FaceMapping("m", [M.FaceTarget("A", "aperture")]), ["Mouth_A", "A"])
    assert exact == {"A": "A"}                   # an exact name wins over a prefixed one


def test_no_match_message_lists_what_is_expected():
    mapping = M.load_preset(PRESETS / "arkit52.json")
    msg = M.no_match_message(mapping, "Cube", ["Basis", "Smile", "Frown"])
    assert "'Cube' has none of the shape keys" in msg and "jawOpen" in msg and "Smile, Frown" in msg
    assert "Pick the preset" in msg
    assert "no shape keys at all" in M.no_match_message(mapping, "Cube", [])


def test_preset_round_trip_and_damaged_files(tmp_path):
    mapping = M.FaceMapping("mine", [M.FaceTarget("Smile", "0.5*arkit.jawOpen"), M.FaceTarget("Blink", "", False)],
                            value_range=(-1.0, 2.0))
    M.save_preset(mapping, tmp_path / "mine.json")
    again = M.load_preset(tmp_path / "mine.json")
    assert again == mapping
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(M.FaceMappingError, match="not an EchoMask face-mapping preset"):
        M.load_preset(tmp_path / "bad.json")
    with pytest.raises(M.FaceMappingError, match="not found"):
        M.load_preset(tmp_path / "missing.json")
    assert [name for _, name in M.list_presets(tmp_path)] == ["mine"]   # the damaged one is skipped


def test_face_filters_match_scipy_without_needing_it():
    # The bpy layer imports core.face (Face Mapping) and Blender's Python has no scipy: the filters are
    # numpy-only and must keep scipy.ndimage's results (the fitted lip-sync constants were made with them).
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is the reference here (core environment only)")
    from echomask.core.face import signals as S

    rng = np.random.default_rng(3)
    for n in (1, 2, 37, 200):
        x = rng.normal(size=(n, 5))
        for size in (2, 3, 30, 31, 400):
            np.testing.assert_allclose(S.slow_part(x, size),
                                       ndimage.uniform_filter1d(x, size=size, axis=0, mode="nearest"), atol=1e-12)
        for sigma in (0.5, 1.7, 25.0):
            np.testing.assert_allclose(S.smooth(x, sigma),
                                       ndimage.gaussian_filter1d(x, sigma, axis=0, mode="nearest"), atol=1e-12)
