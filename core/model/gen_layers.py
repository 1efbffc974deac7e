"""Building blocks of the generator and MAM: MLP, conv residual block, periodic position encoding,
stock transformer stacks, and a decoder pass that also returns cross-attention maps (for SQA scores).

All attention blocks are stock `nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer` (post-norm,
ReLU, batch-first): the layout the official release uses, so its tensors load into them unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """Linear -> LeakyReLU(0.2) -> Linear (keys mlp.0 / mlp.2, as in the official release)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_in, d_hidden), nn.LeakyReLU(0.2, True), nn.Linear(d_hidden, d_out))

    def forward(self, x):
        return self.mlp(x)


class ResBlock(nn.Module):
    """Conv1d k3 -> LeakyReLU(0.2) -> Conv1d k3, plus identity (channels-first)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Conv1d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2, True),
                                   nn.Conv1d(channels, channels, 3, 1, 1))

    def forward(self, x):
        return x + self.model(x)


class ConvMotionEncoder(nn.Module):
    """Frames (B, T, D) -> (B, T, C): stages of [Conv1d k3, LeakyReLU, ResBlock], no time downsampling."""

    def __init__(self, d_in: int, channels: int, stages: int):
        super().__init__()
        layers = []
        for i in range(stages):
            layers += [nn.Conv1d(d_in if i == 0 else channels, channels, 3, 1, 1), nn.LeakyReLU(0.2, True),
                       ResBlock(channels)]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x.transpose(1, 2)).transpose(1, 2)


class HalveTime(nn.Conv1d):
    """Conv1d kernel 2 stride 2 applied to batch-first (B, T, C) -> (B, T/2, C)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 2, 2)

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def periodic_table(dim: int, period: int = 64, length: int = 128) -> torch.Tensor:
    """Sinusoid table whose position index wraps every `period` frames: (1, length, dim)."""
    pos = (torch.arange(length, dtype=torch.float64) % period)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe.float()[None]


class PeriodicPositionalEncoding(nn.Module):
    def __init__(self, dim: int, dropout: float = 0.1, period: int = 64, length: int = 128):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", periodic_table(dim, period, length))

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.shape[1]])


def encoder(d: int, heads: int, ff: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def decoder(d: int, heads: int, ff: int, layers: int, dropout: float) -> nn.TransformerDecoder:
    return nn.TransformerDecoder(nn.TransformerDecoderLayer(d, heads, ff, dropout, batch_first=True), layers)


def decoder_with_attention(stack: nn.TransformerDecoder, tgt: torch.Tensor, memory: torch.Tensor):
    """Run a stock post-norm decoder stack and also return each layer's head-averaged cross-attention.

    Same math and weights as `stack(tgt, memory)`; returns (out (B,Q,D), weights (layers, B, Q, K)).
    """
    x, maps = tgt, []
    for layer in stack.layers:
        sa = layer.self_attn(x, x, x, need_weights=False)[0]
        x = layer.norm1(x + layer.dropout1(sa))
        ca, w = layer.multihead_attn(x, memory, memory, need_weights=True, average_attn_weights=True)
        x = layer.norm2(x + layer.dropout2(ca))
        ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))
        x = layer.norm3(x + layer.dropout3(ff))
        maps.append(w)
    if stack.norm is not None:
        x = stack.norm(x)
    return x, torch.stack(maps)
