"""Finding takes and their speech on disk, and pairing them by clip id.

A clip id is a file's name without extension and without the prefixes evaluation loops add
("res_", "gen_", "gt_"), so `res_2_scott_0_1_1.npz`, `2_scott_0_1_1.npz` and `2_scott_0_1_1.wav` pair up.
"""
from __future__ import annotations

import os

from ..errors import EchoMaskError

TAKE_EXTENSIONS = (".npz",)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
_PREFIXES = ("res_", "gen_", "gt_")


def clip_id(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    for prefix in _PREFIXES:
        if stem.startswith(prefix):
            return stem[len(prefix):]
    return stem


def collect(paths: list[str] | None, extensions: tuple[str, ...], what: str) -> dict[str, str]:
    """Files and folders (not recursive) -> {clip id: path}; clear errors for missing or duplicate ids."""
    found: dict[str, str] = {}
    for given in paths or []:
        if os.path.isdir(given):
            files = sorted(os.path.join(given, f) for f in os.listdir(given) if f.lower().endswith(extensions))
            if not files:
                raise EchoMaskError(f"No {what} files ({', '.join(extensions)}) in the folder {given}.")
        elif os.path.isfile(given):
            if not given.lower().endswith(extensions):
                raise EchoMaskError(f"{given} is not a {what} file (expected {', '.join(extensions)}).")
            files = [given]
        else:
            raise EchoMaskError(f"{what.capitalize()} path not found: {given}")
        for path in files:
            cid = clip_id(path)
            if cid in found and os.path.abspath(found[cid]) != os.path.abspath(path):
                raise EchoMaskError(f"Two {what} files have the clip id '{cid}': {found[cid]} and {path}; "
                                    f"give one of them.")
            found[cid] = path
    return found


def tail_start(num_frames: int, fraction: float) -> int:
    """First frame of the last `fraction` of a take (0 for fraction 0: the whole take)."""
    if not 0.0 <= fraction < 1.0:
        raise EchoMaskError(f"The held-out tail must be a fraction in [0, 1), not {fraction}.")
    return int(round(num_frames * (1.0 - fraction))) if fraction > 0 else 0
