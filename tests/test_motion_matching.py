"""Motion matching from speech (the baseline of docs/RESULTS.md): it finds the database's own motion for
the database's own speech, chains segments smoothly, and fills any length."""
import numpy as np
import pytest

from echomask.core.errors import EchoMaskError
from echomask.core.metrics.motion_matching import MatchingConfig, MotionDatabase
from echomask.core.motion.take import Take


def _take(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / 30.0
    poses = (0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0, (1, 165)) * t + rng.uniform(0, 6, (1, 165))))
    trans = np.zeros((n, 3))
    trans[:, 1] = 1.3
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=(0.1 * rng.standard_normal((n, 100))).astype(np.float32))


def _speech(n, seed):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((n, 13)), axis=0).astype(np.float32) / 10


def test_own_speech_finds_own_motion_and_chains_it():
    takes, speech = [_take(300, 0), _take(300, 1)], [_speech(300, 10), _speech(300, 11)]
    db = MotionDatabase(takes, speech, MatchingConfig(segment=40, blend=8, candidate_hop=4))
    query = speech[1][40:232]
    path = db.match(query)
    chosen = [db.candidates[c] for c in path]
    assert all(k == 1 for k, _ in chosen)
    assert [s for _, s in chosen] == [40 + 32 * i for i in range(len(chosen))]  # consecutive: seamless
    out = db.generate(query)
    assert out.num_frames == len(query)
    np.testing.assert_allclose(out.poses[20], takes[1].poses[60], atol=1e-4)


def test_cross_fades_keep_motion_continuous():
    takes, speech = [_take(400, 2)], [_speech(400, 3)]
    db = MotionDatabase(takes, speech)
    out = db.generate(_speech(500, 4))  # unrelated speech: segments from all over the take
    assert out.num_frames == 500 and np.isfinite(out.poses).all()
    step = np.abs(np.diff(out.poses, axis=0)).max()
    assert step < 0.5, step   # no pose jumps at the seams
    assert np.allclose(out.trans[:, [0, 2]], out.trans[0, [0, 2]])  # stays in place


def test_too_little_data_is_a_clear_error():
    with pytest.raises(EchoMaskError, match="at least 40 frames"):
        MotionDatabase([_take(20, 0)], [_speech(20, 0)])
