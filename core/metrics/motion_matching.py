"""Motion matching from speech: the baseline the generator must beat (and never ships as the product).

Real motion re-sequenced: the query speech is cut into overlapping segments (`segment` frames, stepping
`segment - blend`); for each, a segment of the database (captured motion with its speech) is chosen so that
(a) its speech looks like the query's (prosody: onset, loudness, pitch, voicing, speech/pause, a coarse
spectrum) and (b) its first `blend` frames continue the previous choice (joint positions and velocities).
One Viterbi pass over all segments minimises the sum of both costs; the chosen segments are cross-faded
(quaternion slerp per joint, linear for expressions and height) and the root stays in place.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..motion import rotations as R
from ..errors import EchoMaskError
from ..motion.take import Take


@dataclasses.dataclass(frozen=True)
class MatchingConfig:
    segment: int = 40              # frames per chosen segment (1.3 s)
    blend: int = 8                 # cross-fade frames between consecutive segments
    candidate_hop: int = 4         # database segments start every this many frames
    transition_weight: float = 1.0  # transition cost relative to the speech cost (both median-scaled)


def speech_descriptor(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(T, 13) per-frame speech description from the built-in features (core.speech.builtin): onset,
    loudness, pitch, voicing, speech flag and the log-mel spectrum pooled into 8 bands."""
    from ..speech.builtin import LOG_F0, MEL, ONSET, RMS, SPEECH_FLAG, VOICING

    mel = low[:, MEL]
    bands = mel.reshape(len(mel), 8, -1).mean(-1)
    return np.concatenate([low[:, [ONSET, RMS, LOG_F0, VOICING]], high[:, [SPEECH_FLAG]], bands], 1).astype(np.float32)


def _pose_descriptor(take: Take) -> np.ndarray:
    """(T, 2 x 3J) joint positions without translation, and their velocities (per frame)."""
    from .kinematics import take_positions

    pos = take_positions(take, with_translation=False).reshape(take.num_frames, -1)
    vel = np.diff(pos, axis=0, prepend=pos[:1]) * 4.0  # ~ positions a few frames ahead
    return np.concatenate([pos, vel], 1)


