"""Generator + MAM configuration (the masked speech-to-token model), one dataclass with named presets.

`ModelConfig.generator` (core/model/config.py) holds one of these. Sizes that the official release
hard-codes are fields here so that `paper` reproduces the official `echomask` generator block for block
(same modules, widths, heads, feed-forward sizes, layer counts and order; see docs/OFFICIAL_RELEASE_FORMAT.md
§3-§6), while `small` and `tiny` shrink every block for 2-core CPU training and tests.

The 256-wide "latent world" of the official model (MAM width, motion-encoder width, code vectors) is the
tokenizer's `code_dim`; it is not repeated here but taken from `ModelConfig.tokenizer`.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class GeneratorConfig:
    hidden: int = 768               # trunk width (official hidden_size)
    heads: int = 4                  # heads of every d=hidden attention block
    hidden_ff: int = 1536           # feed-forward width of face/self/part decoders (2 x hidden)
    motion_stages: int = 3          # conv motion encoder: stages of [Conv k3, LeakyReLU, ResBlock]
    face_layers: int = 4            # face_decoder layers
    self_layers: int = 1            # motion_self_encoder layers
    sqa_layers: int = 8             # shared SQA decoder layers
    sqa_ff: int = 2048              # SQA decoder feed-forward width
    part_layers: int = 1            # upper/hands/lower decoders
    mam_layers: int = 2             # layers in each of E1, E2, E3 (per part)
    mam_heads: int = 4
    mam_ff: int = 512
    mam_dec_layers: int = 1         # the low/high speech cross-attention decoders
    cross_part: bool = True         # cross-part refinement decoders (official); off in `small`: on minutes
    #                                 of data they kept the model from reading the visible frames
    token_hints: bool = False       # ours: the visible tokens' code vectors also enter each part's decoder
    #                                 (and the face decoder's queries), a short path from context to output
    cross_heads: int = 4            # cross-part refinement (width = code_dim)
    cross_ff: int = 512
    res_layers: int = 3             # each residual-level decoder (levels 1..5)
    res_heads: int = 8
    res_ff: int = 1024
    classifier_hidden: int = 768    # level-0 classifier MLP hidden width
    active_levels: int = 0          # RVQ levels the generator predicts (0 = all the tokenizer has); the
    #                                 finer levels decode as absent (the tokenizers learn prefixes through
    #                                 quantizer dropout)
    num_speakers: int = 25
    speaker_id: int = 1             # speaker row used at inference (BEAT2 speaker 2 "scott")
    dropout: float = 0.1
    speech_backend: str = "builtin"  # core.speech backend whose feature sizes the MAM reads
    speech_low_dim: int = 0         # low-/high-level speech feature sizes; 0 = ask the backend
    speech_high_dim: int = 0        #   (core.speech.feature_dims) when the model is built
    ema_decay: float = 0.9999       # EMA teacher that scores frames for the SQA mask
    mask_ratio: float = 0.375       # share of the window masked in the SQA passes (the mean when varied)
    top_share: float = 0.20         # of which chosen by SQA attention (the rest uniformly random)
    mask_unit: int = 1              # frames per masking unit: 1 = single frames (paper), 4 = whole tokens
    mask_schedule: str = "fixed"    # "fixed": mask_ratio in every window (paper); "cosine": a ratio drawn
    #                                 per window, cos(pi/2 u) with u ~ U(0, 1) (MaskGIT), so the model learns
    #                                 to fill any share of hidden tokens, as iterative decoding asks
    nce_temperature: float = 0.1    # MAM InfoNCE
    body_speech: str = "full"       # what the body parts' MAM speech branch reads: "full" (paper) or
    #                                 "bands" (ours, built-in features only: 8 mel bands + prosody, no
    #                                 phones) or "prosody" (onset, loudness, pitch, voicing, speech flag
    #                                 only); see core/model/mam.py MAM.coarse_speech
    body_speech_window: int = 0     # 0 = the body's MAM speech branch attends over the whole window (paper);
    #                                 w > 0 = only to frames within w of each other, without position
    #                                 encoding (MAM._local_mask, MAM.speech_branch)


BODY_SPEECH = ("full", "bands", "prosody")   # GeneratorConfig.body_speech values (core/model/mam.py)


def body_speech_problem(g: GeneratorConfig) -> str | None:
    """Why this config's body-speech choices cannot be built, in a user's terms; None when they can."""
    if g.body_speech not in BODY_SPEECH:
        return f"body speech must be one of {', '.join(BODY_SPEECH)}, not {g.body_speech!r}"
    if g.body_speech_window < 0:
        return f"the body speech window must be 0 (the whole window) or more frames, not {g.body_speech_window}"
    if g.body_speech != "full" and g.speech_backend != "builtin":
        return (f'body speech "{g.body_speech}" coarsens the built-in speech features; this config reads the '
                f"{g.speech_backend!r} backend's")
    return None


def paper_generator() -> GeneratorConfig:
    # Official: speech features are HuBERT projected to 256-d; with the builtin backend a Linear adapts
    # them (the only blocks the official layout lacks, and they are absent when the width already fits).
    return GeneratorConfig(speech_backend="hubert")


def small_generator() -> GeneratorConfig:
    # ~2-3 M parameters: trains a usable model on 2 CPU cores in well under an hour. EMA decay 0.99:
    # with a few thousand steps a 0.9999 teacher would barely move from its random initialisation.
    return GeneratorConfig(hidden=128, heads=4, hidden_ff=256, motion_stages=2, face_layers=1, self_layers=1,
                           sqa_layers=2, sqa_ff=256, part_layers=1, mam_layers=1, mam_heads=4, mam_ff=128,
                           mam_dec_layers=1, cross_heads=4, cross_ff=128, res_layers=1, res_heads=4,
                           res_ff=128, classifier_hidden=128, dropout=0.1, ema_decay=0.99,
                           mask_unit=4, mask_schedule="cosine", active_levels=3, cross_part=False,
                           token_hints=True)


def tiny_generator() -> GeneratorConfig:
    return GeneratorConfig(hidden=16, heads=2, hidden_ff=32, motion_stages=1, face_layers=1, self_layers=1,
                           sqa_layers=2, sqa_ff=32, part_layers=1, mam_layers=1, mam_heads=2, mam_ff=16,
                           mam_dec_layers=1, cross_heads=2, cross_ff=16, res_layers=1, res_heads=2, res_ff=16,
                           classifier_hidden=16, dropout=0.0, ema_decay=0.9, mask_unit=4, mask_schedule="cosine",
                           active_levels=3, cross_part=False, token_hints=True)
