"""Model configurations as small dataclasses, with named presets (`paper`, `small`, `tiny`).

`ModelConfig` is what a checkpoint records (its name and every field, as JSON) and what loading compares:
weights trained with one config never load silently into another. Tokenizer fields live in
`ModelConfig.tokenizer` (a template; `tokenizer_config(part)` fills in the part and its input size);
generator fields are added alongside by the generator code.

`paper` reproduces the official EchoMask RVQ-VAE sizes exactly (256 codes x 256 dims x 6 levels, width
256, ~4.8 M parameters per part), so the official release can be converted 1:1 (see core/model/tokenizer.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import WeightsError
from ..motion.skeleton import PART_DIMS, PARTS
from .generator_config import GeneratorConfig, paper_generator, small_generator, tiny_generator

# Bump when the layout of saved weights or their metadata changes incompatibly. FORMAT_VERSION: tokenizer
# files; MODEL_FORMAT_VERSION: model bundles (2: the generator standardises its motion input and predicts
# `active_levels`; bundles of version 1 were trained without that and are refused with what to do).
FORMAT_VERSION = 1
MODEL_FORMAT_VERSION = 2


@dataclasses.dataclass
class TokenizerConfig:
    """One residual VQ-VAE (per body part). Defaults = the official RVQVAE."""

    part: str = "any"
    input_dim: int = 0              # per-frame features of the part (core.motion.skeleton.PART_DIMS)
    width: int = 256                # conv channels
    code_dim: int = 256             # latent / codebook vector size
    nb_code: int = 256              # codes per level
    num_quantizers: int = 6         # 1 base + 5 residual levels
    down_t: int = 2                 # stride-2 stages: time downsampling x 2**down_t (64 -> 16)
    stride_t: int = 2
    depth: int = 3                  # residual blocks per stage
    dilation_growth_rate: int = 3   # dilations 1, 3, 9 used in reverse order (9, 3, 1)
    dropout: float = 0.2            # inside each residual block (official value)
    ema_decay: float = 0.99         # EMA codebook update
    dead_code_threshold: float = 1.0  # codes with EMA usage below this are reset from encoder outputs
    quantizer_dropout: float = 0.2  # probability a training batch uses only a random prefix of levels
    commit_weight: float = 0.02     # commitment loss weight (averaged over levels)
    # Reconstruction loss weights.
    rec_weight: float = 1.0         # smooth L1 on normalised features
    geodesic_weight: float = 1.0    # rotation angle error (radians) on rot6d joints
    vel_weight: float = 1.0         # L1 on frame differences (normalised features)
    acc_weight: float = 1.0         # L1 on second differences
    pos_weight: float = 1.0         # joint positions (metres) by forward kinematics of the part; 0 = off
    expr_weight: float = 1.0        # face: MSE on expressions (+ vel/acc)
    contact_weight: float = 1.0     # lower: L1 on foot contacts
    trans_weight: float = 1.0       # lower: translation channels

    @property
    def downsample(self) -> int:
        return self.stride_t ** self.down_t


@dataclasses.dataclass
class ModelConfig:
    name: str = "custom"
    fps: float = 30.0
    window: int = 64                # frames per training / generation window (2.13 s)
    stride: int = 20                # training window stride
    seed_frames: int = 4            # leading frames of a window given as context
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)

    def tokenizer_config(self, part: str) -> TokenizerConfig:
        if part not in PARTS:
            raise ValueError(f"unknown body part {part!r}; expected one of {PARTS}")
        return dataclasses.replace(self.tokenizer, part=part, input_dim=PART_DIMS[part])

    @property
    def tokens_per_window(self) -> int:
        return self.window // self.tokenizer.downsample

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return dataclass_from_dict(cls, data)


def dataclass_from_dict(cls, data: dict[str, Any]):
    """Build a (nested) dataclass from a dict; unknown keys are an error so a mismatch is never silent."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise WeightsError(f"The weights' configuration has fields this version does not know: "
                           f"{sorted(unknown)}. They were made by a different version of EchoMask; "
                           f"use weights made for this version or update the add-on.")
    kwargs = {}
    for key, value in data.items():
        field = fields[key]
        # Nested dataclass fields are recognised by their default (annotations are strings at runtime).
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = dataclass_from_dict(type(default), value)
        elif isinstance(value, list) and isinstance(default, tuple):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _paper() -> ModelConfig:
    return ModelConfig(name="paper", tokenizer=TokenizerConfig(), generator=paper_generator())


def _small() -> ModelConfig:
    # Tokenizers train on 2 shared CPU cores in ~15 min; the four are ~13 MB of float32 weights. 128 codes
    # and a lower dead-code threshold suit the few thousand token positions of the shared data (with 256
    # codes and batches of 512 tokens most codes were reset at every step).
    return ModelConfig(name="small", tokenizer=TokenizerConfig(width=96, code_dim=96, nb_code=128,
                                                               dropout=0.1, dead_code_threshold=0.5),
                       generator=small_generator())


def _tiny() -> ModelConfig:
    # For tests: seconds on a CPU.
    return ModelConfig(name="tiny", tokenizer=TokenizerConfig(width=16, code_dim=8, nb_code=16, depth=2,
                                                              dropout=0.0, pos_weight=0.5),
                       generator=tiny_generator())


PRESETS = {"paper": _paper, "small": _small, "tiny": _tiny}


def get_config(name: str) -> ModelConfig:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
