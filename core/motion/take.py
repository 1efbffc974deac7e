"""A Take: one SMPL-X motion clip (body, fingers, jaw, eyes, expressions, root motion) at a frame rate.

Stored as BEAT2's `smplxflame_30` `.npz`: poses (N, 165) axis-angle of the 55 joints, trans (N, 3) metres
Y up, expressions (N, 100), betas (300,), mocap_frame_rate. `load_take` validates and names the bad field;
`resample_take` changes the frame rate with quaternion slerp for rotations.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from . import rotations as R
from ..errors import TakeFormatError
from .skeleton import NUM_BETAS, NUM_EXPRESSIONS, NUM_JOINTS


@dataclasses.dataclass
class Take:
    poses: np.ndarray          # (N, 165) float32, axis-angle per joint in SMPL-X order
    trans: np.ndarray          # (N, 3) float32, metres, Y up
    expressions: np.ndarray    # (N, 100) float32
    betas: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(NUM_BETAS, np.float32))
    fps: float = 30.0
    gender: str = "neutral"
    meta: dict = dataclasses.field(default_factory=dict)  # free-form provenance (model, seed, audio)

    @property
    def num_frames(self) -> int:
        return int(self.poses.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def joint_rotations(self) -> np.ndarray:
        """(N, 55, 3) axis-angle."""
        return self.poses.reshape(-1, NUM_JOINTS, 3)

    def quaternions(self) -> np.ndarray:
        """(N, 55, 4) (w, x, y, z), sign-continuous over time."""
        q = R.axis_angle_to_quaternion(self.joint_rotations().astype(np.float64))
        return R.make_quaternions_continuous(q, axis=0)

    def slice(self, start: int, stop: int) -> "Take":
        return dataclasses.replace(self, poses=self.poses[start:stop], trans=self.trans[start:stop],
                                   expressions=self.expressions[start:stop], meta=dict(self.meta))

    def validate(self, source: str = "take") -> "Take":
        """Check shapes and values; raises TakeFormatError naming the bad field. Returns self."""
        n = self.poses.shape[0] if self.poses.ndim >= 1 else 0
        checks = [
            ("poses", self.poses, (n, NUM_JOINTS * 3)),
            ("trans", self.trans, (n, 3)),
            ("expressions", self.expressions, (n, NUM_EXPRESSIONS)),
        ]
        for name, arr, shape in checks:
            if arr.ndim != 2 or arr.shape != shape:
                raise TakeFormatError(f"{source}: '{name}' has shape {arr.shape}, expected {shape} "
                                      f"(frames x {shape[1]}); the file is not a BEAT2/SMPL-X take.")
            if not np.isfinite(arr).all():
                bad = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise TakeFormatError(f"{source}: '{name}' contains NaN or infinite values (first at frame "
                                      f"{bad}); re-export the motion.")
        if n == 0:
            raise TakeFormatError(f"{source}: the take has no frames.")
        if self.betas.ndim != 1 or not np.isfinite(self.betas).all():
            raise TakeFormatError(f"{source}: 'betas' must be a finite 1-D vector, got shape {self.betas.shape}.")
        if not (np.isfinite(self.fps) and 1.0 <= self.fps <= 1000.0):
            raise TakeFormatError(f"{source}: frame rate {self.fps} is not usable (expected e.g. 30).")
        return self


def _field(data, name, source, required=True):
    if name not in data.files:
        if required:
            raise TakeFormatError(f"{source}: the field '{name}' is missing; a BEAT2/SMPL-X take needs "
                                  f"'poses', 'trans' and 'expressions' (and optionally 'betas', "
                                  f"'mocap_frame_rate').")
        return None
    return data[name]


def load_take(path: str | os.PathLike) -> Take:
    """Load a BEAT2/SMPL-X `.npz` take; raises TakeFormatError (file, field, problem) on bad input."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise TakeFormatError(f"Motion file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        files = data.files
    except Exception as exc:  # zip errors, pickled objects, truncated files
        raise TakeFormatError(f"{name}: cannot be read as an .npz motion file ({exc}).") from None
    if not files:
        raise TakeFormatError(f"{name}: the file is empty.")
    poses = np.asarray(_field(data, "poses", name), np.float32)
    n = poses.shape[0] if poses.ndim else 0
    trans = _field(data, "trans", name)
    expressions = _field(data, "expressions", name, required=False)
    if expressions is None:  # AMASS-style takes have no face: keep it neutral
        expressions = np.zeros((n, NUM_EXPRESSIONS), np.float32)
    expressions = np.asarray(expressions, np.float32)
    if expressions.ndim == 2 and 0 < expressions.shape[1] < NUM_EXPRESSIONS:  # fewer coefficients: pad
        expressions = np.pad(expressions, ((0, 0), (0, NUM_EXPRESSIONS - expressions.shape[1])))
    betas = _field(data, "betas", name, required=False)
    betas = np.zeros(NUM_BETAS, np.float32) if betas is None else np.asarray(betas, np.float32).reshape(-1)
    fps = _field(data, "mocap_frame_rate", name, required=False)
    gender = _field(data, "gender", name, required=False)
    take = Take(poses=poses, trans=np.asarray(trans, np.float32), expressions=expressions, betas=betas,
                fps=30.0 if fps is None else float(fps), gender="neutral" if gender is None else str(gender))
    return take.validate(name)


