"""BVH axes: Blender's BVH exporter writes its own Z-up space; BVH readers (Blender's importer at its
defaults, MotionBuilder, most game tools) expect Y up. `z_up_to_y_up` rewrites such a file in Y-up axes.

Blender (x, y, z) -> Y-up (x, z, -y): the same map as SMPL-X's, so an EchoMask rig comes out in SMPL-X
axes, facing +Z. Offsets and positions are mapped; each joint's rotation R (channels in the listed order:
"Xrotation Yrotation Zrotation" is Rx Ry Rz) becomes A R A^T, written back in the joint's own channel order
with continuous angles. Bone names, hierarchy, frame count and frame time are kept. No bpy.
"""
from __future__ import annotations

import numpy as np

from . import rotations as R

# Blender's Z-up axes -> Y-up axes.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _map_offset(line: str) -> str:
    head, values = line.split("OFFSET", 1)
    v = Z_UP_TO_Y_UP @ np.array([float(x) for x in values.split()[:3]])
    return f"{head}OFFSET {v[0]:.6f} {v[1]:.6f} {v[2]:.6f}"


def z_up_to_y_up(text: str) -> str:
    """A BVH file's text (as Blender's exporter writes it, Z up) in Y-up axes."""
    lines = text.splitlines()
    motion_at = next(n for n, line in enumerate(lines) if line.strip() == "MOTION")
    channels: list[list[str]] = []   # per joint, in file order
    out = []
    for line in lines[:motion_at]:
        stripped = line.strip()
        if stripped.startswith("OFFSET"):
            line = _map_offset(line)
        elif stripped.startswith("CHANNELS"):
            parts = stripped.split()
            channels.append(parts[2:2 + int(parts[1])])
        out.append(line)
    header = lines[motion_at:motion_at + 3]          # MOTION, Frames: N, Frame Time: t
    rows = [line for line in lines[motion_at + 3:] if line.strip()]
    data = np.array([[float(x) for x in row.split()] for row in rows], np.float64).reshape(len(rows), -1)
    column = 0
    for names in channels:
        cols = {name: column + n for n, name in enumerate(names)}
        column += len(names)
        position = [cols.get(f"{axis}position") for axis in "XYZ"]
        if None not in position:
            data[:, position] = data[:, position] @ Z_UP_TO_Y_UP.T
        rotation = [name[0] for name in names if name.endswith("rotation")]
        if len(rotation) == 3:
            order = "".join(reversed(rotation))       # listed X Y Z = Rx Ry Rz = Blender's Euler order "ZYX"
            slots = [cols[f"{axis}rotation"] for axis in "XYZ"]
            matrices = R.euler_to_matrix(np.radians(data[:, slots]), order)
            mapped = Z_UP_TO_Y_UP[None] @ matrices @ Z_UP_TO_Y_UP.T[None]
            data[:, slots] = np.degrees(R.make_euler_continuous(R.matrix_to_euler(mapped, order), order))
    out.extend(header)
    out.extend(" ".join(f"{v:.6f}" for v in row) for row in data)
    return "\n".join(out) + "\n"
