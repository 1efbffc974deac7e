"""Phone-accurate mouth (core.face.lipsync), the shipped fitted coefficients, and lip-sync measurements."""
import json

import numpy as np
import pytest

from echomask.core.face import lipsync, measure
from echomask.core.face.fitted import DEFAULT_PATH, FaceFit, default_fit
from echomask.core.face.phone_classes import CLASS_INDEX, PHONE_TO_CLASS, PHONE_TO_SHAPE
from echomask.core.face.signals import EXPR, JAW, face_vector
from echomask.core.motion.take import Take

from conftest import shared_path

FPS = 30.0
# "ah - b - ah" with pauses: the mouth must open, close on the b, open again, rest.
B_PHONES = [(0.0, 0.3, "SIL"), (0.3, 0.7, "AA"), (0.7, 0.8, "B"), (0.8, 1.2, "AA"), (1.2, 1.6, "SIL")]


def model_like_take(n=48, seed=0, open_mouth=True) -> Take:
    """A face that moves everywhere (like a model's output) and keeps the mouth open throughout."""
    fit = default_fit()
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / FPS
    face = fit.neutral + 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 3, (1, 103)) * t + rng.uniform(0, 6, (1, 103)))
    face[:, JAW] = fit.neutral[JAW] + 0.002 * np.sin(3 * t)
    if open_mouth:  # hold the open-vowel face the whole time (constant: its slow part, so add the delta)
        face = face - 2.0 * fit.closure_direction
    poses = rng.normal(scale=0.2, size=(n, 165)).astype(np.float32)
    poses[:, 66:69] = face[:, JAW]
    return Take(poses=poses, trans=rng.normal(size=(n, 3)).astype(np.float32),
                expressions=face[:, EXPR].astype(np.float32), fps=FPS)


def b_frames(n):
    return lipsync.bilabial_frames(B_PHONES, n, FPS, default_fit().lag_s)


def test_shipped_fit_loads_and_is_well_formed():
    fit = FaceFit.load(DEFAULT_PATH)
    k = fit.mouth_basis.shape[1]
    assert 1 <= k <= 6
    np.testing.assert_allclose(fit.mouth_basis.T @ fit.mouth_basis, np.eye(k), atol=1e-5)
    assert abs(np.linalg.norm(fit.jaw_axis) - 1) < 1e-5 and abs(fit.jaw_axis[0]) > 0.9  # opens about x
    assert fit.class_deltas.shape == (len(fit.class_names), 103)
    # the phone classes order as articulation says: bilabial most closed, open vowels most open
    coords = fit.mouth_coords(fit.class_deltas) @ fit.aperture_weights + fit.aperture_offset
    bil, opn = coords[CLASS_INDEX["bilabial"]], coords[CLASS_INDEX["open_vowel"]]
    assert bil < fit.closed_below < opn
    assert coords[CLASS_INDEX["close_vowel"]] < opn
    assert fit.sealed_level <= fit.closed_below
    assert "jawOpen" in fit.arkit_names and fit.report["takes"] == ["2_scott_0_1_1", "2_scott_0_2_2"]


def test_strength_zero_is_a_noop_and_keeps_everything_else():
    take = model_like_take()
    out = lipsync.apply_phone_mouth(take, B_PHONES, strength=0.0)
    np.testing.assert_array_equal(out.poses, take.poses)
    np.testing.assert_array_equal(out.expressions, take.expressions)
    out = lipsync.apply_phone_mouth(take, B_PHONES, strength=1.0)
    body = np.ones(165, bool)
    body[66:69] = False
    np.testing.assert_array_equal(out.poses[:, body], take.poses[:, body])  # only the jaw may change
    np.testing.assert_array_equal(out.trans, take.trans)


def test_only_the_mouth_subspace_changes():
    fit = default_fit()
    take = model_like_take(seed=3)
    out = lipsync.apply_phone_mouth(take, B_PHONES, strength=1.0)
    change = face_vector(out) - face_vector(take)
    assert np.abs(change).max() > 0.05                                    # it did something
    basis = fit.mouth_basis
    outside = change[:, EXPR] - (change[:, EXPR] @ basis) @ basis.T
    assert np.abs(outside).max() < 1e-4                                   # non-mouth expression dims kept
    jaw_off_axis = change[:, JAW] - np.outer(change[:, JAW] @ fit.jaw_axis, fit.jaw_axis)
    assert np.abs(jaw_off_axis).max() < 1e-6


@pytest.mark.parametrize("strength", [1.0])
def test_lips_close_on_a_b_segment_and_open_on_the_vowels(strength):
    fit = default_fit()
    take = model_like_take(n=48)
    before = fit.aperture(face_vector(take), FPS)
    out = lipsync.apply_phone_mouth(take, B_PHONES, strength=strength)
    ap = fit.aperture(face_vector(out), FPS)
    on_b = b_frames(48)
    assert on_b.sum() >= 2
    assert (before[on_b] > fit.closed_below).all()                        # the model kept it open
    assert (ap[on_b] <= fit.sealed_level + 0.05).all()                    # sealed on the b
    vowels = np.zeros(48, bool)
    vowels[12:19] = vowels[27:34] = True                                  # well inside both AA spans
    assert (ap[vowels] > fit.closed_below).all()
    scores = measure.closure_scores(ap, B_PHONES, FPS, fit.closed_below)
    assert scores.recall == 1.0 and scores.bilabials == 1


