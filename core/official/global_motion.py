"""The release's translation ("global motion") predictor, re-implemented from its description
(docs/OFFICIAL_RELEASE_FORMAT.md §3 and §6; no official code).

A conv net without time resampling on the 61-d lower-body features: 4 x [Conv1d k3, LeakyReLU(0.2),
ResBlock] (61 -> 256), then 2 ResBlocks, 4 x [Conv1d k3, LeakyReLU(0.2)] (256 -> 256 -> 256 -> 256 -> 61)
and a final Conv1d 61 -> 61. At inference its input is the decoded lower body with Gram-Schmidt-normalised
rot6d and zeroed translation channels; of its 61 outputs, 54 and 56 are x/z velocities (m/s) and 55 is the
absolute height y. State-dict names match the release file `last_1700_foot.bin` (42 tensors).
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.gen_layers import ResBlock

LOWER_DIM = 61
WIDTH = 256
STAGES = 4


class GlobalMotionEncoder(nn.Module):
    def __init__(self, d_in: int = LOWER_DIM, width: int = WIDTH, stages: int = STAGES):
        super().__init__()
        layers = []
        for i in range(stages):
            layers += [nn.Conv1d(d_in if i == 0 else width, width, 3, 1, 1), nn.LeakyReLU(0.2, True), ResBlock(width)]
        self.main = nn.Sequential(*layers)

    def forward(self, x):  # (B, C, T)
        return self.main(x)


class GlobalMotionDecoder(nn.Module):
    def __init__(self, d_out: int = LOWER_DIM, width: int = WIDTH, stages: int = STAGES, resblocks: int = 2):
        super().__init__()
        layers = [ResBlock(width) for _ in range(resblocks)]
        chans = [width] * stages + [d_out]
        for i in range(stages):
            layers += [nn.Conv1d(chans[i], chans[i + 1], 3, 1, 1), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv1d(d_out, d_out, 3, 1, 1))
        self.main = nn.Sequential(*layers)

    def forward(self, x):  # (B, C, T)
        return self.main(x)


class GlobalMotionNet(nn.Module):
    """(B, T, 61) -> (B, T, 61); `encode` gives the (B, T, 256) encoder output."""

    def __init__(self):
        super().__init__()
        self.encoder = GlobalMotionEncoder()
        self.decoder = GlobalMotionDecoder()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != LOWER_DIM:
            raise ValueError(f"the global-motion net expects (batch, frames, {LOWER_DIM}), got {tuple(x.shape)}")
        return self.decoder(self.encoder(x.transpose(1, 2))).transpose(1, 2)
