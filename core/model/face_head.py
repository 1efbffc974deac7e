"""The speech face head (ours, docs/METHOD.md §9): the face, frame by frame, from the speech.

The generator predicts the face as tokens of 4 frames, sampled one window at a time; with minutes of data the
face tokens carry the slow expressions but barely the jaw (the model's own mouth: jaw correlation with the
capture 0.00-0.12, weights/MODEL_CARD.md), while a mouth follows syllables at 3-6 Hz. This head reads the
speech features (standardised as the MAM standardises them; optionally also the face's motion-aligned speech
feature `cond_face` from the MAM speech branch, `use_cond`, which measured no better) and regresses the 106-d
face features (jaw rot6d + 100 expressions, the face tokenizer's normalised space) at 30 fps with a few dilated
temporal convolutions (receptive field 29 frames, ~1 s: coarticulation).

It is trained after the generator, which stays frozen (`python -m core train-face-head`), and is stored in
the same bundle ('face_head.<name>' tensors, its config in info["face_head"]); bundles without one keep the
token face.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass
class FaceHeadConfig:
    cond_dim: int = 96        # the MAM feature size (generator.mam.d), read only with use_cond
    low_dim: int = 84         # speech features (the built-in backend's low / high sizes)
    high_dim: int = 43
    out_dim: int = 106        # face features (core.motion.motion_repr)
    width: int = 128
    kernel: int = 5
    dilations: tuple = (1, 2, 4)
    dropout: float = 0.1
    use_cond: bool = False    # also read the MAM's cond_face (measured: no better on the held-out tails)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "FaceHeadConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown face head fields {sorted(unknown)}")
        d = dict(d)
        if "dilations" in d:
            d["dilations"] = tuple(d["dilations"])
        return cls(**d)


class _TemporalBlock(nn.Module):
    def __init__(self, width: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
        self.mix = nn.Conv1d(width, width, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):  # (B, W, T) -> (B, W, T)
        return x + self.drop(self.mix(nn.functional.gelu(self.conv(nn.functional.gelu(x)))))


class SpeechFaceHead(nn.Module):
    def __init__(self, cfg: FaceHeadConfig):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear((cfg.cond_dim if cfg.use_cond else 0) + cfg.low_dim + cfg.high_dim, cfg.width)
        self.blocks = nn.Sequential(*[_TemporalBlock(cfg.width, cfg.kernel, d, cfg.dropout) for d in cfg.dilations])
        self.out = nn.Linear(cfg.width, cfg.out_dim)

    def forward(self, cond_face, low, high):
        """cond_face (B, T, cond_dim), low (B, T, low_dim), high (B, T, high_dim) standardised speech
        (the MAM's own standardisation) -> (B, T, out_dim) normalised face features."""
        x = torch.cat([cond_face, low, high] if self.cfg.use_cond else [low, high], -1)
        x = self.inp(x).transpose(1, 2)
        return self.out(self.blocks(x).transpose(1, 2))


def standardised_speech(mam, low, high):
    """The raw speech features standardised as the MAM's speech inputs standardise them (their statistics,
    without the projection to the MAM width)."""
    from .mam import Standardize

    return Standardize.forward(mam.speech_low, low), Standardize.forward(mam.speech_high, high)
