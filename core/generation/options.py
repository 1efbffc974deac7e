"""Generation options: one carrier from the panel, the worker request and the CLI to the generation loop.

Every option has one default, here; the panel's properties, the CLI's flags and the worker read these
defaults instead of repeating them. Pure Python (the bpy layer imports this module).
"""
from __future__ import annotations

import dataclasses
import math

# Defaults, chosen by measurement on speech no training used (bench/select_checkpoint.py: BEAT2 speaker 2's
# speech-only clips against the training capture; weights/MODEL_CARD.md), never on the held-out tails that
# docs/RESULTS.md scores. With the bundled model and every predicted RVQ level, arg-max (0) is calm (0.62x
# the capture's joint speed); 1.0 moves at 0.75-0.87x with jerk 0.96-1.10x; FGD is flat from 0.6 to 1.15
# (85.1-87.5) and worse at 1.3 (91.4), so 1.0 stays, the speed nearest the capture's without more jerk.
# (Without the token prior. With it, the bundled weights' default since 2026-12-07, 0 and 1 tie: FGD 80.0 / 80.1,
# speed 0.91 / 0.89x; 1.0 stays.)
DEFAULT_TEMPERATURE = 1.0      # "Variation": 0 = the model's most likely motion (arg-max, as in the paper)
DEFAULT_STEPS = 1              # decoding passes per window (1 = the paper's single pass; 4-8 passes make the
#                                bundled model calmer and worse: speed 0.28-0.57x, FGD 133-234 vs 86)
DEFAULT_TOP_P = 1.0            # nucleus of level-0 sampling (1 = every code)
DEFAULT_COHERENCE = 0.0        # correlation of neighbouring tokens' sampling noise (0 = independent draws)
MAX_COHERENCE = 0.99
DEFAULT_STRATEGY = "refine"    # "refine": mask-predict (all at once, then re-predict the least sure);
#                                "commit": MaskGIT (keep the surest each pass)
DEFAULT_LEVELS = None          # RVQ levels kept in the take; None = what the weights record as measured best
#                                for them (`python -m core set-decoding`), else the coarse level (1), with or
#                                without a retrieval bank. The bundled weights record 0 (every level; speech-only
#                                clips, 5 seeds, FGD 86.1 vs 111.2; with a bank at λ 8, 67.7 vs 80.9, and on the
#                                held-out tails 106.7 vs 111.8)
DEFAULT_SMOOTHING = 1.0        # Gaussian smoothing of the body's rotations, in frames (0 = none)
DEFAULT_PAUSE_VARIATION = 0.0  # share of the Variation used where nobody speaks (1 = the same everywhere):
#                                0 = the model's most likely motion in pauses, its calmest, and the coarse RVQ
#                                level only there (a 4 s pause: 0.12 m/s mean joint speed, 5 seeds, vs 0.34 in
#                                the speech around it), with no measured cost in speech
STRATEGIES = ("refine", "commit")
FACE_SOURCES = ("auto", "head", "tokens")  # auto = the speech face head when the weights have one, else tokens
DEFAULT_LIPSYNC = 0.75         # phone-mouth strength for generated takes (docs/LIPSYNC.md)
DEFAULT_RETRIEVAL_WEIGHT = 8.0  # level-0 prior from a retrieval bank (core.generation.retrieval), used only with a
#                                bank. Best of 4 / 8 / 16 for the bundled weights on the speech-only clips (67.7 at
#                                8 vs 74.9 / 68.6, every level) and on the held-out tails (106.7 vs 131.3 / 110.1);
#                                the speech-only clips favour retrieval (their reference is the bank's own capture)
#                                and λ was first chosen on the tails (4, for the weights before), so its figures are
#                                optimistic (weights/MODEL_CARD.md)
MAX_RETRIEVAL_WEIGHT = 32.0
MAX_TOKEN_PRIOR = 32.0          # strength of the weights' token bigram prior (core.generation.token_prior)
MAX_INTENSITY = 2.0
MAX_TEMPERATURE = 2.0
MAX_STEPS = 16
MAX_GUIDANCE = 5.0


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """Everything that shapes one generated take (see the module's defaults for how each was chosen)."""
    seed: int = 0                          # same seed, same take (when temperature > 0)
    temperature: float = DEFAULT_TEMPERATURE  # shown as "Variation"
    steps: int = DEFAULT_STEPS
    top_p: float = DEFAULT_TOP_P           # sample level 0 among the most likely codes (when temperature > 0)
    coherence: float = DEFAULT_COHERENCE   # neighbouring tokens' sampling coupled (core.generation.decoding)
    strategy: str = DEFAULT_STRATEGY       # how a window's passes choose tokens (core.generation.decoding)
    levels: int | None = DEFAULT_LEVELS    # RVQ levels kept (1 = the coarse level only; 0 = all predicted;
    #                                        None = as the weights record, else 1)
    smoothing: float = DEFAULT_SMOOTHING   # body rotations smoothed over this many frames (sigma; 0 = none)
    pause_variation: float = DEFAULT_PAUSE_VARIATION  # Variation in pauses, as a share of `temperature`
    #                                      (needs the built-in speech flag; HuBERT models: one Variation)
    intensity: float = 1.0                 # gesture amplitude about the take's mean pose (1 = as generated)
    travel: bool = False                   # let the character travel (False: stays in place)
    lipsync: float = DEFAULT_LIPSYNC       # 0 = the model's face alone
    face_source: str = "auto"              # the model's face: "head" = the speech face head (core.model.face_head),
    #                                        "tokens" = the generator's face tokens, "auto" = the head when the
    #                                        weights have one
    gesture_gain: float | None = None      # arm and hand amplitude about the mean pose before `intensity` (1 = as
    #                                        decoded; None = what the weights record, else 1). The bundled weights
    #                                        record none: 1.35 scored better on the speech-only clips (FGD 76.9 vs
    #                                        86.1 with 1.5-frame smoothing) but worse on every seed of the held-out
    #                                        tails (164.3 vs 148.2, speed 1.29x the capture's; weights/MODEL_CARD.md)
    guidance: float | None = None          # classifier-free guidance on the speech (1 = none; None = what the
    #                                        weights record, else 1); needs weights trained with speech dropout
    retrieval_bank: str | None = None      # a bank built from your training data (None = the model alone)
    retrieval_weight: float = DEFAULT_RETRIEVAL_WEIGHT  # strength of the bank's token prior
    token_prior: float | None = None       # strength of the weights' token bigram prior (core.generation.token_prior;
    #                                        0 = off; None = what the weights record, else off); a bank replaces it.
    #                                        The bundled weights record 8: speech-only clips, 5 seeds, FGD 80.1 vs 86.1
    #                                        at Variation 1 and 80.0 vs 143.1 at Variation 0 (5: 86.4, 12: 81.9)
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
        if not (math.isfinite(float(self.coherence)) and 0.0 <= float(self.coherence) <= MAX_COHERENCE):
            raise EchoMaskError(f"Coherence must be between 0 (independent draws) and {MAX_COHERENCE:g}; got {self.coherence}.")
        if not (math.isfinite(float(self.smoothing)) and 0.0 <= float(self.smoothing) <= 10.0):
            raise EchoMaskError(f"Smoothing must be between 0 and 10 frames; got {self.smoothing}.")
        if not (math.isfinite(float(self.pause_variation)) and 0.0 <= float(self.pause_variation) <= 1.0):
            raise EchoMaskError(f"Pause variation must be between 0 (calm in pauses) and 1 (as in speech); "
                                f"got {self.pause_variation}.")
        if not (math.isfinite(float(self.retrieval_weight)) and 0.0 <= float(self.retrieval_weight) <= MAX_RETRIEVAL_WEIGHT):
            raise EchoMaskError(f"Retrieval weight must be between 0 and {MAX_RETRIEVAL_WEIGHT:g}; got {self.retrieval_weight}.")
        if self.token_prior is not None and not (math.isfinite(float(self.token_prior))
                                                 and 0.0 <= float(self.token_prior) <= MAX_TOKEN_PRIOR):
            raise EchoMaskError(f"Token prior strength must be between 0 (off) and {MAX_TOKEN_PRIOR:g}; "
                                f"got {self.token_prior}.")
        if self.gesture_gain is not None and not (math.isfinite(float(self.gesture_gain))
                                                  and 0.0 <= float(self.gesture_gain) <= MAX_INTENSITY):
            raise EchoMaskError(f"Gesture gain must be between 0 and {MAX_INTENSITY:g} (1 = as decoded); "
                                f"got {self.gesture_gain}.")
        if self.guidance is not None and not (math.isfinite(float(self.guidance)) and 0.0 <= float(self.guidance) <= MAX_GUIDANCE):
            raise EchoMaskError(f"Speech guidance must be between 0 and {MAX_GUIDANCE:g} (1 = none); got {self.guidance}.")
        if self.face_source not in FACE_SOURCES:
            raise EchoMaskError(f"Unknown face source {self.face_source!r}; choose {', '.join(FACE_SOURCES)}.")
        if self.strategy not in STRATEGIES:
            raise EchoMaskError(f"Unknown decoding strategy {self.strategy!r}; choose {' or '.join(STRATEGIES)}.")
        if self.levels is not None and not (0 <= int(self.levels) <= 16):
            raise EchoMaskError(f"levels must be 0 (all) or a number of RVQ levels; got {self.levels}.")
        if not (1 <= int(self.steps) <= MAX_STEPS):
            raise EchoMaskError(f"Decoding passes must be between 1 and {MAX_STEPS}; got {self.steps}.")
        if self.parts is not None:
            from ..motion.skeleton import PARTS

            parts = tuple(self.parts)
            bad = sorted(set(parts) - set(PARTS))
            if bad or not parts:
                raise EchoMaskError(f"Unknown body parts {bad}; choose from {', '.join(PARTS)}." if bad
                                    else "Choose at least one body part to generate.")
            object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "steps", int(self.steps))
        if self.guidance is not None:
            object.__setattr__(self, "guidance", float(self.guidance))
        if self.gesture_gain is not None:
            object.__setattr__(self, "gesture_gain", float(self.gesture_gain))
        if self.token_prior is not None:
            object.__setattr__(self, "token_prior", float(self.token_prior))
        object.__setattr__(self, "levels", None if self.levels is None else int(self.levels))
        object.__setattr__(self, "smoothing", float(self.smoothing))
        object.__setattr__(self, "pause_variation", float(self.pause_variation))
        object.__setattr__(self, "temperature", t)
        object.__setattr__(self, "intensity", i)
        object.__setattr__(self, "lipsync", ls)
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "coherence", float(self.coherence))
        object.__setattr__(self, "retrieval_weight", float(self.retrieval_weight))
        if self.retrieval_bank is not None:
            object.__setattr__(self, "retrieval_bank", str(self.retrieval_bank) or None)

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


