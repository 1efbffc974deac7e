"""Speech audio in: any file soundfile/libsndfile reads (wav, flac, ogg, mp3), any rate and channel count,
out: 16 kHz mono float32 — what the speech features and the model expect.

soundfile and soxr are the worker's packages. Where they are missing (Blender's own Python, which runs the
headless import), PCM WAV files are still read with the standard library and resampled linearly.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import AudioError

SAMPLE_RATE = 16000
SUPPORTED = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff")


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """(N,) or (N, C) at `rate` -> (M,) float32 at 16 kHz. Channels are averaged."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE and len(samples):
        try:
            import soxr  # librosa's resampler; high quality and fast
        except ImportError:
            n_out = int(round(len(samples) * SAMPLE_RATE / rate))
            samples = np.interp(np.arange(n_out) * (rate / SAMPLE_RATE), np.arange(len(samples)), samples)
        else:
            samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
        samples = samples.astype(np.float32)
    return np.ascontiguousarray(samples)


def speech_frames(num_samples: int, fps: float = 30.0) -> int:
    """Frames of motion for `num_samples` of 16 kHz speech (the generator's count: rounded, at least 1)."""
    return max(1, int(round(num_samples * fps / SAMPLE_RATE)))


def load_speech(path: str | os.PathLike, max_seconds: float | None = None) -> np.ndarray:
    """Read an audio file as 16 kHz mono float32 in [-1, 1].

    Raises AudioError with the file name and what to do when the file is missing, unreadable or empty.
    """
    path = os.fspath(path)
    name = os.path.basename(path)
    if not path:
        raise AudioError("No speech audio was given: choose a sound strip or an audio file.")
    if not os.path.exists(path):
        raise AudioError(f"Speech file not found: {path}. Check the path, or re-link the sound in Blender.")
    if os.path.isdir(path):
        raise AudioError(f"{path} is a folder, not an audio file.")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{name} is empty (0 bytes).")
    try:
        try:
            import soundfile as sf
        except ImportError:
            rate, samples = _read_pcm_wav(path, name, max_seconds)
        else:
            with sf.SoundFile(path) as f:
                rate = f.samplerate
                frames = f.frames if max_seconds is None else min(f.frames, int(max_seconds * rate))
                samples = f.read(frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:
        ext = os.path.splitext(name)[1].lower()
        hint = ("the file looks damaged; re-export it" if ext in SUPPORTED
                else f"use one of {', '.join(SUPPORTED)}")
        raise AudioError(f"Cannot read speech from {name}: {exc}. ({hint})") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{name} contains no audio samples.")
    audio = to_mono_16k(samples, rate)
    if not np.isfinite(audio).all():
        raise AudioError(f"{name} contains invalid (NaN) samples; re-export it.")
    return audio


def _read_pcm_wav(path: str, name: str, max_seconds: float | None):
    """(rate, (N, C) float32) of a PCM WAV file with the standard library only."""
    import wave

    if os.path.splitext(name)[1].lower() != ".wav":
        raise AudioError(f"Reading {name} needs the soundfile package, which this Python lacks; convert it to "
                         f"WAV or use the EchoMask runtime's Python.")
    with wave.open(path, "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        frames = w.getnframes() if max_seconds is None else min(w.getnframes(), int(max_seconds * rate))
        raw = w.readframes(frames)
    if width == 1:
        pcm = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        pcm = np.frombuffer(raw, f"<i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        pcm = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / float(2 ** 23)
    else:
        raise AudioError(f"{name} uses {8 * width}-bit samples, which cannot be read without soundfile.")
    return rate, pcm.reshape(-1, channels)


SILENCE_DB = -45.0      # dBFS: speech this quiet at its loudest is not heard at a normal listening level
SILENCE_WINDOW = 0.1    # seconds over which loudness is measured


def loudest_level_db(audio: np.ndarray, rate: int = SAMPLE_RATE, window_s: float = SILENCE_WINDOW) -> float:
    """RMS level (dBFS) of the loudest `window_s` stretch of the clip (the whole clip when shorter)."""
    audio = np.asarray(audio, np.float64).reshape(-1)
    if audio.size == 0:
        return -200.0
    n = max(1, int(round(window_s * rate)))
    k = max(1, audio.size // n)
    frames = audio[:k * n].reshape(k, n) if audio.size >= n else audio[None]
    loudest = float(np.sqrt(np.mean(np.square(frames), axis=1)).max())
    return 20.0 * np.log10(max(loudest, 1e-10))


def is_silent(audio: np.ndarray, threshold_db: float = SILENCE_DB, rate: int = SAMPLE_RATE) -> bool:
    """True when no stretch of the clip (0.1 s) is louder than `threshold_db` RMS (dBFS): digital silence,
    room tone, hiss, a muted or disconnected recording."""
    return loudest_level_db(audio, rate) < threshold_db


def check_has_speech(audio: np.ndarray, label: str, rate: int = SAMPLE_RATE) -> None:
    """Raise AudioError (naming the sound and what to do) when the clip is silent or nearly silent: a take
    generated from it would gesture at nothing."""
    level = loudest_level_db(audio, rate)
    if level < SILENCE_DB:
        loudness = "completely silent" if level <= -150 else f"nearly silent (its loudest moment is {level:.0f} dBFS)"
        raise AudioError(f"No speech found in {label}: it is {loudness}, so there is nothing to gesture to. "
                         "Check that the sound with the speech is chosen, unmuted and audible, then Generate "
                         "again. Nothing was changed.")
