"""Generation options: one carrier from the panel, the worker request and the CLI to the generation loop.

Every option has one default, here; the panel's properties, the CLI's flags and the worker read these
defaults instead of repeating them. Pure Python (the bpy layer imports this module).
"""
from __future__ import annotations

import dataclasses
import math

# Defaults. Temperature and steps were chosen by measurement on the held-out BEAT2 tails (docs/RESULTS.md).
DEFAULT_TEMPERATURE = 0.0      # "Variation": 0 = the model's most likely motion (arg-max, as in the paper)
DEFAULT_STEPS = 1              # decoding passes per window (1 = the paper's single pass)
DEFAULT_TOP_P = 1.0            # nucleus of level-0 sampling (1 = every code)
DEFAULT_STRATEGY = "refine"    # "refine": mask-predict (all at once, then re-predict the least sure);
#                                "commit": MaskGIT (keep the surest each pass)
DEFAULT_LEVELS = 1             # RVQ levels kept in the take (0 = every level the model predicts)
DEFAULT_SMOOTHING = 1.0        # Gaussian smoothing of the body's rotations, in frames (0 = none)
STRATEGIES = ("refine", "commit")
DEFAULT_LIPSYNC = 0.75         # phone-mouth strength for generated takes (docs/LIPSYNC.md)
MAX_INTENSITY = 2.0
MAX_TEMPERATURE = 2.0
MAX_STEPS = 16


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    seed: int = 0                          # same seed, same take (when temperature > 0)
    temperature: float = DEFAULT_TEMPERATURE  # shown as "Variation"
    steps: int = DEFAULT_STEPS
    top_p: float = DEFAULT_TOP_P           # sample level 0 among the most likely codes (when temperature > 0)
    strategy: str = DEFAULT_STRATEGY       # how a window's passes choose tokens (core.generation.decoding)
    levels: int = DEFAULT_LEVELS           # RVQ levels kept (1 = the coarse level only; 0 = all predicted)
    smoothing: float = DEFAULT_SMOOTHING   # body rotations smoothed over this many frames (sigma; 0 = none)
    intensity: float = 1.0                 # gesture amplitude about the take's mean pose (1 = as generated)
    travel: bool = False                   # let the character travel (False: stays in place)
    lipsync: float = DEFAULT_LIPSYNC       # 0 = the model's face alone
    parts: tuple[str, ...] | None = None   # None = every part
    device: str = "auto"                   # auto, cpu, cuda, mps
    threads: int = 1                       # torch CPU threads while generating

    def __post_init__(self):
        from ..errors import EchoMaskError

        t, i, ls = float(self.temperature), float(self.intensity), float(self.lipsync)
        if not (math.isfinite(t) and 0.0 <= t <= MAX_TEMPERATURE):
            raise EchoMaskError(f"Variation (temperature) must be between 0 and {MAX_TEMPERATURE:g} "
                                f"(0 = the model's most likely motion); got {self.temperature}.")
        if not (math.isfinite(i) and 0.0 <= i <= MAX_INTENSITY):
            raise EchoMaskError(f"Intensity must be between 0 and {MAX_INTENSITY:g} (1 = as generated); got {self.intensity}.")
        if not (math.isfinite(ls) and 0.0 <= ls <= 1.0):
            raise EchoMaskError(f"Lip-sync strength must be between 0 and 1 (0 = the model's face alone); got {self.lipsync}.")
        if not (0.0 < float(self.top_p) <= 1.0):
            raise EchoMaskError(f"top_p must be above 0 and at most 1 (1 = sample among every code); got {self.top_p}.")
        if not (math.isfinite(float(self.smoothing)) and 0.0 <= float(self.smoothing) <= 10.0):
            raise EchoMaskError(f"Smoothing must be between 0 and 10 frames; got {self.smoothing}.")
        if self.strategy not in STRATEGIES:
            raise EchoMaskError(f"Unknown decoding strategy {self.strategy!r}; choose {' or '.join(STRATEGIES)}.")
        if not (0 <= int(self.levels) <= 16):
            raise EchoMaskError(f"levels must be 0 (all) or a number of RVQ levels; got {self.levels}.")
        if not (1 <= int(self.steps) <= MAX_STEPS):
            raise EchoMaskError(f"Decoding passes must be between 1 and {MAX_STEPS}; got {self.steps}.")
        if self.parts is not None:
            from ..skeleton import PARTS

            parts = tuple(self.parts)
            bad = sorted(set(parts) - set(PARTS))
            if bad or not parts:
                raise EchoMaskError(f"Unknown body parts {bad}; choose from {', '.join(PARTS)}." if bad
                                    else "Choose at least one body part to generate.")
            object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "levels", int(self.levels))
        object.__setattr__(self, "smoothing", float(self.smoothing))
        object.__setattr__(self, "temperature", t)
        object.__setattr__(self, "intensity", i)
        object.__setattr__(self, "lipsync", ls)
        object.__setattr__(self, "top_p", float(self.top_p))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["parts"] = list(self.parts) if self.parts is not None else None
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "GenerationOptions":
        """The options among `data`'s keys (e.g. a worker request); other keys are ignored, None = default."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and v is not None})

    def replace(self, **changes) -> "GenerationOptions":
        return dataclasses.replace(self, **changes)
