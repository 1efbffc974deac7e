"""Metrics on constructed cases: BC, FGD, L1 diversity, face errors, plausibility, the eval command."""
import argparse
import os

import numpy as np
import pytest

from echomask.core.errors import EchoMaskError, WeightsError
from echomask.core.metrics import beat, diversity, face, plausibility
from echomask.core.metrics.frechet import frechet_distance
from echomask.core.metrics.kinematics import take_positions
from echomask.core.motion.skeleton import JOINT_INDEX, REST_JOINTS_YUP
from echomask.core.motion.take import Take, neutral_take, save_take

from conftest import ROOT, requires_torch, shared_path

FPS = 30.0
SR = 16000
ONSETS = np.arange(3.0, 17.0, 1.7)        # seconds; far apart so each onset's nearest beat is its own


def click_track(seconds: float, times: np.ndarray) -> np.ndarray:
    """Silence with a 10 ms noise burst at each time: onsets a detector cannot miss."""
    rng = np.random.default_rng(0)
    audio = np.zeros(int(seconds * SR), np.float32)
    for t in times:
        i = int(t * SR)
        audio[i:i + 160] = rng.uniform(-0.8, 0.8, 160)
    return audio


def positions_with_pauses(n: int, pause_times: np.ndarray) -> np.ndarray:
    """(n, 55, 3): every joint moves along x at 1 m/s, slowing to 0.5 m/s at each pause time, so its
    speed has a sharp local minimum (a motion beat) exactly there."""
    t = (np.arange(n) - 0.5) / FPS   # speed between frames k-1 and k: the central difference at frame k
    speed = 1.0 - 0.5 * np.exp(-(t[:, None] - pause_times[None]) ** 2 / (2 * 0.08 ** 2)).sum(axis=1)
    x = np.cumsum(speed) / FPS       # is symmetric about k, so each pause is a single-frame minimum
    pos = np.zeros((n, 55, 3))
    pos[:, :, 0] = x[:, None]
    return pos


# ------------------------------------------------------------------------------------------------ BC
@pytest.mark.parametrize("protocol", ["emage", "symmetric"])
def test_bc_is_one_on_onsets_and_drops_as_beats_move_away(protocol):
    n = 600
    audio = click_track(n / FPS, ONSETS)
    config = beat.BeatConfig(protocol=protocol)
    ones = np.ones(55)
    detected = beat.audio_onsets(audio[int(60 / FPS * SR):int((n - 60) / FPS * SR)]) + 60 / FPS
    gap = np.abs(detected[:, None] - ONSETS[None])
    assert (gap.min(axis=0) < 0.07).all() and (gap.min(axis=1) < 0.07).all()   # every click (to ~2 hops), nothing else
    scores = []
    for shift in (0.0, 0.2, 0.4, 0.6):
        result = beat.beat_consistency(positions_with_pauses(n, ONSETS + shift), audio, FPS, ones, config)
        scores.append(result.score)
        expected = np.exp(-shift ** 2 / (2 * 0.3 ** 2))     # every onset is `shift` from its beat
        assert result.score == pytest.approx(expected, abs=0.06)
    assert scores[0] > 0.95
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.25


def test_bc_of_a_still_pose_is_zero_and_needs_onsets():
    n = 300
    still = np.zeros((n, 55, 3))
    audio = click_track(n / FPS, np.array([3.0, 5.0, 7.0]))
    assert beat.beat_consistency(still, audio, FPS, np.ones(55)).score == 0.0
    silent = beat.beat_consistency(positions_with_pauses(n, np.array([4.0])), np.zeros(n * 534, np.float32),
                                   FPS, np.ones(55))
    assert np.isnan(silent.score)


def test_bc_pooling_weights_clips_by_scored_frames():
    a = beat.BeatResult(1.0, 100, 220, 5, {})
    b = beat.BeatResult(0.0, 300, 420, 5, {})
    assert beat.pool_beat_consistency([a, b], "symmetric") == pytest.approx(0.25)
    assert beat.pool_beat_consistency([a, b], "emage") == pytest.approx(100 / 640)