def test_phones_only_face_closes_on_b():
    fit = default_fit()
    face = lipsync.phones_only_face(B_PHONES, 48, FPS)
    ap = fit.aperture(face, FPS)
    assert (ap[b_frames(48)] < fit.closed_below).all()
    assert ap[14] > fit.closed_below


def test_bad_strength_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        lipsync.apply_phone_mouth(model_like_take(), B_PHONES, strength=1.5)


def test_phone_tables_cover_every_recogniser_phone_once():
    assert (PHONE_TO_CLASS.sum(axis=1) == 1).all() and (PHONE_TO_SHAPE.sum(axis=1) == 1).all()


def test_measures_on_synthetic_signals():
    n = 60
    aperture = np.ones(n)
    aperture[20:24] = -0.2                       # one closure at 0.67-0.8 s
    aperture[40:43] = -0.2                       # one closure nowhere near a bilabial
    phones = [(0.0, 0.5, "SIL"), (0.5, 0.66, "AA"), (0.66, 0.8, "M"), (0.8, 1.2, "AA"), (1.2, 1.45, "T"),
              (1.45, 2.0, "IY")]
    s = measure.closure_scores(aperture, phones, FPS, closed_below=0.1)
    assert s.bilabials == 1 and s.recall == 1.0
    assert s.events_in_speech == 2 and s.precision == 0.5
    # a mouth that opens linearly around 0.8 s: the fastest rise sits at the vowel onset
    ramp = np.clip((np.arange(n) / FPS - 0.75) / 0.1, 0, 1)
    t = measure.opening_times(ramp, FPS, np.array([0.8]))
    assert abs(t[0] - 0.8) < 0.02
    assert list(measure.opening_onsets(phones)) == [0.5, 0.8]    # vowels after a pause or a bilabial
    timing = measure.timing_scores(ramp, FPS, phones)
    assert timing.onsets == 1 and timing.median_abs_ms < 20      # no rise near 0.5 s: that onset is skipped


def test_fit_is_reproducible_from_the_shared_data():
    shared_path("beat2_samples", "textgrid", "2_scott_0_1_1.TextGrid")
    from echomask.core.face.fit import DEFAULT_TAKES, FitConfig, beat2_take, fit_face

    fit = fit_face([beat2_take(name) for name in DEFAULT_TAKES], FitConfig())   # no ARKit: that part needs ~10 s
    shipped = default_fit()
    assert (fit.lag_s, fit.sigma_s, fit.closed_below) == (shipped.lag_s, shipped.sigma_s, shipped.closed_below)
    np.testing.assert_allclose(fit.class_deltas, shipped.class_deltas, atol=1e-6)
    np.testing.assert_allclose(fit.mouth_basis, shipped.mouth_basis, atol=1e-6)
    np.testing.assert_allclose(fit.aperture_weights, shipped.aperture_weights, rtol=1e-5, atol=1e-6)


def test_shipped_fit_file_holds_numbers_only():
    with open(DEFAULT_PATH, encoding="utf-8") as handle:
        data = json.load(handle)
    assert data["format"] == "echomask-face-fit"
    assert "poses" not in data and "expressions" not in data
    assert len(json.dumps(data)) < 200_000


def test_lipsync_command_writes_a_take_with_closed_lips(tmp_path, capsys):
    from echomask.core.jobs.cli import main
    from echomask.core.motion.take import load_take, save_take

    save_take(model_like_take(n=48), tmp_path / "take.npz")
    rows = "".join(f'        intervals [{i + 1}]:\n            xmin = {a}\n            xmax = {b}\n            text = "{p}"\n'
                   for i, (a, b, p) in enumerate(B_PHONES))
    (tmp_path / "take.TextGrid").write_text(
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 1.6\ntiers? <exists>\nsize = 1\n'
        'item []:\n    item [1]:\n        class = "IntervalTier"\n        name = "phones"\n        xmin = 0\n'
        f'        xmax = 1.6\n        intervals: size = {len(B_PHONES)}\n' + rows)
    out = tmp_path / "out" / "lipsync.npz"
    assert main(["lipsync", str(tmp_path / "take.npz"), "--textgrid", str(tmp_path / "take.TextGrid"),
                 "--strength", "1", "-o", str(out)]) == 0
    ap = default_fit().aperture(face_vector(load_take(out)), FPS)
    assert (ap[b_frames(48)] < default_fit().closed_below).all()
    assert main(["lipsync", str(tmp_path / "take.npz"), "-o", str(out)]) == 2          # no phones given
    assert main(["lipsync", str(tmp_path / "take.npz"), "--textgrid", str(tmp_path / "take.TextGrid"),
                 "--strength", "2", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--textgrid" in err and "between 0 (unchanged) and 1" in err