def save_take(take: Take, path: str | os.PathLike) -> None:
    """Write BEAT2's npz schema (readable by EMAGE/EchoMask tools and the SMPL-X Blender add-on)."""
    take.validate("take to save")
    path = os.fspath(path)
    tmp = path + ".partial.npz"  # write then rename: a crash never leaves half a file
    _write_npz(tmp, poses=take.poses.astype(np.float32), trans=take.trans.astype(np.float32),
               expressions=take.expressions.astype(np.float32), betas=take.betas.astype(np.float32),
               model=np.array("smplx2020"), gender=np.array(take.gender),
               mocap_frame_rate=np.array(take.fps, np.float32 if take.fps % 1 else np.int32))
    os.replace(tmp, path)


def _write_npz(path: str, **arrays) -> None:
    """np.savez's layout (uncompressed zip of .npy members) with fixed member dates: the same take gives
    the same bytes on every run and machine (np.savez stamps the current time into the zip)."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)


def resample_take(take: Take, fps: float) -> Take:
    """Resample to another frame rate (e.g. 24, 25, 29.97, 30, 60).

    Rotations use slerp per joint, translation and expressions linear interpolation. The new take spans
    the same duration; frame k sits at time k / fps.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    if abs(fps - take.fps) < 1e-9:
        return dataclasses.replace(take, meta=dict(take.meta))
    n_out = max(1, int(np.floor((take.num_frames - 1) * fps / take.fps + 1e-6)) + 1)
    src = np.arange(n_out) * (take.fps / fps)
    i0 = np.clip(np.floor(src).astype(int), 0, take.num_frames - 1)
    i1 = np.clip(i0 + 1, 0, take.num_frames - 1)
    t = (src - i0)[:, None]

    q = take.quaternions()                                       # (N, 55, 4)
    q_out = R.quaternion_slerp(q[i0], q[i1], np.broadcast_to(t, (n_out, NUM_JOINTS)))
    poses = R.quaternion_to_axis_angle(q_out).reshape(n_out, -1).astype(np.float32)

    def lerp(x):
        return (x[i0] * (1 - t) + x[i1] * t).astype(np.float32)

    return Take(poses=poses, trans=lerp(take.trans), expressions=lerp(take.expressions), betas=take.betas,
                fps=float(fps), gender=take.gender, meta=dict(take.meta))


def neutral_take(num_frames: int, fps: float = 30.0) -> Take:
    """A still, neutral standing pose (the seed pose for generation)."""
    return Take(poses=np.zeros((num_frames, NUM_JOINTS * 3), np.float32),
                trans=np.zeros((num_frames, 3), np.float32),
                expressions=np.zeros((num_frames, NUM_EXPRESSIONS), np.float32), fps=fps)
