"""The project's own FGD evaluator: a skeleton-aware 1-D convolutional autoencoder on 55 x rot6d.

NOT the paper's evaluator. EchoMask/EMAGE report FGD with EMAGE's pretrained `AESKConv_240_100`, whose
weights are not available here; FGD figures from this evaluator are on a different scale and must not be
compared with published FGD numbers. Every printout of an FGD from it says so (`FGD_NOTE`).

Architecture (small enough to train on a 2-core CPU in minutes, < 5 MB of weights):
  input (B, T, 55, 6) rot6d, normalised per channel with the training data's mean/std
  encoder: SkeletonConv 6->8 (k3) -> SkeletonConv 8->8 (k4, stride 2) -> Conv1d 440->128 (k4, stride 2)
           -> Conv1d 128->64 (k3): one 64-d latent per 4 frames
  decoder: the mirror image with nearest x2 upsampling.
A SkeletonConv gives each joint its own temporal filters over the joint, its parent and its children
(neighbourhood of graph distance 1, zero-padded to 7), as a grouped Conv1d with one group per joint.
FGD = Fréchet distance between the latents of generated and real motion, sequences trimmed to multiples of
32 frames as EMAGE does.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import torch
from torch import nn

from ..motion import rotations as R
from ..errors import WeightsError
from ..motion.skeleton import NUM_JOINTS, PARENTS, children
from ..motion.take import Take

FORMAT = "echomask-fgd-evaluator"
FORMAT_VERSION = 1
FGD_NOTE = ("FGD from this project's own evaluator (skeleton-conv autoencoder trained on the shared BEAT2 "
            "takes), NOT the paper's (EMAGE's AESKConv_240_100 is not available): not comparable with "
            "published FGD numbers.")


@dataclasses.dataclass(frozen=True)
class FGDEvaluatorConfig:
    joint_channels: int = 8     # features per joint after the skeleton convolutions
    hidden: int = 128
    latent: int = 64            # size of one latent vector (one per 4 frames)
    trim_multiple: int = 32     # sequences are cut to a multiple of this many frames (EMAGE: 32)

    @property
    def downsample(self) -> int:
        return 4


def neighbourhoods(max_size: int = 7) -> np.ndarray:
    """(55, max_size) joint indices: self, parent, children; padded with 55 (a zero joint)."""
    table = np.full((NUM_JOINTS, max_size), NUM_JOINTS, np.int64)
    for j in range(NUM_JOINTS):
        near = [j] + ([PARENTS[j]] if PARENTS[j] >= 0 else []) + children(j)
        if len(near) > max_size:
            raise ValueError(f"joint {j} has {len(near)} neighbours, more than {max_size}")
        table[j, :len(near)] = near
    return table


class SkeletonConv(nn.Module):
    """Per-joint temporal convolution over each joint's skeleton neighbourhood.

    Only the neighbourhood weights are parameters (55 x out x 7 x in x k); each call scatters them into a
    dense, mostly-zero Conv1d kernel, because one dense convolution is several times faster on CPUs than
    a 55-group convolution or per-joint matrix products."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 1):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel, self.stride, self.padding = in_ch, out_ch, kernel, stride, padding
        table = torch.as_tensor(neighbourhoods())
        self.register_buffer("rows", torch.arange(NUM_JOINTS).repeat_interleave(table.shape[1]), persistent=False)
        self.register_buffer("cols", table.reshape(-1), persistent=False)
        fan_in = table.shape[1] * in_ch * kernel
        bound = 1.0 / fan_in ** 0.5  # PyTorch's default Conv1d initialisation range
        self.weight = nn.Parameter(torch.empty(NUM_JOINTS * table.shape[1], out_ch, in_ch, kernel).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(NUM_JOINTS * out_ch).uniform_(-bound, bound))

    def dense_kernel(self) -> torch.Tensor:
        """(55 * out, 55 * in, k); padding slots land on a 56th joint that is cut off."""
        dense = self.weight.new_zeros(NUM_JOINTS, NUM_JOINTS + 1, self.out_ch, self.in_ch, self.kernel)
        dense = dense.index_put((self.rows, self.cols), self.weight, accumulate=True)[:, :NUM_JOINTS]
        return dense.permute(0, 2, 1, 3, 4).reshape(NUM_JOINTS * self.out_ch, NUM_JOINTS * self.in_ch, self.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 55 * in_ch, T) -> (B, 55 * out_ch, T')."""
        return nn.functional.conv1d(x, self.dense_kernel(), self.bias, self.stride, self.padding)


class FGDEvaluator(nn.Module):
    def __init__(self, config: FGDEvaluatorConfig = FGDEvaluatorConfig()):
        super().__init__()
        self.config = config
        c, h, z = config.joint_channels, config.hidden, config.latent
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.encoder = nn.Sequential(
            SkeletonConv(6, c, 3), act(),
            SkeletonConv(c, c, 4, stride=2), act(),
            nn.Conv1d(NUM_JOINTS * c, h, 4, 2, 1), act(),
            nn.Conv1d(h, z, 3, 1, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv1d(z, h, 3, 1, 1), act(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(h, NUM_JOINTS * c, 3, 1, 1), act(),
            nn.Upsample(scale_factor=2, mode="nearest"), SkeletonConv(c, c, 3), act(),
            SkeletonConv(c, 6, 3),
        )
        self.register_buffer("mean", torch.zeros(NUM_JOINTS * 6))
        self.register_buffer("std", torch.ones(NUM_JOINTS * 6))

    def _to_channels(self, rot6d: torch.Tensor) -> torch.Tensor:
        b, t = rot6d.shape[:2]
        x = (rot6d.reshape(b, t, -1) - self.mean) / self.std
        return x.transpose(1, 2)                               # (B, 330, T): joint j at 6j..6j+5

    def encode(self, rot6d: torch.Tensor) -> torch.Tensor:
        """(B, T, 55, 6), T a multiple of 4 -> (B, T / 4, latent)."""
        return self.encoder(self._to_channels(rot6d)).transpose(1, 2)

    def forward(self, rot6d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (reconstruction in normalised units (B, T, 330), target in the same units)."""
        x = self._to_channels(rot6d)
        return self.decoder(self.encoder(x)).transpose(1, 2), x.transpose(1, 2)


def take_rot6d(take: Take) -> np.ndarray:
    """(N, 55, 6) float32 rot6d of a take (pytorch3d row convention, core.motion.rotations)."""
    mats = R.axis_angle_to_matrix(take.poses.astype(np.float64).reshape(-1, NUM_JOINTS, 3))
    return R.matrix_to_rot6d(mats).astype(np.float32)


@torch.no_grad()
def latents(evaluator: FGDEvaluator, takes: list[Take]) -> np.ndarray:
    """Latent vectors (M, latent) of all takes, each trimmed to a multiple of 32 frames (EMAGE's rule);
    takes shorter than 32 frames contribute nothing."""
    evaluator.eval()
    out = []
    m = evaluator.config.trim_multiple
    for take in takes:
        n = take.num_frames - take.num_frames % m
        if n == 0:
            continue
        x = torch.as_tensor(take_rot6d(take)[:n])[None]
        out.append(evaluator.encode(x)[0].numpy().astype(np.float64))
    if not out:
        raise ValueError(f"no take is {m} frames or longer; FGD needs at least {m} frames per take")
    return np.concatenate(out, axis=0)


def save_evaluator(evaluator: FGDEvaluator, path: str | os.PathLike, info: dict | None = None) -> None:
    """safetensors file: weights + normalisation, config and provenance in its metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in evaluator.state_dict().items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "config": json.dumps(dataclasses.asdict(evaluator.config)), "note": FGD_NOTE}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (info or {}).items()})
    path = os.fspath(path)
    tmp = path + ".partial"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def load_evaluator(path: str | os.PathLike) -> tuple[FGDEvaluator, dict]:
    """Load without unpickling; raises WeightsError with what to do when the file does not fit."""
    from safetensors import safe_open

    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise WeightsError(f"FGD evaluator weights not found: {path}. Train them with "
                           f"`python -m core train-fgd-evaluator` or restore weights/fgd_evaluator.safetensors.")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise WeightsError(f"{name} is not a readable safetensors file ({exc}); re-download or retrain it.") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{name} is not an FGD evaluator file (format {meta.get('format')!r}).")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise WeightsError(f"{name} has FGD evaluator format {meta.get('format_version')}, this code reads "
                           f"{FORMAT_VERSION}; retrain with `python -m core train-fgd-evaluator`.")
    try:
        config = FGDEvaluatorConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{name}: its config does not fit this code ({exc}); retrain the evaluator.") from None
    evaluator = FGDEvaluator(config)
    expected = evaluator.state_dict()
    wrong = sorted(k for k in expected if k not in tensors or tensors[k].shape != expected[k].shape)
    if wrong or set(tensors) - set(expected):
        raise WeightsError(f"{name}: weights do not match the evaluator's layers (e.g. {wrong[:3]}); retrain it.")
    evaluator.load_state_dict(tensors)
    evaluator.eval()
    return evaluator, meta