def test_bc_on_real_ground_truth_is_in_the_published_range():
    from echomask.core.speech.audio import load_speech
    from echomask.core.motion.take import load_take

    take = load_take(shared_path("beat2_samples", "smplxflame_30", "2_scott_0_1_1.npz"))
    audio = load_speech(shared_path("beat2_samples", "wave16k", "2_scott_0_1_1.wav"))
    mean_speed = np.load(shared_path("beat2_samples", "weights", "mean_vel_smplxflame_30.npy"))
    result = beat.beat_consistency(take_positions(take, False), audio, take.fps, mean_speed)
    # Published BEAT2 BC values (x10) are about 6.9-7.8; real speaker-2 motion must land near them.
    assert 0.55 < result.score < 0.85
    assert result.onsets > 50


# ------------------------------------------------------------------------------------------------ FGD
def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    shifts = [0.5, 1.0, 2.0]
    dists = [frechet_distance(feats, feats + s) for s in shifts]
    for s, d in zip(shifts, dists):
        assert d == pytest.approx(16 * s ** 2, rel=1e-6)   # same covariance: only the mean term remains
    with pytest.raises(ValueError):
        frechet_distance(feats, feats[:, :8])


def smooth_motion_take(n: int, seed: int, offset_deg: float = 0.0) -> Take:
    """Gesture-like motion: slow sinusoids on the body joints; `offset_deg` bends the spine and the
    shoulders further, a shift of the whole distribution."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / FPS
    freq = rng.uniform(0.2, 1.2, size=(1, 165))
    phase = rng.uniform(0, 2 * np.pi, size=(1, 165))
    poses = 0.15 * np.sin(2 * np.pi * freq * t + phase)
    poses[:, :3] = 0.0
    for name in ("spine1", "spine2", "left_shoulder", "right_shoulder"):
        j = JOINT_INDEX[name]
        poses[:, 3 * j] += np.radians(offset_deg)
    return Take(poses=poses.astype(np.float32), trans=np.zeros((n, 3), np.float32),
                expressions=np.zeros((n, 100), np.float32))


@requires_torch
def test_fgd_with_the_committed_evaluator_is_zero_for_identical_sets_and_grows_with_a_shift():
    from echomask.core.metrics.fgd_evaluator import latents, load_evaluator

    weights = ROOT / "weights" / "fgd_evaluator.safetensors"
    if not weights.exists():
        pytest.skip("weights/fgd_evaluator.safetensors is not in this checkout")
    evaluator, meta = load_evaluator(weights)
    assert "NOT the paper's" in meta["note"]
    real = [smooth_motion_take(192, seed) for seed in range(4)]
    ref = latents(evaluator, real)
    assert ref.shape == (4 * 192 // 4, evaluator.config.latent)
    assert frechet_distance(latents(evaluator, real), ref) == pytest.approx(0.0, abs=1e-6)
    dists = [frechet_distance(latents(evaluator, [smooth_motion_take(192, s, off) for s in range(4)]), ref)
             for off in (5.0, 15.0, 30.0)]
    assert 0 < dists[0] < dists[1] < dists[2]


@requires_torch
def test_fgd_evaluator_save_load_round_trip(tmp_path):
    import torch

    from echomask.core.metrics.fgd_evaluator import (FGDEvaluator, FGDEvaluatorConfig, latents, load_evaluator,
                                                     save_evaluator)

    torch.manual_seed(0)
    model = FGDEvaluator(FGDEvaluatorConfig(joint_channels=2, hidden=8, latent=4))
    model.mean.normal_()
    path = tmp_path / "eval.safetensors"
    save_evaluator(model, path, {"training_command": "test"})
    loaded, meta = load_evaluator(path)
    takes = [smooth_motion_take(70, 3)]   # 70 frames: trimmed to 64
    assert np.array_equal(latents(model, takes), latents(loaded, takes))
    assert latents(loaded, takes).shape == (16, 4)
    assert meta["training_command"] == "test"

    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="readable"):
        load_evaluator(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        load_evaluator(tmp_path / "missing.safetensors")


# ------------------------------------------------------------------------------------------------ diversity
def test_l1_diversity_of_a_still_pose_is_zero():
    still = take_positions(neutral_take(90), with_translation=False)
    assert diversity.l1_diversity([still]) == pytest.approx(0.0, abs=1e-12)
    moving = take_positions(smooth_motion_take(90, 0), with_translation=False)
    assert diversity.l1_diversity([moving]) > 0.1
    # pooled over clips = total deviation / total frames, each clip against its own mean
    s1, n1 = diversity.l1_deviation_sum(moving)
    assert diversity.l1_diversity([moving, still]) == pytest.approx(s1 / (n1 + 90))


# ------------------------------------------------------------------------------------------------ plausibility
def standing(n: int, poses: np.ndarray | None = None, x_speed: float = 0.0) -> Take:
    """Neutral stance with the feet on the floor (y = 0); the root moves along x at x_speed m/s."""
    lift = -REST_JOINTS_YUP[[7, 8, 10, 11], 1].min() + 0.02
    trans = np.zeros((n, 3), np.float32)
    trans[:, 1] = lift
    trans[:, 0] = x_speed * np.arange(n) / FPS
    return Take(poses=np.zeros((n, 165), np.float32) if poses is None else poses, trans=trans,
                expressions=np.zeros((n, 100), np.float32))


def test_foot_skating_is_zero_for_planted_feet_and_positive_when_sliding():
    n = 90
    arms = smooth_motion_take(n, 2).poses.copy()
    arms[:, :3 * 12] = 0.0                       # pelvis, legs and lower spine still: the feet stay put
    planted = plausibility.plausibility(standing(n, arms))
    assert planted["foot_skating"] == pytest.approx(0.0, abs=1e-9)
    assert planted["penetration"] == 0.0
    sliding = plausibility.plausibility(standing(n, x_speed=0.5))
    assert sliding["foot_skating"] == pytest.approx(0.5, rel=1e-3)


def test_floor_penetration_jerk_limits_and_speed():
    n = 60
    sunk = standing(n)
    sunk.trans[:, 1] -= 0.07                     # lowest foot joint 5 cm below the floor
    depth, share = plausibility.floor_penetration(take_positions(sunk, True))
    assert depth == pytest.approx(0.05, abs=1e-6) and share == 1.0
    still = plausibility.plausibility(standing(n))
    assert still["jerk"] == pytest.approx(0.0, abs=1e-9) and still["mean_speed"] == 0.0
    assert still["limit_violations"] == 0.0
    bent = standing(n)
    bent.poses[:, 3 * JOINT_INDEX["left_elbow"] + 1] = np.radians(175)
    share, excess = plausibility.joint_limit_violations(bent)
    assert share == pytest.approx(1 / 54) and excess == pytest.approx(15.0, abs=1e-3)
    unplaced = plausibility.plausibility(neutral_take(n))   # trans all zero: no floor metrics
    assert np.isnan(unplaced["foot_skating"]) and np.isnan(unplaced["penetration"])


# ------------------------------------------------------------------------------------------------ face
def tiny_smplx_file(path, num_verts=12, seed=0):
    """A synthetic SMPL-X-layout model file: random template and directions, some vertices on the jaw."""
    rng = np.random.default_rng(seed)
    weights = np.zeros((num_verts, 55))
    weights[:, 15] = 1.0                          # head
    weights[: num_verts // 2, 15] = 0.0
    weights[: num_verts // 2, 22] = 1.0           # jaw
    regressor = np.zeros((55, num_verts))
    regressor[:, :] = 1.0 / num_verts
    np.savez(path, v_template=rng.normal(size=(num_verts, 3)), shapedirs=rng.normal(size=(num_verts, 3, 400)) * 0.01,
             posedirs=rng.normal(size=(num_verts, 3, 486)) * 0.01, weights=weights, J_regressor=regressor)
    return path


def test_face_coefficient_errors():
    a = smooth_motion_take(40, 0)
    a.expressions[:] = np.random.default_rng(0).normal(size=(40, 100))
    assert face.face_coefficient_errors(a, a) == {"expr_mse": 0.0, "expr_lvd": 0.0, "jaw_mse": 0.0}
    b = Take(poses=a.poses.copy(), trans=a.trans, expressions=a.expressions + 0.5)
    errs = face.face_coefficient_errors(b, a)
    assert errs["expr_mse"] == pytest.approx(0.25) and errs["expr_lvd"] == pytest.approx(0.0, abs=1e-6)


def test_face_vertex_errors_with_a_tiny_synthetic_model(tmp_path):
    path = tiny_smplx_file(tmp_path / "tiny_smplx.npz")
    model = face.SmplxFaceModel.load(path)
    data = np.load(path)
    n = 5
    ref = neutral_take(n)
    gen = neutral_take(n)
    gen.expressions[:, 0] = 1.0
    verts_ref = np.concatenate(list(model.face_vertices(ref.betas, ref.expressions, ref.poses[:, 66:69], chunk=2)))
    assert np.allclose(verts_ref, data["v_template"])      # betas 0, no expression, jaw closed: the template
    errs = face.face_vertex_errors(gen, ref, model)
    assert errs["vertex_mse"] == pytest.approx(np.mean(data["shapedirs"][:, :, 300] ** 2))
    assert errs["vertex_lvd"] == pytest.approx(0.0, abs=1e-12)
    assert face.face_vertex_errors(ref, ref, model) == {"vertex_mse": 0.0, "vertex_lvd": 0.0}

    jaw = neutral_take(1)
    jaw.poses[0, 66] = 0.3                          # open the jaw 0.3 rad about x
    v = next(model.face_vertices(jaw.betas, jaw.expressions, jaw.poses[:, 66:69]))[0]
    template = data["v_template"]
    centre = template.mean(axis=0)                   # the regressor averages all vertices
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    feature = (rot - np.eye(3)).reshape(9)
    posed = template + data["posedirs"][:, :, 21 * 9:22 * 9] @ feature   # pose correctives reach every vertex
    assert np.allclose(v[6:], posed[6:])             # head vertices are not rotated
    assert np.allclose(v[:6], (posed[:6] - centre) @ rot.T + centre)     # jaw vertices turn about the jaw joint


def test_face_model_errors_are_clear(tmp_path):
    with pytest.raises(EchoMaskError, match="not found"):
        face.SmplxFaceModel.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "bad.npz", v_template=np.zeros((3, 3)))
    with pytest.raises(EchoMaskError, match="not an SMPL-X model"):
        face.SmplxFaceModel.load(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------------------------ eval command
def eval_args(**kw):
    base = dict(reference=[], generated=[], random_masking=[], system=[], audio=[], model=None,
                random_masking_model=None, seed=0, temperature=0.0, tail=0.0, fgd_evaluator=None, mean_speed=None,
                smplx_model=None, bc_protocol="both", no_baselines=False, out=None, json_out=None)
    base.update(kw)
    return argparse.Namespace(**base)


def write_clip_set(folder, seconds=12.0):
    """Two synthetic clips with click-track speech and motion pausing on the clicks."""
    import soundfile

    os.makedirs(folder, exist_ok=True)
    n = int(seconds * FPS)
    for k, name in enumerate(("clip_a", "clip_b")):
        take = standing(n, smooth_motion_take(n, k).poses)
        take.expressions[:] = np.random.default_rng(k).normal(size=(n, 100)) * 0.3
        save_take(take, os.path.join(folder, name + ".npz"))
        soundfile.write(os.path.join(folder, name + ".wav"), click_track(seconds + 0.5, np.arange(1.0, seconds, 1.1)), SR)


@requires_torch
def test_eval_table_has_every_row_and_says_fgd_is_not_the_papers(tmp_path):
    import torch

    from echomask.core.metrics.evaluate import ROW_MODEL, ROW_OTHER, ROW_RANDOM, ROW_STILL, run_eval
    from echomask.core.metrics.fgd_evaluator import FGDEvaluator, FGDEvaluatorConfig, save_evaluator

    data = tmp_path / "clips"
    write_clip_set(data)
    torch.manual_seed(0)
    weights = tmp_path / "eval.safetensors"
    save_evaluator(FGDEvaluator(FGDEvaluatorConfig(joint_channels=2, hidden=8, latent=4)), weights)
    table, report = run_eval(eval_args(reference=[str(data)], audio=[str(data)], generated=[str(data)],
                                       tail=0.5, fgd_evaluator=str(weights), mean_speed=None))
    assert "NOT the paper's" in table
    for row in (ROW_STILL, ROW_OTHER, ROW_RANDOM, ROW_MODEL):
        assert row in table
    assert report["systems"][ROW_RANDOM] is None and "pending" in table
    model = report["systems"][ROW_MODEL]          # the "model" here is the reference itself
    assert model["fgd"] == pytest.approx(0.0, abs=1e-6) and model["expr_mse"] == 0.0
    assert report["systems"][ROW_STILL]["l1div"] == pytest.approx(0.0, abs=1e-12)
    assert report["systems"][ROW_STILL]["bc"] == 0.0 and report["systems"][ROW_STILL]["bc_symmetric"] == 0.0
    assert 0.0 <= report["systems"][ROW_MODEL]["bc_symmetric"] <= 1.0
    assert report["systems"][ROW_OTHER]["fgd"] > 0     # frames from before the other clip's tail
    assert report["clips"][0]["start"] == 180


def test_eval_rejects_unpaired_takes(tmp_path):
    from echomask.core.metrics.evaluate import run_eval

    data = tmp_path / "clips"
    write_clip_set(data, seconds=3.0)
    stray = tmp_path / "other"
    os.makedirs(stray)
    save_take(neutral_take(90), stray / "unknown_clip.npz")
    with pytest.raises(EchoMaskError, match="no reference clip for unknown_clip"):
        run_eval(eval_args(reference=[str(data)], generated=[str(stray)]))


def test_eval_generates_the_models_takes_from_speech_and_scores_their_tail(tmp_path, monkeypatch):
    """--model: each clip's whole speech goes to core.generation.inference.generate; the take is cut to the tail."""
    import soundfile

    from echomask.core.generation import inference
    from echomask.core.metrics.evaluate import ROW_MODEL, run_eval

    data = tmp_path / "clips"
    write_clip_set(data)
    calls = []

    def fake_generate(audio, seed=0, model=None, temperature=0.0, **_):
        calls.append((os.path.basename(audio), seed, model, temperature))
        seconds = soundfile.info(audio).duration
        take = standing(int(seconds * FPS), smooth_motion_take(int(seconds * FPS), 9).poses)
        return take

    monkeypatch.setattr(inference, "generate", fake_generate)
    table, report = run_eval(eval_args(reference=[str(data)], audio=[str(data)], model="w.safetensors", seed=5,
                                       temperature=0.7, tail=0.5, no_baselines=True))
    assert sorted(calls) == [("clip_a.wav", 5, "w.safetensors", 0.7), ("clip_b.wav", 5, "w.safetensors", 0.7)]
    row = report["systems"][ROW_MODEL]
    assert row["frames"] == 2 * 180 and row["per_clip"]["clip_a"]["frames"] == 180
    assert "generated with w.safetensors, temperature 0.7, seed 5" in table