def add_generation_options(p) -> None:
    """The generation options as command-line flags (argparse), with their defaults."""
    d = GenerationOptions()
    p.add_argument("--seed", type=int, default=d.seed, help="variation seed: same seed, same take")
    p.add_argument("--temperature", "--variation", dest="temperature", type=float, default=d.temperature,
                   help=f"variation: 0 = the model's most likely motion, higher = more varied (default {d.temperature:g})")
    p.add_argument("--steps", type=int, default=d.steps,
                   help=f"decoding passes per window (default {d.steps}; 1 = the paper's single pass)")
    p.add_argument("--top-p", dest="top_p", type=float, default=d.top_p,
                   help=f"sample among the most likely motion tokens covering this probability (default {d.top_p:g})")
    p.add_argument("--coherence", type=float, default=d.coherence,
                   help=f"correlation of neighbouring motion tokens' sampling noise, 0..{MAX_COHERENCE:g} "
                   f"(default {d.coherence:g} = independent draws; higher holds a sampled gesture longer)")
    p.add_argument("--strategy", choices=("refine", "commit"), default=d.strategy,
                   help="how passes after the first choose tokens: refine = re-predict the least sure (mask-predict), "
                   "commit = keep the surest (MaskGIT)")
    p.add_argument("--levels", type=int, default=d.levels,
                   help="RVQ levels kept in the take (0 = every level the model predicts, 1 = the coarse level; "
                   "default: what the weights record as best for them, else 1; face tokens "
                   "always show their coarse level)")
    p.add_argument("--smoothing", type=float, default=d.smoothing,
                   help=f"body rotations smoothed over this many frames (default {d.smoothing:g}; 0 = none)")
    p.add_argument("--pause-variation", dest="pause_variation", type=float, default=d.pause_variation,
                   help=f"variation where nobody speaks, as a share of --temperature (default {d.pause_variation:g}; "
                   "0 = the calmest motion in pauses)")
    p.add_argument("--intensity", type=float, default=d.intensity, help="gesture amplitude, 0..2 (1 = as generated)")
    p.add_argument("--travel", action="store_true", help="let the character travel (default: stays in place)")
    p.add_argument("--lipsync", type=float, default=d.lipsync,
                   help=f"phone-accurate mouth strength 0..1 combined with the model's face (default {d.lipsync:g}; 0 = off)")
    p.add_argument("--face-source", dest="face_source", choices=FACE_SOURCES, default=d.face_source,
                   help="the model's face: head = frame by frame from the speech (the weights' speech face head), "
                   "tokens = the generator's face tokens; default auto: the head when the weights have one")
    p.add_argument("--guidance", type=float, default=d.guidance,
                   help="classifier-free guidance on the speech (1 = none; default: what the weights record, else 1; "
                   "only weights trained with --speech-dropout know the no-speech condition it contrasts)")
    p.add_argument("--gesture-gain", dest="gesture_gain", type=float, default=d.gesture_gain,
                   help="arm and hand gesture amplitude before --intensity (1 = as decoded; default: what the "
                   "weights record as measured for them, else 1)")
    p.add_argument("--retrieval-bank", dest="retrieval_bank", default=None,
                   help="a retrieval bank built for these weights from your training data "
                   "(`python -m core build-retrieval-bank`): the model leans towards the motion of the training "
                   "window whose speech is nearest")
    p.add_argument("--retrieval-weight", dest="retrieval_weight", type=float, default=d.retrieval_weight,
                   help=f"strength of the bank's lean (default {d.retrieval_weight:g}; 0 = off)")
    p.add_argument("--token-prior", dest="token_prior", type=float, default=d.token_prior,
                   help="strength of the weights' token bigram prior, a lean towards this speaker's own sequences "
                   "of coarse motion (0 = off, the model alone; default: what the weights record, else off; "
                   "`python -m core build-token-prior` adds the tables to weights)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or mps")


def generation_options(args) -> GenerationOptions:
    """GenerationOptions from the flags of `add_generation_options`."""
    return GenerationOptions(seed=args.seed, temperature=args.temperature, steps=args.steps, top_p=args.top_p,
                             coherence=args.coherence,
                             strategy=args.strategy, levels=args.levels, smoothing=args.smoothing,
                             pause_variation=args.pause_variation,
                             intensity=args.intensity, travel=args.travel, lipsync=args.lipsync,
                             face_source=args.face_source, device=args.device,
                             retrieval_bank=args.retrieval_bank, retrieval_weight=args.retrieval_weight,
                             guidance=args.guidance, gesture_gain=args.gesture_gain, token_prior=args.token_prior)
