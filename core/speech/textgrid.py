"""Praat TextGrid reading (long and short text formats), for phone alignments such as the Montreal Forced
Aligner's: `read_textgrid_phones(path)` -> [(start_s, end_s, phone)] in the recogniser's labels.

MFA writes ARPAbet with stress digits ('AH0', 'IY1') and '' / 'sil' / 'sp' for silence, 'spn' for unknown
speech; PocketSphinx's English model uses the bare ARPAbet symbols plus 'SIL', '+SPN+', '+NSN+'.
`to_recogniser_phone` maps the former onto the latter, so alignments and recognitions compare directly.
"""
from __future__ import annotations

import os
import re

from ..errors import EchoMaskError

# Strings ("" escapes a quote), bracketed indices like [3] (skipped), flags like <exists>, numbers, and
# bare words such as `xmin` or `intervals` (skipped). Strings come first so their content is never split.
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|\[\s*\d+\s*\]|<(\w+)>|(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|[A-Za-z_?]+|[=:]')

SILENCE_MARKS = {"", "sil", "sp", "<sil>", "silence", "<eps>"}
SPOKEN_NOISE_MARKS = {"spn", "<unk>", "[speech]"}
NOISE_MARKS = {"nsn", "[noise]", "<noise>"}


def to_recogniser_phone(mark: str) -> str:
    """ARPAbet with or without stress, or an aligner's silence/noise mark -> PocketSphinx label."""
    text = mark.strip()
    low = text.lower()
    if low in SILENCE_MARKS:
        return "SIL"
    if low in SPOKEN_NOISE_MARKS:
        return "+SPN+"
    if low in NOISE_MARKS:
        return "+NSN+"
    return re.sub(r"\d+$", "", text).upper()


class _Tokens:
    def __init__(self, text: str):
        self.items = []
        for match in _TOKEN.finditer(text):
            string, flag, number = match.group(1), match.group(2), match.group(3)
            if string is not None:
                self.items.append(("s", string.replace('""', '"')))
            elif flag is not None:
                self.items.append(("f", flag))
            elif number is not None:
                self.items.append(("n", float(number)))
        self.pos = 0

    def take(self, kind: str):
        while self.pos < len(self.items):
            got_kind, value = self.items[self.pos]
            self.pos += 1
            if got_kind == kind:
                return value
            if kind == "n" and got_kind == "f":  # the `<exists>` flag sits between header numbers
                continue
            raise ValueError(f"expected {'a number' if kind == 'n' else 'a string'}, found {value!r}")
        raise ValueError("the file ends early")


def read_textgrid(path: str | os.PathLike) -> dict[str, list[tuple[float, float, str]]]:
    """All tiers of a TextGrid: {tier name: [(start_s, end_s, text)]}; point tiers give start == end."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise EchoMaskError(f"Cannot read the TextGrid {path}: {exc}") from None
    for encoding in ("utf-8-sig", "utf-16", "latin-1"):
        try:
            text = raw.decode(encoding)
            if "TextGrid" in text:
                break
        except UnicodeDecodeError:
            continue
    else:
        text = ""
    if "TextGrid" not in text:
        raise EchoMaskError(f"{os.path.basename(path)} is not a Praat TextGrid (no 'TextGrid' header).")
    tokens = _Tokens(text)
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    try:
        if tokens.take("s") != "ooTextFile":
            raise ValueError("missing the 'ooTextFile' header")
        tokens.take("s")  # object class "TextGrid"
        tokens.take("n"), tokens.take("n")  # xmin, xmax of the whole grid
        n_tiers = int(tokens.take("n"))
        for _ in range(n_tiers):
            tier_class = tokens.take("s")
            name = tokens.take("s")
            tokens.take("n"), tokens.take("n")
            count = int(tokens.take("n"))
            entries = []
            for _ in range(count):
                if tier_class == "IntervalTier":
                    start, end = tokens.take("n"), tokens.take("n")
                else:
                    start = end = tokens.take("n")
                entries.append((float(start), float(end), tokens.take("s")))
            tiers[name] = entries
    except ValueError as exc:
        raise EchoMaskError(f"{os.path.basename(path)} is a damaged TextGrid: {exc}.") from None
    return tiers


def read_textgrid_phones(path: str | os.PathLike, tier: str | None = None,
                         map_to_recogniser: bool = True) -> list[tuple[float, float, str]]:
    """The phone tier of a TextGrid as [(start_s, end_s, phone)], sorted by time.

    `tier` names the tier (default: the one called 'phones', else the first whose name contains 'phone').
    With `map_to_recogniser` the marks become PocketSphinx labels (stress removed, silences -> 'SIL').
    """
    tiers = read_textgrid(path)
    if tier is None:
        lowered = {name.lower(): name for name in tiers}
        tier = lowered.get("phones") or next((name for name in tiers if "phone" in name.lower()), None)
    if tier is None or tier not in tiers:
        raise EchoMaskError(f"{os.path.basename(os.fspath(path))} has no phone tier (tiers: "
                            f"{', '.join(tiers) or 'none'}); pass the tier's name.")
    segments = sorted(tiers[tier])
    if map_to_recogniser:
        segments = [(start, end, to_recogniser_phone(mark)) for start, end, mark in segments]
    return segments
