"""The built-in speech backend: low-level acoustics (lowlevel.py) + PocketSphinx phones (phones.py),
normalised per utterance so that loudness, microphone colour and voice pitch do not matter.

Normalisation (chosen for a model trained on minutes of one speaker that must work on anyone's audio):
- "active" frames: RMS within ACTIVE_RANGE_DB of the clip's loud end (99th percentile) and above
  ACTIVE_FLOOR_DB dBFS. The clip's level reference is their mean RMS.
- log-mel: minus a per-band mean over active frames (cepstral-mean-style: removes the microphone's and
  the voice's long-term colour), shrunk toward the clip's overall level for short clips (a 0.3 s clip's
  band means are mostly its phones, not its channel; full weight from BAND_FULL_S of active speech), then / 20 dB, clipped to [-4, 4]. A fixed scale,
  not a per-utterance variance, so quiet vs loud stretches keep their contrast and short clips are stable.
- RMS: (dB - level reference) / 20, clipped to [-4, 2]. Onset: log1p(flux / 1 dB) (gain-invariant already).
- f0: log2 relative to the clip's median voiced pitch (blended toward 150 Hz when under F0_FULL_S is voiced),
  times 3 (one unit = 4 semitones), 0 where unvoiced, clipped to [-4, 4]. Voicing: 0..1 as measured.
- A clip with no active frame (silence) is referenced to a fixed speech level instead, so it reads as
  very quiet, not as average speech.
"""
from __future__ import annotations

import numpy as np

from .lowlevel import LowLevelConfig, LowLevelExtractor
from .phones import NON_SPEECH, NUM_PHONES, PHONE_INDEX, RECOGNISER_PRESETS, phones_to_frames, recognise_phones

N_MELS = 80
LOW_DIM = N_MELS + 4
HIGH_DIM = NUM_PHONES + 1
# column layout
MEL = slice(0, N_MELS)
ONSET, RMS, LOG_F0, VOICING = N_MELS, N_MELS + 1, N_MELS + 2, N_MELS + 3
PHONE_POSTERIORS = slice(0, NUM_PHONES)
SPEECH_FLAG = NUM_PHONES

ACTIVE_RANGE_DB = 35.0
ACTIVE_FLOOR_DB = -60.0
PAUSE_RANGE_DB = 45.0      # quieter than this below the loud end is a pause whatever the recogniser says
SILENT_CLIP_LEVEL_DB = -25.0
MEL_DB_UNIT = 20.0
BAND_FULL_S = 3.0          # band means count fully once a clip has this much active speech
F0_REF_HZ = 150.0
F0_FULL_S = 0.5            # a median over half a second of voicing is already a good pitch reference
F0_UNITS_PER_OCTAVE = 3.0


def _active_mask(rms_db: np.ndarray) -> tuple[np.ndarray, float]:
    loud = float(np.percentile(rms_db, 99)) if len(rms_db) else -100.0
    return rms_db >= max(loud - ACTIVE_RANGE_DB, ACTIVE_FLOOR_DB), loud


def normalise_low(raw: dict, fps: float) -> np.ndarray:
    """Raw lowlevel.compute() output -> (T, LOW_DIM) float32, normalised as the module doc says."""
    mel_db, rms_db = raw["mel_db"], raw["rms_db"]
    n = len(rms_db)
    low = np.zeros((n, LOW_DIM), dtype=np.float32)
    if n == 0:
        return low
    active, _ = _active_mask(rms_db)
    n_active = int(active.sum())
    if n_active:
        level = float(rms_db[active].mean())
        band_mean = mel_db[active].mean(axis=0, dtype=np.float64)
        overall = float(band_mean.mean())
        weight = min(1.0, n_active / (BAND_FULL_S * fps))
        reference = overall + weight * (band_mean - overall)
    else:
        level = SILENT_CLIP_LEVEL_DB
        reference = np.full(N_MELS, SILENT_CLIP_LEVEL_DB)
    low[:, MEL] = np.clip((mel_db - reference.astype(np.float32)) / MEL_DB_UNIT, -4.0, 4.0)
    low[:, ONSET] = raw["onset"]
    low[:, RMS] = np.clip((rms_db - level) / MEL_DB_UNIT, -4.0, 2.0)
    voicing = raw["voicing"]
    voiced = voicing > 0.5
    n_voiced = int(voiced.sum())
    prior = np.log2(F0_REF_HZ)
    median = float(np.median(raw["log2_f0"][voiced])) if n_voiced else prior
    weight = min(1.0, n_voiced / (F0_FULL_S * fps))
    f0_ref = prior + weight * (median - prior)
    low[:, LOG_F0] = np.where(voicing > 0.05, np.clip((raw["log2_f0"] - f0_ref) * F0_UNITS_PER_OCTAVE, -4, 4), 0)
    low[:, VOICING] = voicing
    return low


def speech_flags(posteriors: np.ndarray, rms_db: np.ndarray) -> np.ndarray:
    """1 where the frame is speech: the recogniser heard a phone there (over half the frame) and it is not
    far quieter than the clip's speech; else 0 (pause)."""
    if len(rms_db) == 0:
        return np.zeros(0, np.float32)
    _, loud = _active_mask(rms_db)
    loud_enough = rms_db >= max(loud - PAUSE_RANGE_DB, ACTIVE_FLOOR_DB)
    non_speech = posteriors[:, [PHONE_INDEX[p] for p in NON_SPEECH]].sum(axis=1)
    return ((non_speech < 0.5) & loud_enough).astype(np.float32)


class BuiltinBackend:
    """Offline, CPU, ~84 + 43 features; needs numpy, scipy and pocketsphinx."""
    name = "builtin"
    # Bump whenever outputs change (part of the cache key). Includes the recogniser's settings.
    version = f"4|{RECOGNISER_PRESETS['fast']}|{LowLevelConfig()}"  # 4: phones independent of earlier clips

    def __init__(self, recogniser=RECOGNISER_PRESETS["fast"], lowlevel=LowLevelConfig()):
        self.recogniser = recogniser
        self.lowlevel = LowLevelExtractor(lowlevel)
        if recogniser != RECOGNISER_PRESETS["fast"] or lowlevel != LowLevelConfig():
            self.version = f"4|{recogniser}|{lowlevel}"

    def dims(self) -> tuple[int, int]:
        return LOW_DIM, HIGH_DIM

    def compute(self, audio: np.ndarray, fps: float, n_frames: int):
        low, rms_db = self.low_features(audio, fps, n_frames)
        phones = recognise_phones(audio, self.recogniser)
        return low, self.high_features(phones, fps, n_frames, rms_db), phones

    # compute() in two halves, so that the phones can come from another process (core.speech.phone_process)
    def low_features(self, audio: np.ndarray, fps: float, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """(low (n_frames, LOW_DIM), rms_db (n_frames,)): the acoustics, and the level high_features needs."""
        raw = self.lowlevel.compute(audio, n_frames, fps)
        return normalise_low(raw, fps), raw["rms_db"]

    @staticmethod
    def high_features(phones, fps: float, n_frames: int, rms_db: np.ndarray) -> np.ndarray:
        """(n_frames, HIGH_DIM): phone shares and the speech flag. Row t depends only on the phones that
        overlap frame t (and the clip's level), so rows before the recognised time are final."""
        high = np.zeros((n_frames, HIGH_DIM), dtype=np.float32)
        high[:, PHONE_POSTERIORS] = phones_to_frames(phones, n_frames, fps)
        high[:, SPEECH_FLAG] = speech_flags(high[:, PHONE_POSTERIORS], rms_db)
        return high
