"""What an MP4 holds, read from its boxes (ISO/IEC 14496-12) with plain Python: no FFmpeg, no bpy.

The preview checks its own output with it (a preview meant to carry the speech must have an audio track as
long as the take), and the tests and the bench read durations back with it on every Blender version.
"""
from __future__ import annotations

import struct

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, payload end) of each box in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:                      # 64-bit size follows
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:                    # runs to the end of the file
            size = end - pos
        if size < header or pos + size > end:
            break
        yield kind, pos + header, pos + size
        pos += size


def _full_box_version(data: bytes, start: int) -> int:
    return data[start]


def _track(data: bytes, start: int, end: int) -> dict:
    track = {"kind": "other", "duration": 0.0, "frames": 0, "codec": ""}
    stack = [(start, end)]
    while stack:
        s, e = stack.pop()
        for kind, a, b in _boxes(data, s, e):
            if kind in _CONTAINERS:
                stack.append((a, b))
            elif kind == b"mdhd":
                if _full_box_version(data, a) == 1:
                    timescale, duration = struct.unpack_from(">IQ", data, a + 20)
                else:
                    timescale, duration = struct.unpack_from(">II", data, a + 12)
                track["duration"] = duration / timescale if timescale else 0.0
            elif kind == b"hdlr":
                handler = data[a + 8:a + 12]
                track["kind"] = {b"vide": "video", b"soun": "audio"}.get(handler, handler.decode("latin-1"))
            elif kind == b"stsz":
                track["frames"] = struct.unpack_from(">I", data, a + 8)[0]
            elif kind == b"stsd" and b - a >= 16:
                track["codec"] = data[a + 12:a + 16].decode("latin-1")
    return track


def read_mp4_tracks(path: str) -> list[dict]:
    """[{"kind": "video"|"audio"|..., "duration": seconds, "frames": samples, "codec": "avc1"|"mp4a"|...}]."""
    with open(path, "rb") as f:
        data = f.read()
    tracks = []
    for kind, a, b in _boxes(data, 0, len(data)):
        if kind == b"moov":
            tracks += [_track(data, ta, tb) for tk, ta, tb in _boxes(data, a, b) if tk == b"trak"]
    return tracks
