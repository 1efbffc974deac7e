"""SQA, speech-queried attention (method §5): speech injection and the per-frame importance that picks
the frames to mask.

The block is one transformer decoder shared by hands, upper and lower. For each part its QUERIES are that
part's motion-aligned speech feature `cond_p` (lifted to the trunk width) and its KEYS/VALUES are the
motion frames. The three outputs are scaled by learnable per-part fusion weights, averaged, and added to
the motion embeddings ("speech injection").

SQA score: the cross-attention each motion frame (key) receives, averaged over heads, layers and speech
queries, weighted by the fusion weights and averaged over parts -> (B, T). The EMA teacher's score of the
unmasked motion chooses which frames the student must reconstruct (`select_sqa_mask`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .gen_layers import decoder, decoder_with_attention

SQA_PARTS = ("hands", "upper", "lower")  # order of the fusion weights (as in the official release)


class SQABlock(nn.Module):
    def __init__(self, hidden: int, heads: int, ff: int, layers: int, dropout: float):
        super().__init__()
        self.fusion_weights = nn.Parameter(torch.ones(len(SQA_PARTS)))
        self.shared_transformer_decoder = decoder(hidden, heads, ff, layers, dropout)

    def forward(self, conds: dict[str, torch.Tensor], motion: torch.Tensor, need_scores: bool = False):
        """conds {part: (B, T, H)}, motion (B, T, H) -> (hints (B, T, H), score (B, T) or None)."""
        outs, scores = [], []
        for i, p in enumerate(SQA_PARTS):
            if need_scores:
                out, maps = decoder_with_attention(self.shared_transformer_decoder, conds[p], motion)
                scores.append(self.fusion_weights[i] * maps.mean(dim=(0, 2)))  # layers, queries -> (B, K)
            else:
                out = self.shared_transformer_decoder(conds[p], motion)
            outs.append(self.fusion_weights[i] * out)
        hints = torch.stack(outs).mean(0)
        score = torch.stack(scores).mean(0) if need_scores else None
        return hints, score


def mask_counts(window: int, ratio: float, top_share: float) -> tuple[int, int]:
    """(frames masked in all, of which attention-chosen) for one window: 64 -> (24, 13)."""
    total = int(round(ratio * window))
    top = min(total, int(round(top_share * window)))
    return total, top


def hardness(step: float, ramp_steps: float) -> float:
    """Soft->hard schedule: 0 at the start (choice nearly random), 1 after `ramp_steps` (pure top-k);
    steps may also be a training fraction and `ramp_steps` the fraction at which masking is fully hard."""
    if ramp_steps <= 0:
        return 1.0
    return float(min(1.0, max(0.0, step / ramp_steps)))


def select_sqa_mask(scores: torch.Tensor, ratio: float = 0.375, top_share: float = 0.20,
                    generator: torch.Generator | None = None, seed_frames: int = 4,
                    hardness: float = 1.0, unit: int = 1, ratios: torch.Tensor | None = None) -> torch.Tensor:
    """Frames to mask (B, T) bool: the attention share by SQA score plus a uniformly random share.

    Frames are chosen in units of `unit` frames (1 = single frames, as in the paper; 4 = whole motion
    tokens, so a token is either seen or hidden, as iterative decoding needs); a unit's score is the mean of
    its frames'. `ratio` / `top_share` give the masked and attention-chosen shares of the window;
    `ratios` (B,), when given, varies the masked share per window and keeps the attention-chosen part of it
    at top_share / ratio.

    `hardness` 1 picks the attention share as the exact top-k of `scores`; lower values pick it by
    Gumbel-top-k on standardised log-scores at temperature (1 - h) / h, so early training (h near 0) is
    close to random masking and moves to attention-guided masking as h grows (the soft->hard schedule).
    The `seed_frames` leading frames are never masked.
    """
    b, t = scores.shape
    if t % unit:
        raise ValueError(f"a window of {t} frames does not split into units of {unit}")
    n_units, seed_units = t // unit, -(-seed_frames // unit)
    device = scores.device
    free = n_units - seed_units
    if ratios is None:
        total, top = mask_counts(n_units, ratio, top_share)
        total = torch.full((b,), min(total, free), dtype=torch.long)
        top = torch.minimum(torch.full((b,), top, dtype=torch.long), total)
    else:
        total = torch.round(ratios.detach().float().cpu() * n_units).long().clamp(1, free)
        top = (torch.round(total * (top_share / ratio)).long().minimum(total) if ratio > 0
               else torch.zeros_like(total))
    total, top = total.to(device), top.to(device)

    def uniform(shape):
        return torch.rand(shape, generator=generator, device="cpu").to(device)

    unit_scores = scores.detach().float().reshape(b, n_units, unit).mean(-1)
    logs = torch.log(unit_scores.clamp_min(1e-12))
    z = (logs - logs.mean(1, keepdim=True)) / logs.std(1, keepdim=True).clamp_min(1e-6)
    if hardness < 1.0:
        temp = (1.0 - hardness) / max(hardness, 1e-6)
        gumbel = -torch.log(-torch.log(uniform((b, n_units)).clamp(1e-9, 1 - 1e-9)))
        z = z / max(temp, 1e-6) + gumbel if temp < 1e6 else gumbel
    z[:, :seed_units] = -math.inf
    mask = _ranks(z) < top[:, None]
    r = uniform((b, n_units))
    r[:, :seed_units] = -1.0
    r[mask] = -1.0
    mask |= _ranks(r) < (total - top)[:, None]
    return mask.repeat_interleave(unit, dim=1)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Rank of every entry within its row, 0 = largest (ties broken by position)."""
    return torch.argsort(torch.argsort(x, dim=1, descending=True, stable=True), dim=1)
