"""Motion tokenizers: one residual VQ-VAE (RVQ-VAE) per body part, and the set of four with their
normalisation statistics (saved as one safetensors file).

Architecture (docs/METHOD.md §2; layer-equivalent to the official `RVQVAE` for the `paper` config):
  encoder: Conv1d(D->W, k3) -> ReLU -> down_t x [Conv1d(W->W, k4, s2, p1) -> ResNet1D] -> Conv1d(W->C, k3)
  decoder: Conv1d(C->W, k3) -> ReLU -> down_t x [ResNet1D -> nearest x2 -> Conv1d(W->W, k3)]
           -> Conv1d(W->W, k3) -> ReLU -> Conv1d(W->D, k3)
  ResNet1D = `depth` pre-activation residual blocks, dilations growth**i in reverse order (9, 3, 1):
           x + Dropout(Conv1d_k1(ReLU(Conv1d_k3,dil d(ReLU(x)))))
  quantizer: `num_quantizers` EMA codebooks (nb_code x C), each quantising the residual left by the ones
           before it; codebooks are buffers (not parameters).

State-dict names are the official ones, so a converter maps the official checkpoint 1:1 (identity on
names; the official file wraps them as {'model_state': {...}}, possibly with a 'module.' prefix):
  encoder.model.0.{weight,bias}                  Conv1d(D, W, 3)            (official: same name)
  encoder.model.{2,3}.0.{weight,bias}            strided Conv1d(W, W, 4)
  encoder.model.{2,3}.1.model.{0,1,2}.conv1.*    dilated Conv1d(W, W, 3), dilation 9, 3, 1
  encoder.model.{2,3}.1.model.{0,1,2}.conv2.*    Conv1d(W, W, 1)
  encoder.model.4.*                              Conv1d(W, C, 3)
  decoder.model.0.*                              Conv1d(C, W, 3)
  decoder.model.{2,3}.0.model.{0,1,2}.conv{1,2}.*  residual blocks (dilation 9, 3, 1)
  decoder.model.{2,3}.2.*                        Conv1d(W, W, 3) after the nearest x2 upsampling
  decoder.model.4.*                              Conv1d(W, W, 3)
  decoder.model.6.*                              Conv1d(W, D, 3)
  quantizer.layers.{0..5}.codebook               (256, 256) buffers
72 tensors per part, shapes equal to ../shared/data/official_parity/rvq_<part>.tsv (checked by
tests/test_tokenizer.py). The EMA statistics and the normalisation statistics are non-persistent buffers:
they are not part of this state dict (the official file has no such tensors either).

Inputs are *normalised* part features (core.motion.motion_repr.NormStats); the RVQVAE keeps a copy of its part's
stats (non-persistent) only to compute losses in physical units (rotation angles, metres, contacts).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..motion import rotations as R
from ..errors import WeightsError
from ..motion.motion_repr import (FACE_EXPR, LOWER_CONTACTS, LOWER_TRANS, PART_ROT_DIMS, PART_ROT_JOINTS, NormStats)
from ..motion.skeleton import PARENTS, PARTS, REST_JOINTS_YUP
from .config import FORMAT_VERSION, PRESETS, ModelConfig, TokenizerConfig, dataclass_from_dict, get_config

FILE_KIND = "echomask-tokenizers"


# ----------------------------------------------------------------------------------------------------------
# Conv encoder / decoder

class ResConv1DBlock(nn.Module):
    """Pre-activation residual block: x + Dropout(conv2(ReLU(conv1(ReLU(x)))))."""

    def __init__(self, width: int, dilation: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return x + self.dropout(self.conv2(F.relu(self.conv1(F.relu(x)))))


class Resnet1D(nn.Module):
    def __init__(self, width: int, depth: int, growth: int, dropout: float):
        super().__init__()
        dilations = [growth ** i for i in range(depth)][::-1]  # 9, 3, 1: widest context first
        self.model = nn.Sequential(*[ResConv1DBlock(width, d, dropout) for d in dilations])

    def forward(self, x):
        return self.model(x)


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        w = cfg.width
        layers = [nn.Conv1d(cfg.input_dim, w, 3, 1, 1), nn.ReLU()]
        for _ in range(cfg.down_t):
            layers.append(nn.Sequential(
                nn.Conv1d(w, w, cfg.stride_t * 2, cfg.stride_t, cfg.stride_t // 2),
                Resnet1D(w, cfg.depth, cfg.dilation_growth_rate, cfg.dropout)))
        layers.append(nn.Conv1d(w, cfg.code_dim, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):  # (B, D, T) -> (B, C, T / 4)
        return self.model(x)


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        w = cfg.width
        layers = [nn.Conv1d(cfg.code_dim, w, 3, 1, 1), nn.ReLU()]
        for _ in range(cfg.down_t):
            layers.append(nn.Sequential(
                Resnet1D(w, cfg.depth, cfg.dilation_growth_rate, cfg.dropout),
                nn.Upsample(scale_factor=cfg.stride_t, mode="nearest"),
                nn.Conv1d(w, w, 3, 1, 1)))
        layers += [nn.Conv1d(w, w, 3, 1, 1), nn.ReLU(), nn.Conv1d(w, cfg.input_dim, 3, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, z):  # (B, C, N) -> (B, D, 4N)
        return self.model(z)


# ----------------------------------------------------------------------------------------------------------
# Residual quantiser with EMA codebooks

class EMACodebook(nn.Module):
    """One level: nearest-code lookup, EMA update (decay), dead-code reset from the current inputs."""

    def __init__(self, nb_code: int, code_dim: int, decay: float, dead_threshold: float):
        super().__init__()
        self.nb_code, self.code_dim, self.decay, self.dead_threshold = nb_code, code_dim, decay, dead_threshold
        self.register_buffer("codebook", torch.zeros(nb_code, code_dim))
        # Training state (not in the state dict; saved separately in resumable training checkpoints).
        self.register_buffer("ema_count", torch.zeros(nb_code), persistent=False)
        self.register_buffer("ema_sum", torch.zeros(nb_code, code_dim), persistent=False)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool), persistent=False)

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, C) -> indices (M,) of the closest codes (squared Euclidean distance)."""
        cb = self.codebook
        dist = x.pow(2).sum(-1, keepdim=True) - 2.0 * x @ cb.t() + cb.pow(2).sum(-1)[None]
        return dist.argmin(-1)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.codebook)

    @staticmethod
    def _random_rows(x: torch.Tensor, n: int) -> torch.Tensor:
        pick = torch.randint(0, x.shape[0], (n,), device=x.device) if x.shape[0] < n else \
            torch.randperm(x.shape[0], device=x.device)[:n]
        return x[pick]

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, dist=None) -> None:
        """First training batch: codes = random encoder outputs (so every code starts near the data).
        With `dist` (several processes) the rows are drawn from the global batch by rank 0 and shared."""
        if dist is not None:
            x = dist.gather_rows_varying(x)
        self.codebook.copy_(self._random_rows(x, self.nb_code))
        if dist is not None:
            dist.broadcast(self.codebook)
        self.ema_sum.copy_(self.codebook)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, x: torch.Tensor, idx: torch.Tensor, dist=None) -> float:
        """EMA update with inputs x (M, C) assigned to idx (M,); returns the share of codes reset.
        With `dist` the counts and sums are those of the global batch (summed over ranks) and dead codes
        are refilled with rows that rank 0 draws from the global batch, so every rank's codebook stays
        the one a single process would have."""
        counts = torch.bincount(idx, minlength=self.nb_code).to(x.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, x)
        if dist is not None:
            counts, sums = dist.sum(counts), dist.sum(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        eps = 1e-5
        smoothed = (self.ema_count + eps) / (total + self.nb_code * eps) * total  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        dead = self.ema_count < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:  # the same on every rank: ema_count is
            fresh = self._random_rows(x if dist is None else dist.gather_rows_varying(x), n_dead)
            if dist is not None:
                dist.broadcast(fresh)
            self.codebook[dead] = fresh
            self.ema_sum[dead] = fresh
            self.ema_count[dead] = 1.0
        return n_dead / self.nb_code


class ResidualVQ(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.num_quantizers = cfg.num_quantizers
        self.quantizer_dropout = cfg.quantizer_dropout
        self.layers = nn.ModuleList([EMACodebook(cfg.nb_code, cfg.code_dim, cfg.ema_decay, cfg.dead_code_threshold)
                                     for _ in range(cfg.num_quantizers)])

    def quantize(self, z: torch.Tensor, num_levels: int | None = None):
        """z (M, C) -> codes (M, L) long (-1 for unused levels), quantised sum (M, C). No updates."""
        levels = self.num_quantizers if num_levels is None else num_levels
        residual = z
        out = torch.zeros_like(z)
        codes = torch.full((z.shape[0], self.num_quantizers), -1, dtype=torch.long, device=z.device)
        for k, layer in enumerate(self.layers[:levels]):
            idx = layer.nearest(residual)
            q = layer.lookup(idx)
            codes[:, k] = idx
            out = out + q
            residual = residual - q
        return codes, out

    def forward_train(self, z: torch.Tensor, dist=None):
        """Training pass over z (M, C): EMA updates, commitment loss averaged over the levels used,
        quantiser dropout (a random prefix of levels for a share of batches). Returns codes, quantised
        (straight-through), commitment loss, stats dict.

        With `dist` (several processes, z = this rank's rows, possibly none) the codebook statistics are
        those of the global batch, rank 0 makes the random choices, and the commitment loss is this rank's
        share of the global mean (so the ranks' losses add up to one process's)."""
        levels = self.num_quantizers
        if self.quantizer_dropout > 0 and torch.rand(()) < self.quantizer_dropout:
            levels = int(torch.randint(1, self.num_quantizers + 1, ()))
        if dist is not None:
            levels = int(dist.broadcast(torch.tensor(levels, device=z.device)))
            global_elements = float(dist.sum(torch.tensor(float(z.numel()), dtype=torch.float64, device=z.device)))
        residual = z.detach()
        quant_sum = torch.zeros_like(z)
        commit = z.new_zeros(())
        codes = torch.full((z.shape[0], self.num_quantizers), -1, dtype=torch.long, device=z.device)
        reset = 0.0
        perplexity = []
        z_res = z  # with gradient, for the commitment loss of each level
        for k, layer in enumerate(self.layers[:levels]):
            if not bool(layer.initialized):
                layer.init_from(residual, dist)
            idx = layer.nearest(residual)
            q = layer.lookup(idx).detach()
            if dist is None:
                commit = commit + F.mse_loss(z_res, q)
            else:
                commit = commit + (z_res - q).pow(2).sum() / global_elements
            reset += layer.update(residual, idx, dist)
            q = layer.lookup(idx).detach()  # after the update
            codes[:, k] = idx
            quant_sum = quant_sum + q
            residual = residual - q
            z_res = z_res - q
            used = torch.bincount(idx, minlength=layer.nb_code).float()
            if dist is not None:
                used = dist.sum(used)
            probs = used / (idx.numel() if dist is None else used.sum())
            perplexity.append(float(torch.exp(-(probs * (probs + 1e-10).log()).sum())))
        quantized = z + (quant_sum - z).detach()
        stats = {"levels": levels, "reset_share": reset / levels, "perplexity0": perplexity[0]}
        return codes, quantized, commit / levels, stats


# ----------------------------------------------------------------------------------------------------------
# The RVQ-VAE of one part

def _rest_offsets() -> np.ndarray:
    rest = REST_JOINTS_YUP
    return np.stack([rest[j] - (rest[p] if p >= 0 else 0 * rest[j]) for j, p in enumerate(PARENTS)])


def _chain_joints(joints) -> list[int]:
    """The part's joints plus all their ancestors, sorted (parents before children)."""
    need = set()
    for j in joints:
        while j >= 0 and j not in need:
            need.add(j)
            j = PARENTS[j]
    return sorted(need)


class RVQVAE(nn.Module):
    """Residual VQ-VAE of one body part. All tensors are batch-first (B, T, D)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        if cfg.part not in PARTS:
            raise ValueError(f"TokenizerConfig.part must be one of {PARTS}, got {cfg.part!r}")
        self.cfg = cfg
        self.part = cfg.part
        self.encoder = Encoder(cfg)   # registration order = the official state-dict order
        self.decoder = Decoder(cfg)
        self.quantizer = ResidualVQ(cfg)
        d = cfg.input_dim
        self.register_buffer("norm_mean", torch.zeros(d), persistent=False)
        self.register_buffer("norm_std", torch.ones(d), persistent=False)
        self.register_buffer("rest_offsets", torch.tensor(_rest_offsets(), dtype=torch.float32), persistent=False)

    # --- API used by the generator --------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return self.cfg.num_quantizers

    @property
    def downsample(self) -> int:
        return self.cfg.downsample

    def set_norm_stats(self, mean, std) -> None:
        self.norm_mean.copy_(torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.norm_std.copy_(torch.as_tensor(np.asarray(std), dtype=torch.float32))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.cfg.input_dim:
            raise ValueError(f"{self.part} tokenizer expects (batch, frames, {self.cfg.input_dim}), got {tuple(x.shape)}")
        if x.shape[1] % self.downsample:
            raise ValueError(f"frame count {x.shape[1]} must be a multiple of {self.downsample}")

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) normalised features -> (B, T/4, C) pre-quantisation latent."""
        self._check_input(x)
        return self.encoder(x.transpose(1, 2)).transpose(1, 2)

    def quantize(self, latent: torch.Tensor, num_levels: int | None = None):
        """(B, N, C) -> codes (B, N, L) long, quantised latent (B, N, C) (sum of the levels' codes)."""
        b, n, c = latent.shape
        codes, q = self.quantizer.quantize(latent.reshape(b * n, c), num_levels)
        return codes.reshape(b, n, -1), q.reshape(b, n, c)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> codes (B, T/4, L) long (all levels, nearest code per level)."""
        return self.quantize(self.encode_latent(x))[0]

    def latent_per_level(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, N, L) -> (B, N, L, C) code vectors per level (zeros where a code is -1). L may be less
        than the tokenizer's levels (a generator that predicts the coarse levels only)."""
        per = []
        for k, layer in enumerate(self.quantizer.layers[:codes.shape[-1]]):
            idx = codes[..., k]
            vec = layer.lookup(idx.clamp(min=0))
            per.append(vec * (idx >= 0).unsqueeze(-1).to(vec.dtype))
        return torch.stack(per, dim=-2)

    def codes_to_latent(self, codes: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """codes (B, N, L) -> (B, N, C): sum of the first `levels` levels' code vectors (default all)."""
        per = self.latent_per_level(codes)
        return per[..., : (levels or self.num_levels), :].sum(-2)

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, 4N, D) normalised features."""
        return self.decoder(latent.transpose(1, 2)).transpose(1, 2)

    def decode(self, codes: torch.Tensor, detail: torch.Tensor | None = None) -> torch.Tensor:
        """codes (B, N, L) -> (B, 4N, D) normalised features (one pass over the whole sequence).
        detail (B, N) or (N,): weight of levels 1.. per token (None = 1: every level as coded; 0 = level 0
        alone), so a take can blend smoothly between full detail and the coarse motion."""
        if detail is None:
            return self.decode_latent(self.codes_to_latent(codes))
        per = self.latent_per_level(codes)
        w = detail.to(per.dtype).expand(per.shape[:2]).unsqueeze(-1)          # (B, N, 1)
        return self.decode_latent(per[..., 0, :] + w * per[..., 1:, :].sum(-2))

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None, dist=None, weight_total=None,
                autocast=None):
        """x (B, T, D) normalised -> (reconstruction (B, T, D), losses dict with 'total').

        weight (B,) per-window weights (e.g. ground truth 1.0, model outputs 0.3). In training mode the
        codebooks are updated (EMA) and some batches use fewer levels (quantiser dropout); in eval mode
        quantisation is a plain nearest-code lookup over all levels.

        Distributed training: `dist` (core.training.distributed.DistContext) makes the codebook updates global and
        `weight_total` (the global batch's summed weight) makes the losses this rank's share of the global
        loss. `autocast` (a context, core.precision) wraps encoder and decoder; quantiser and losses run
        in float32.
        """
        amp = autocast if autocast is not None else contextlib.nullcontext()
        with amp:
            latent = self.encode_latent(x)
        latent = latent.float()
        b, n, c = latent.shape
        if self.training:
            codes, q, commit, qstats = self.quantizer.forward_train(latent.reshape(b * n, c), dist)
        else:
            codes, qsum = self.quantizer.quantize(latent.reshape(b * n, c))
            flat = latent.reshape(b * n, c)
            commit = F.mse_loss(flat, qsum)
            q = flat + (qsum - flat).detach()
            qstats = {}
        with amp:
            recon = self.decode_latent(q.reshape(b, n, c))
        losses = self.losses(recon.float(), x, weight, weight_total)
        losses["commit"] = commit
        losses["total"] = losses["total"] + self.cfg.commit_weight * commit
        losses.update({k: torch.tensor(float(v)) for k, v in qstats.items()})
        return recon, losses

    # --- losses ---------------------------------------------------------------------------------------
    def losses(self, recon: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
               weight_total: torch.Tensor | None = None) -> dict:
        """Reconstruction losses between normalised recon and target (B, T, D). `weight_total`: the
        normaliser of the weights when this batch is one rank's share of a global batch (else its own sum)."""
        cfg = self.cfg
        b = recon.shape[0]
        w = torch.ones(b, device=recon.device) if weight is None else weight.to(recon.device, recon.dtype)
        w = w / (w.sum() if weight_total is None else weight_total).clamp(min=1e-8)

        def wmean(per_elem):  # mean over all but the batch axis, then weighted over the batch
            return (per_elem.reshape(b, -1).mean(-1) * w).sum()

        out = {}
        out["rec"] = wmean(F.smooth_l1_loss(recon, target, reduction="none", beta=0.1))
        vel_r, vel_t = recon[:, 1:] - recon[:, :-1], target[:, 1:] - target[:, :-1]
        out["vel"] = wmean((vel_r - vel_t).abs())
        out["acc"] = wmean(((vel_r[:, 1:] - vel_r[:, :-1]) - (vel_t[:, 1:] - vel_t[:, :-1])).abs())
        raw_r = recon * self.norm_std + self.norm_mean
        raw_t = target * self.norm_std + self.norm_mean
        nrot = PART_ROT_DIMS[self.part]
        mat_r = R.rot6d_to_matrix(raw_r[..., :nrot].reshape(b, -1, nrot // 6, 6))
        mat_t = R.rot6d_to_matrix(raw_t[..., :nrot].reshape(b, -1, nrot // 6, 6))
        out["geodesic"] = wmean(geodesic_angle(mat_r, mat_t))
        total = cfg.rec_weight * out["rec"] + cfg.vel_weight * out["vel"] + cfg.acc_weight * out["acc"] \
            + cfg.geodesic_weight * out["geodesic"]
        if cfg.pos_weight > 0 and self.part != "face":
            out["pos"] = wmean((self.part_positions(mat_r) - self.part_positions(mat_t)).abs())
            total = total + cfg.pos_weight * out["pos"]
        if self.part == "face":
            er, et = raw_r[..., FACE_EXPR], raw_t[..., FACE_EXPR]
            ve_r, ve_t = er[:, 1:] - er[:, :-1], et[:, 1:] - et[:, :-1]
            out["expr"] = wmean((er - et) ** 2) + wmean((ve_r - ve_t) ** 2) \
                + wmean(((ve_r[:, 1:] - ve_r[:, :-1]) - (ve_t[:, 1:] - ve_t[:, :-1])) ** 2)
            total = total + cfg.expr_weight * out["expr"]
        if self.part == "lower":
            out["contact"] = wmean((raw_r[..., LOWER_CONTACTS] - raw_t[..., LOWER_CONTACTS]).abs())
            tr, tt = recon[..., LOWER_TRANS], target[..., LOWER_TRANS]
            out["trans"] = wmean((tr - tt).abs()) + wmean(((tr[:, 1:] - tr[:, :-1]) - (tt[:, 1:] - tt[:, :-1])).abs())
            total = total + cfg.contact_weight * out["contact"] + cfg.trans_weight * out["trans"]
        out["total"] = total
        return out

    def part_positions(self, mats: torch.Tensor) -> torch.Tensor:
        """Local rotations of the part's joints (B, T, J, 3, 3) -> their positions (B, T, J, 3), metres,
        by forward kinematics with every other joint at rest (the part's own shape of motion)."""
        joints = PART_ROT_JOINTS[self.part]
        slot = {j: i for i, j in enumerate(joints)}
        glob_r, glob_p = {}, {}
        for j in _chain_joints(joints):
            p = PARENTS[j]
            local = mats[..., slot[j], :, :] if j in slot else None
            if p < 0:
                glob_p[j] = self.rest_offsets[j].expand(*mats.shape[:2], 3)
                glob_r[j] = local
            else:
                off = self.rest_offsets[j]
                parent_r = glob_r[p]
                glob_p[j] = glob_p[p] + (off if parent_r is None else (parent_r @ off))
                glob_r[j] = parent_r if local is None else (local if parent_r is None else parent_r @ local)
        return torch.stack([glob_p[j] for j in joints], dim=-2)


def geodesic_angle(m1: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    """Rotation angle (radians) between (..., 3, 3) matrices."""
    cos = ((m1.transpose(-1, -2) @ m2).diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) * 0.5
    return torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))


# ----------------------------------------------------------------------------------------------------------
# The four tokenizers + normalisation stats, saved as one safetensors file

class TokenizerSet(nn.Module):
    """face / upper / hands / lower RVQ-VAEs and the NormStats that map raw part features to their inputs."""

    def __init__(self, config: ModelConfig | str, stats: NormStats | None = None):
        super().__init__()
        self.config = get_config(config) if isinstance(config, str) else config
        self.tokenizers = nn.ModuleDict({p: RVQVAE(self.config.tokenizer_config(p)) for p in PARTS})
        self.set_stats(stats or NormStats.identity())
        self.meta: dict = {}

    def __getitem__(self, part: str) -> RVQVAE:
        return self.tokenizers[part]

    def set_stats(self, stats: NormStats) -> None:
        self.stats = stats
        for p in PARTS:
            self.tokenizers[p].set_norm_stats(stats.mean[p], stats.std[p])

    def normalize(self, part: str, x):
        return self.stats.normalize(part, x)

    def denormalize(self, part: str, x):
        return self.stats.denormalize(part, x)

    @torch.no_grad()
    def encode_parts(self, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{part: (B, T, D) raw features} -> {part: codes (B, T/4, L)}."""
        return {p: self.tokenizers[p].encode(self.normalize(p, x)) for p, x in parts.items()}

    def decode_parts(self, codes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{part: codes (B, N, L)} -> {part: (B, 4N, D) raw features}."""
        return {p: self.denormalize(p, self.tokenizers[p].decode(c)) for p, c in codes.items()}

    # --- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra_meta: dict | None = None) -> None:
        """One safetensors file: tensors 'tokenizer.<part>.<name>' and 'stats.<part>.{mean,std}', plus
        JSON metadata (kind, format version, config name and fields, training info). Written atomically."""
        from safetensors.torch import save_file

        path = os.fspath(path)
        tensors = {}
        for p in PARTS:
            for name, t in self.tokenizers[p].state_dict().items():
                tensors[f"tokenizer.{p}.{name}"] = t.detach().cpu().contiguous()
        for name, arr in self.stats.to_arrays().items():
            tensors[name] = torch.from_numpy(arr.copy())
        meta = dict(self.meta)
        meta.update(extra_meta or {})
        # Only the tokenizer part of the config is recorded: generator fields may evolve independently.
        header = {"kind": FILE_KIND, "format_version": str(FORMAT_VERSION), "config_name": self.config.name,
                  "tokenizer_config": json.dumps(dataclasses.asdict(self.config.tokenizer)),
                  "info": json.dumps(meta)}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".partial"
        save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, expected_config: ModelConfig | str | None = None,
             device: str | torch.device = "cpu") -> "TokenizerSet":
        """Load and check a tokenizer file; raises WeightsError that says what does not match and what to do."""
        from safetensors import safe_open

        path = os.fspath(path)
        name = os.path.basename(path)
        if not os.path.isfile(path):
            raise WeightsError(f"Tokenizer weights not found: {path}. Train them with "
                               f"`python -m core train-tokenizers` or point to the right file.")
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise WeightsError(f"{name} is not a readable safetensors weights file ({exc}); "
                               f"the download or copy may be incomplete.") from None
        if header.get("kind") != FILE_KIND:
            raise WeightsError(f"{name} does not hold EchoMask motion tokenizers (kind "
                               f"{header.get('kind')!r}); choose the tokenizer weights file.")
        version = header.get("format_version")
        if version != str(FORMAT_VERSION):
            raise WeightsError(f"{name} has weights format version {version}, but this version of EchoMask "
                               f"reads version {FORMAT_VERSION}; use weights made for this version "
                               f"(or retrain them).")
        try:
            tok_cfg = dataclass_from_dict(TokenizerConfig, json.loads(header["tokenizer_config"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise WeightsError(f"{name}: its tokenizer configuration is missing or unreadable ({exc}); "
                               f"the file is damaged or from another version.") from None
        cfg_name = header.get("config_name", "custom")
        base = get_config(cfg_name) if cfg_name in PRESETS else ModelConfig(name=cfg_name)
        config = dataclasses.replace(base, tokenizer=tok_cfg)
        if expected_config is not None:
            want = get_config(expected_config) if isinstance(expected_config, str) else expected_config
            if want.name != config.name or want.tokenizer != config.tokenizer:
                diff = _config_diff(want.tokenizer, config.tokenizer)
                raise WeightsError(f"{name} was trained with the '{config.name}' model config, but "
                                   f"'{want.name}' was asked for{(' (differences: ' + diff + ')') if diff else ''}. "
                                   f"Use weights trained with '{want.name}', or select the '{config.name}' config.")
        stats = NormStats.from_arrays({k: v.numpy() for k, v in tensors.items() if k.startswith("stats.")})
        obj = cls(config, stats)
        for p in PARTS:
            prefix = f"tokenizer.{p}."
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                obj.tokenizers[p].load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise WeightsError(f"{name}: the {p} tokenizer's tensors do not fit the '{config.name}' "
                                   f"config ({str(exc).splitlines()[0]}); the file is damaged or from "
                                   f"another version.") from None
            for layer in obj.tokenizers[p].quantizer.layers:
                layer.initialized.fill_(True)  # trained codebooks: never re-initialise when fine-tuning
        obj.meta = json.loads(header.get("info", "{}"))
        return obj.to(device).eval()


def _config_diff(a: TokenizerConfig, b: TokenizerConfig) -> str:
    da, db = a.__dict__, b.__dict__
    return ", ".join(f"{k}: {da[k]} vs {db[k]}" for k in da if k != "part" and da[k] != db.get(k))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