class MotionDatabase:
    """Captured takes with their per-frame speech descriptors, cut into candidate segments."""

    def __init__(self, takes: list[Take], speech: list[np.ndarray], cfg: MatchingConfig = MatchingConfig()):
        if not takes:
            raise EchoMaskError("Motion matching needs at least one captured take with its speech.")
        self.cfg = cfg
        self.takes, self.speech, self.poses, self.candidates = [], [], [], []
        for i, (take, desc) in enumerate(zip(takes, speech)):
            n = min(take.num_frames, len(desc))
            if n < cfg.segment:
                continue
            self.takes.append(take.slice(0, n))
            self.speech.append(np.asarray(desc[:n], np.float32))
            self.poses.append(_pose_descriptor(self.takes[-1]))
            k = len(self.takes) - 1
            self.candidates += [(k, s) for s in range(0, n - cfg.segment + 1, cfg.candidate_hop)]
        if not self.candidates:
            raise EchoMaskError(f"Motion matching needs takes of at least {cfg.segment} frames.")
        allspeech = np.concatenate(self.speech)
        self.mean, self.std = allspeech.mean(0), allspeech.std(0) + 1e-3
        seg, blend = cfg.segment, cfg.blend
        self._seg_speech = np.stack([self._norm(self.speech[k][s:s + seg]) for k, s in self.candidates])
        heads = np.stack([self.poses[k][s:s + blend] for k, s in self.candidates])            # (C, blend, P)
        tails = np.stack([self.poses[k][s + seg - blend:s + seg] for k, s in self.candidates])
        # trans[a, b]: how far the end of candidate a is from the start of candidate b.
        sq = lambda x: (x ** 2).sum((1, 2))
        cross = np.einsum("abp,cbp->ac", tails, heads)
        self._trans = np.maximum(sq(tails)[:, None] + sq(heads)[None] - 2 * cross, 0.0) / blend

    def _norm(self, desc):
        return (desc - self.mean) / self.std

    def match(self, query: np.ndarray) -> list[int]:
        """Candidate indices, one per query segment (Viterbi over speech + transition costs)."""
        cfg = self.cfg
        step = cfg.segment - cfg.blend
        n = len(query)
        starts = list(range(0, max(1, n - cfg.blend), step))
        q = self._norm(np.asarray(query, np.float32))
        pad = starts[-1] + cfg.segment - n
        if pad > 0:
            q = np.concatenate([q, np.repeat(q[-1:], pad, 0)])
        speech_cost = np.stack([((self._seg_speech - q[s:s + cfg.segment][None]) ** 2).mean((1, 2))
                                for s in starts])                                          # (K, C)
        speech_cost /= np.median(speech_cost) + 1e-9
        trans = self._trans / (np.median(self._trans) + 1e-9) * cfg.transition_weight
        total = speech_cost[0].copy()
        back = []
        for k in range(1, len(starts)):
            options = total[:, None] + trans                                                # (C, C)
            best = options.argmin(0)
            back.append(best)
            total = options[best, np.arange(len(best))] + speech_cost[k]
        path = [int(total.argmin())]
        for best in reversed(back):
            path.append(int(best[path[-1]]))
        return path[::-1]

    def render(self, path: list[int], n_frames: int, fps: float) -> Take:
        """Cross-fade the chosen segments into a take of `n_frames`, standing in place."""
        cfg = self.cfg
        step = cfg.segment - cfg.blend
        total = step * (len(path) - 1) + cfg.segment
        quats = np.zeros((total, 55, 4))
        expr = np.zeros((total, 100))
        height = np.zeros(total)
        ramp = (np.arange(cfg.blend) + 0.5) / cfg.blend
        for i, c in enumerate(path):
            k, s = self.candidates[c]
            src = self.takes[k].slice(s, s + cfg.segment)
            q = R.axis_angle_to_quaternion(src.poses.reshape(-1, 55, 3).astype(np.float64))
            lo = i * step
            if i == 0:
                quats[lo:lo + cfg.segment] = q
            else:
                prev = quats[lo:lo + cfg.blend]
                q = q * np.sign((q[:1] * prev[:1]).sum(-1, keepdims=True) + 1e-12)  # same hemisphere
                quats[lo:lo + cfg.blend] = R.quaternion_slerp(prev, q[:cfg.blend], ramp[:, None, None])
                quats[lo + cfg.blend:lo + cfg.segment] = q[cfg.blend:]
            w = np.ones(cfg.segment)
            if i > 0:
                w[:cfg.blend] = ramp
                expr[lo:lo + cfg.segment] *= np.r_[1 - ramp, np.zeros(cfg.segment - cfg.blend)][:, None]
                height[lo:lo + cfg.segment] *= np.r_[1 - ramp, np.zeros(cfg.segment - cfg.blend)]
            expr[lo:lo + cfg.segment] += w[:, None] * src.expressions
            height[lo:lo + cfg.segment] += w * src.trans[:, 1]
        quats = quats[:n_frames]
        poses = R.quaternion_to_axis_angle(quats).reshape(len(quats), 165).astype(np.float32)
        x0, z0 = self.takes[0].trans[0, 0], self.takes[0].trans[0, 2]
        trans = np.stack([np.full(len(poses), x0), height[:n_frames], np.full(len(poses), z0)], 1)
        return Take(poses=poses, trans=trans.astype(np.float32), expressions=expr[:n_frames].astype(np.float32),
                    betas=self.takes[0].betas, fps=fps, meta={"generator": "motion-matching"})

    def generate(self, query: np.ndarray, fps: float = 30.0) -> Take:
        """Query speech descriptors (T, 13) -> a take of T frames."""
        if len(query) == 0:
            raise EchoMaskError("Motion matching needs at least one frame of speech.")
        return self.render(self.match(query), len(query), fps)
