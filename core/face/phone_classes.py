"""Phones -> mouth classes and the Preston Blair / Rhubarb mouth shapes.

Mouth classes group ARPAbet phones (PocketSphinx's labels, see core.speech.phones.PHONES) by what the lips
and jaw do, so that per-class face statistics can be fitted from a few minutes of data. The Rhubarb shapes
A-H and X follow Rhubarb Lip Sync's documented meanings (A closed: P B M; B slightly open, teeth together:
most consonants and "EE"; C open: EH, AE; D wide open: AA; E slightly rounded: AO, ER; F puckered: UW, OW,
W; G upper teeth on lower lip: F, V; H tongue up: L; X rest); the phone table below is our own.
"""
from __future__ import annotations

import numpy as np

from ..speech.phones import NUM_PHONES, PHONE_INDEX, PHONES, phones_to_frames

# Mouth classes, in a fixed order (the columns of every per-class table in the fitted coefficients).
MOUTH_CLASSES: dict[str, tuple[str, ...]] = {
    "rest": ("SIL", "+NSN+", "+SPN+"),
    "bilabial": ("P", "B", "M"),
    "labiodental": ("F", "V"),
    "dental": ("TH", "DH"),
    "alveolar": ("T", "D", "N", "L", "S", "Z"),
    "postalveolar": ("CH", "JH", "SH", "ZH"),
    "velar": ("K", "G", "NG", "HH", "Y"),
    "rounded_consonant": ("W", "R"),
    "open_vowel": ("AA", "AE", "AH", "AO", "AW", "AY"),
    "mid_vowel": ("EH", "ER", "EY"),
    "close_vowel": ("IH", "IY"),
    "rounded_vowel": ("OW", "OY", "UH", "UW"),
}
CLASS_NAMES = tuple(MOUTH_CLASSES)
CLASS_INDEX = {name: i for i, name in enumerate(CLASS_NAMES)}
VOWEL_CLASSES = ("open_vowel", "mid_vowel", "close_vowel", "rounded_vowel")
BILABIALS = MOUTH_CLASSES["bilabial"]
VOWELS = tuple(p for c in VOWEL_CLASSES for p in MOUTH_CLASSES[c])

RHUBARB_SHAPES: dict[str, tuple[str, ...]] = {
    "A": ("P", "B", "M"),
    "B": ("K", "G", "NG", "S", "Z", "T", "D", "N", "CH", "JH", "SH", "ZH", "TH", "DH", "HH", "Y", "IY", "IH"),
    "C": ("EH", "AE", "AH", "EY"),
    "D": ("AA", "AW", "AY"),
    "E": ("AO", "ER", "R", "OY"),
    "F": ("UW", "OW", "UH", "W"),
    "G": ("F", "V"),
    "H": ("L",),
    "X": ("SIL", "+NSN+", "+SPN+"),
}
SHAPE_NAMES = tuple(RHUBARB_SHAPES)


def _membership(groups: dict[str, tuple[str, ...]]) -> np.ndarray:
    """(NUM_PHONES, len(groups)) 0/1 matrix; every recogniser phone is in exactly one group."""
    table = np.zeros((NUM_PHONES, len(groups)), np.float32)
    for column, phones in enumerate(groups.values()):
        for phone in phones:
            table[PHONE_INDEX[phone], column] = 1.0
    missing = [PHONES[i] for i in np.flatnonzero(table.sum(axis=1) != 1)]
    if missing:  # a programming error in the tables above, caught at import
        raise AssertionError(f"phones not in exactly one group: {missing}")
    return table


PHONE_TO_CLASS = _membership(MOUTH_CLASSES)
PHONE_TO_SHAPE = _membership(RHUBARB_SHAPES)


def shift_phones(phones, lag_s: float):
    """Phone segments moved by `lag_s` seconds (negative: earlier, as the face anticipates speech)."""
    return [(start + lag_s, end + lag_s, label) for start, end, label in phones]


def _centred_shares(phones, n_frames: int, fps: float) -> np.ndarray:
    """Phone shares of the frame-long windows centred on the take's frame times k / fps (phones_to_frames
    uses [k / fps, (k + 1) / fps): shifting the phones half a frame later centres them)."""
    return phones_to_frames(shift_phones(phones, 0.5 / fps), n_frames, fps)


def class_shares(phones, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames, len(CLASS_NAMES)): the share of the frame around each frame time that each class covers."""
    return _centred_shares(phones, n_frames, fps) @ PHONE_TO_CLASS


def shape_shares(phones, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames, len(SHAPE_NAMES)): the share of the frame around each frame time in each Rhubarb shape."""
    return _centred_shares(phones, n_frames, fps) @ PHONE_TO_SHAPE


def segments_of(phones, members) -> list[tuple[float, float]]:
    """Time spans of the given phones, with touching segments merged (e.g. 'M B' -> one closure)."""
    spans: list[list[float]] = []
    for start, end, label in sorted(phones):
        if label not in members:
            continue
        if spans and start <= spans[-1][1] + 1e-6:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return [(a, b) for a, b in spans]
