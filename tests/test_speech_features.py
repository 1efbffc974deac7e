"""Speech features: the interface contract (shapes, T, dtypes, ranges), low-level acoustics, normalisation,
cache, backend registry and bad input. Synthetic audio only; the phone recogniser's own tests are in
test_speech_phones.py."""
import time
import tracemalloc

import numpy as np
import pytest

from echomask.core.errors import AudioError, EchoMaskError
from echomask.core import speech
from echomask.core.speech import builtin, compute_speech_features, feature_dims, num_frames
from echomask.core.speech.chunking import split_points
from echomask.core.speech.lowlevel import LowLevelConfig, LowLevelExtractor
from echomask.core.speech.phones import NUM_PHONES, PHONE_INDEX, phones_to_frames

SR = 16000
needs_recogniser = pytest.mark.skipif(
    __import__("importlib").util.find_spec("pocketsphinx") is None, reason="needs pocketsphinx (core runtime)")


def voice(seconds: float, f0: float = 140.0, seed: int = 0, gap=None) -> np.ndarray:
    """Harmonic 'vowels' alternating with noise 'consonants', optional silent gap (start_s, end_s)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.8 * t))
    harmonic = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / SR) / k for k in range(1, 15))
    vowel = (np.sin(2 * np.pi * 4.0 * t) > -0.4).astype(float)
    audio = 0.08 * harmonic * vowel + 0.02 * rng.standard_normal(len(t)) * (1 - vowel)
    audio += 0.002 * rng.standard_normal(len(t))  # a room's noise floor, as real recordings have
    if gap is not None:
        audio[int(gap[0] * SR):int(gap[1] * SR)] = 0.0
    return audio.astype(np.float32)


def test_feature_dims_match_the_contract():
    assert feature_dims() == (84, 43) == (builtin.LOW_DIM, builtin.HIGH_DIM)
    assert builtin.HIGH_DIM == NUM_PHONES + 1 and builtin.SPEECH_FLAG == NUM_PHONES


@needs_recogniser
@pytest.mark.parametrize("seconds,fps", [(0.3, 30.0), (5.0, 30.0), (1.234567, 30.0), (2.0, 25.0), (0.9, 60.0)])
def test_shapes_dtypes_and_frame_count(seconds, fps):
    audio = voice(seconds)
    feats = compute_speech_features(audio, fps=fps)
    t = int(round(len(audio) * fps / SR))
    assert feats.low.shape == (t, 84) and feats.high.shape == (t, 43)
    assert feats.low.dtype == np.float32 and feats.high.dtype == np.float32 and feats.fps == fps
    assert np.isfinite(feats.low).all() and np.isfinite(feats.high).all()
    assert np.allclose(feats.high[:, :NUM_PHONES].sum(axis=1), 1.0, atol=1e-5)  # phone posteriors
    assert set(np.unique(feats.high[:, builtin.SPEECH_FLAG])) <= {0.0, 1.0}
    assert np.abs(feats.low[:, builtin.MEL]).max() <= 4.0 and feats.low[:, builtin.VOICING].max() <= 1.0
    for start, end, label in feats.phones:
        assert 0.0 <= start < end <= seconds + 1e-6 and label in PHONE_INDEX


@needs_recogniser
def test_empty_and_tiny_audio_give_zero_or_one_frame():
    assert compute_speech_features(np.zeros(0, np.float32)).low.shape == (0, 84)
    assert compute_speech_features(np.zeros(200, np.float32)).high.shape == (0, 43)
    assert compute_speech_features(voice(0.04)).low.shape == (1, 84)


@needs_recogniser
def test_silence_is_finite_and_all_pause():
    feats = compute_speech_features(np.zeros(2 * SR, np.float32))
    assert np.isfinite(feats.low).all() and np.isfinite(feats.high).all()
    assert feats.high[:, builtin.SPEECH_FLAG].max() == 0.0
    assert feats.low[:, builtin.VOICING].max() == 0.0
    assert feats.low[:, builtin.MEL].mean() < -3.0  # reads as very quiet, not as average speech
    # speech then silence: the silent half is pause, the voiced half mostly speech-level
    mixed = np.concatenate([voice(2.0), np.zeros(2 * SR, np.float32)])
    feats = compute_speech_features(mixed)
    assert feats.high[60:, builtin.SPEECH_FLAG].max() == 0.0
    assert feats.low[60:, builtin.RMS].max() < feats.low[:60, builtin.RMS].mean() - 2.0


@needs_recogniser
def test_deterministic():
    audio = voice(3.0, seed=3)
    a, b = compute_speech_features(audio), compute_speech_features(audio.copy())
    assert np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high) and a.phones == b.phones


def test_low_level_is_gain_invariant_and_block_invariant():
    audio = voice(4.0)
    extractor = LowLevelExtractor()
    n = num_frames(len(audio), 30.0)
    loud = builtin.normalise_low(extractor.compute(audio, n, 30.0), 30.0)
    quiet = builtin.normalise_low(extractor.compute(audio * 0.1, n, 30.0), 30.0)
    # loudness is normalised away (the first frames' onset sees the zero padding before the clip: skipped)
    assert np.abs(loud[2:] - quiet[2:]).max() < 1e-2
    blocky = builtin.normalise_low(LowLevelExtractor(LowLevelConfig(block_s=0.77)).compute(audio, n, 30.0), 30.0)
    assert np.abs(loud - blocky).max() < 1e-4  # blocks change memory use, not the result


@pytest.mark.parametrize("hz", [70.0, 150.0, 320.0])
def test_pitch_of_a_harmonic_tone(hz):
    t = np.arange(SR) / SR
    tone = (0.2 * np.sin(2 * np.pi * hz * t) + 0.1 * np.sin(2 * np.pi * 2 * hz * t)).astype(np.float32)
    raw = LowLevelExtractor().compute(tone, 30, 30.0)
    assert np.allclose(2 ** raw["log2_f0"][3:27], hz, rtol=0.01)
    assert raw["voicing"][3:27].min() > 0.9
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    assert LowLevelExtractor().compute(noise, 30, 30.0)["voicing"].mean() < 0.2


def test_pitch_is_relative_to_the_speaker():
    extractor = LowLevelExtractor()
    low = [builtin.normalise_low(extractor.compute(voice(3.0, f0=f0), 90, 30.0), 30.0) for f0 in (110.0, 220.0)]
    voiced = (low[0][:, builtin.VOICING] > 0.8) & (low[1][:, builtin.VOICING] > 0.8)
    # an octave apart, the same contour: nearly the same normalised pitch
    assert np.abs(low[0][voiced, builtin.LOG_F0] - low[1][voiced, builtin.LOG_F0]).mean() < 0.15


def test_low_level_memory_is_flat_in_length():
    extractor = LowLevelExtractor()
    peaks = []
    for seconds in (10.0, 60.0):
        audio = voice(seconds)
        n = num_frames(len(audio), 30.0)
        tracemalloc.start()
        extractor.compute(audio, n, 30.0)
        peaks.append(tracemalloc.get_traced_memory()[1] - n * 84 * 4)
        tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.3 + 2**20


def test_split_points_cover_the_audio_and_cut_in_pauses():
    audio = voice(70.0, gap=(27.0, 27.6))
    pieces = split_points(len(audio), audio, target_s=30.0, search_s=5.0)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert 27.0 * SR <= pieces[0][1] <= 27.6 * SR  # the quiet gap, not the 30 s mark
    assert split_points(SR, voice(1.0)) == [(0, SR)]


def test_phones_to_frames_shares():
    frames = phones_to_frames([(0.0, 0.05, "B"), (0.05, 0.1, "AA")], 4, 30.0)
    assert frames.shape == (4, NUM_PHONES)
    assert np.isclose(frames[0, PHONE_INDEX["B"]], 1.0)
    assert np.isclose(frames[1, PHONE_INDEX["B"]], 0.5) and np.isclose(frames[1, PHONE_INDEX["AA"]], 0.5)
    assert np.isclose(frames[3, PHONE_INDEX["SIL"]], 1.0)  # uncovered time is silence


@needs_recogniser
def test_cache_hit_is_equal_and_faster(tmp_path):
    audio = voice(8.0, seed=5)
    start = time.perf_counter()
    first = compute_speech_features(audio, cache_dir=str(tmp_path))
    cold = time.perf_counter() - start
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    start = time.perf_counter()
    second = compute_speech_features(audio, cache_dir=str(tmp_path))
    warm = time.perf_counter() - start
    assert np.array_equal(first.low, second.low) and np.array_equal(first.high, second.high)
    assert first.phones == second.phones and warm < cold
    compute_speech_features(audio, fps=25.0, cache_dir=str(tmp_path))  # another frame rate: another entry
    assert len(list(tmp_path.glob("*.npz"))) == 2
    files[0].write_bytes(b"damaged")  # a damaged entry is recomputed, not trusted
    again = compute_speech_features(audio, cache_dir=str(tmp_path))
    assert np.array_equal(again.low, first.low)


def test_cache_refuses_the_shared_data_folder():
    from echomask.core.speech.cache import _SHARED, cache_file

    with pytest.raises(EchoMaskError, match="shared"):
        cache_file(_SHARED / "data" / "cache", np.zeros(10, np.float32), 30.0, "builtin", "1")


class _ConstantBackend:
    name, version = "constant", "1"

    def dims(self):
        return 3, 2

    def compute(self, audio, fps, n_frames):
        return np.ones((n_frames, 3), np.float32), np.zeros((n_frames, 2), np.float32), []


def test_backend_registry_takes_new_backends(tmp_path):
    speech.register_backend("constant", _ConstantBackend)
    try:
        assert "constant" in speech.available_backends() and feature_dims("constant") == (3, 2)
        feats = compute_speech_features(np.zeros(SR, np.float32), backend="constant", cache_dir=str(tmp_path))
        assert feats.low.shape == (30, 3) and feats.high.shape == (30, 2)
        assert list(tmp_path.glob("constant-*.npz"))
    finally:
        speech._FACTORIES.pop("constant"), speech._INSTANCES.pop("constant", None)
    with pytest.raises(EchoMaskError, match="Unknown speech-feature backend"):
        compute_speech_features(np.zeros(SR, np.float32), backend="hubert-not-installed")


@needs_recogniser
def test_integer_pcm_is_scaled_like_float():
    audio = voice(1.0)
    pcm = np.round(audio * 32767).astype(np.int16)
    a, b = compute_speech_features(audio), compute_speech_features(pcm)
    assert np.abs(a.low - b.low).max() < 0.05


def test_bad_input_is_explained():
    with pytest.raises(AudioError, match="mono"):
        compute_speech_features(np.zeros((SR, 2), np.float32))
    with pytest.raises(AudioError, match="NaN"):
        compute_speech_features(np.array([0.0, np.nan], np.float32))
    with pytest.raises(EchoMaskError, match="frame rate"):
        compute_speech_features(np.zeros(SR, np.float32), fps=0)


@needs_recogniser
def test_stereo_48k_file_goes_through_load_speech(tmp_path):
    import soundfile as sf

    from echomask.core.speech.audio import load_speech

    mono = voice(1.5)
    stereo_48k = np.repeat(np.stack([mono, mono * 0.5], axis=1), 3, axis=0)  # crude 3x upsampling is fine here
    path = tmp_path / "stereo48k.wav"
    sf.write(path, stereo_48k, 48000)
    feats = compute_speech_features(load_speech(path))
    assert feats.low.shape == (45, 84) and np.isfinite(feats.low).all()
