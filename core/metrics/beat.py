"""BC (beat consistency), the old EMAGE protocol (docs/METHOD.md §8).

1. Joint positions by forward kinematics without root translation.
2. Per-joint speed (m/s) divided by the dataset's mean speed of that joint
   (`beat2_samples/weights/mean_vel_smplxflame_30.npy`, passed in by the caller).
3. Motion beats = local minima of that normalised speed (scipy argrelextrema, order 7) whose normalised
   speed is above 0.3 (EMAGE's threshold: a pause in a moving joint, not a joint at rest).
4. Audio onsets by librosa onset detection on 16 kHz speech, hop 512.
5. Per joint: mean over audio onsets of exp(-d^2 / (2 * 0.3^2)), d = seconds from the onset to the nearest
   motion beat (0 for a joint without beats); BC = mean over the 13 upper-body joints.
6. The first and last 60 frames are ignored (motion beats and audio onsets both come from the middle part).

Two protocols (`BeatConfig.protocol`):
- "emage" (default): EMAGE's code as we read it, quirks included, because the published BC figures come
  from it: (a) the 0.3 threshold is looked up at the minimum's index inside the crop used as an index into
  the uncropped speed, i.e. 60 frames earlier than the minimum; (b) audio onsets come from
  [60 frames, min(end of motion, end of audio - 60 frames)), so onsets near the motion's end count
  although motion beats stop 60 frames earlier; (c) pooled over clips, each clip weighs N - 120 frames but
  the sum is divided by the sum of N (about 7 % lower on 60 s clips).
- "symmetric": the evident intent: threshold at the minimum itself, onsets and beats both from
  [60, N - 60), the weighted mean divided by the sum of N - 120. It scores lower (about 3-5 x10 on BEAT2
  ground truth against 6-7 with "emage"), so never mix the two in one table.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..motion.skeleton import UPPER_JOINTS
from .kinematics import joint_speeds


@dataclasses.dataclass(frozen=True)
class BeatConfig:
    sigma: float = 0.3              # seconds, width of the Gaussian match
    order: int = 7                  # frames each side a speed minimum must beat
    min_beat_speed: float = 0.3     # normalised speed a minimum must exceed to count as a beat
    edge_frames: int = 60           # ignored at the start and at the end
    sample_rate: int = 16000
    hop_length: int = 512
    joints: tuple[int, ...] = UPPER_JOINTS
    protocol: str = "emage"         # or "symmetric" (see the module text)


@dataclasses.dataclass
class BeatResult:
    score: float                    # BC in [0, 1] (the paper prints it x10)
    frames: int                     # frames scored (N - 2 * edge_frames); the pooling weight
    total_frames: int               # N, EMAGE's pooling denominator
    onsets: int                     # audio onsets in the scored part
    per_joint: dict[int, float]


def audio_onsets(audio: np.ndarray, config: BeatConfig = BeatConfig()) -> np.ndarray:
    """Onset times in seconds (librosa's default onset detector, 16 kHz, hop 512)."""
    import librosa

    audio = np.asarray(audio, np.float32)
    if audio.size < config.hop_length * 2:
        return np.zeros(0)
    return librosa.onset.onset_detect(y=audio, sr=config.sample_rate, hop_length=config.hop_length,
                                      units="time")


def motion_beats(normalised_speed: np.ndarray, config: BeatConfig = BeatConfig(),
                 threshold_speed: np.ndarray | None = None) -> np.ndarray:
    """Frame indices of the local minima (order `config.order`) whose threshold speed is above
    `config.min_beat_speed`; threshold_speed defaults to the speed itself (index by index)."""
    from scipy.signal import argrelextrema

    speed = np.asarray(normalised_speed, np.float64)
    check = speed if threshold_speed is None else np.asarray(threshold_speed, np.float64)
    minima = argrelextrema(speed, np.less, order=config.order)[0]
    return minima[check[minima] > config.min_beat_speed]


def match_score(beat_times: np.ndarray, onset_times: np.ndarray, sigma: float) -> float:
    """Mean over onsets of exp(-d^2 / (2 sigma^2)), d = distance to the nearest beat; 0 without beats."""
    onset_times = np.asarray(onset_times, np.float64)
    if onset_times.size == 0:
        return float("nan")
    beat_times = np.asarray(beat_times, np.float64)
    if beat_times.size == 0:
        return 0.0
    d = np.abs(onset_times[:, None] - beat_times[None, :]).min(axis=1)
    return float(np.mean(np.exp(-d ** 2 / (2.0 * sigma ** 2))))


def beat_consistency(positions: np.ndarray, audio: np.ndarray, fps: float, mean_speed: np.ndarray,
                     config: BeatConfig = BeatConfig()) -> BeatResult:
    """BC of one clip.

    positions (N, 55, 3) joint positions WITHOUT root translation; audio: 16 kHz mono starting at frame 0
    (it may run past the motion's end: the "emage" protocol uses up to 60 frames before its end);
    mean_speed (55,) the dataset's mean joint speed in m/s (normalises each joint's speed).
    Returns score NaN when the scored part is too short or has no audio onset.
    """
    if config.protocol not in ("emage", "symmetric"):
        raise ValueError(f"unknown BC protocol {config.protocol!r}; use 'emage' or 'symmetric'")
    n = positions.shape[0]
    lo, hi = config.edge_frames, n - config.edge_frames
    if hi - lo <= 2 * config.order:
        return BeatResult(float("nan"), 0, n, 0, {})
    per_frame = config.sample_rate / fps
    first = int(round(lo * per_frame))
    if config.protocol == "emage":
        last = min(int(round(n * per_frame)), len(audio) - first)
    else:
        last = int(round(hi * per_frame))
    onsets = audio_onsets(audio[first:last], config)
    if onsets.size == 0:
        return BeatResult(float("nan"), hi - lo, n, 0, {})
    speed = joint_speeds(positions, fps) / np.maximum(np.asarray(mean_speed, np.float64), 1e-8)
    per_joint = {}
    for j in config.joints:
        threshold = speed[:hi - lo, j] if config.protocol == "emage" else None  # EMAGE's shifted lookup
        beats = motion_beats(speed[lo:hi, j], config, threshold)
        per_joint[j] = match_score(beats / fps, onsets, config.sigma)
    return BeatResult(float(np.mean(list(per_joint.values()))), hi - lo, n, int(onsets.size), per_joint)


def pool_beat_consistency(results: list[BeatResult], protocol: str = "emage") -> float:
    """BC over clips: sum of score x scored frames, divided by the total frames ("emage") or by the
    scored frames ("symmetric"). Clips without a score are left out."""
    valid = [r for r in results if np.isfinite(r.score) and r.frames > 0]
    if not valid:
        return float("nan")
    weight = sum(r.total_frames if protocol == "emage" else r.frames for r in valid)
    return float(sum(r.score * r.frames for r in valid) / weight)


def mean_speed_from_takes(position_sets: list[np.ndarray], fps: float) -> np.ndarray:
    """(55,) mean joint speed (m/s) over reference clips: the fallback when BEAT2's table is absent."""
    speeds = np.concatenate([joint_speeds(p, fps) for p in position_sets], axis=0)
    return speeds.mean(axis=0)
