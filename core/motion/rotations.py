"""Batched rotation conversions and forward kinematics, for numpy arrays and torch tensors alike.

One implementation serves both: `_Ops` maps the handful of array operations we need onto numpy or torch,
so the maths is written (and tested) once. Conventions:
- axis-angle: (..., 3), angle = norm, as in SMPL-X / BEAT2 `poses`;
- quaternion: (..., 4) as (w, x, y, z), Blender's order;
- rot6d: (..., 6) = the first two ROWS of the matrix (pytorch3d's convention, which EMAGE/EchoMask use);
- matrices act on column vectors: v' = R @ v.
"""
from __future__ import annotations

import numpy as np

_EPS = 1e-8


class _Ops:
    """Array operations that differ between numpy and torch."""

    def __init__(self, like):
        self.torch = None
        if not isinstance(like, np.ndarray) and type(like).__module__.startswith("torch"):
            import torch

            self.torch = torch

    def norm(self, x, keepdim=True):
        if self.torch is not None:
            return self.torch.linalg.norm(x, dim=-1, keepdim=keepdim)
        return np.linalg.norm(x, axis=-1, keepdims=keepdim)

    def stack(self, xs, axis):
        return self.torch.stack(xs, dim=axis) if self.torch is not None else np.stack(xs, axis=axis)

    def cat(self, xs, axis):
        return self.torch.cat(xs, dim=axis) if self.torch is not None else np.concatenate(xs, axis=axis)

    def where(self, c, a, b):
        return self.torch.where(c, a, b) if self.torch is not None else np.where(c, a, b)

    def clip_min(self, x, lo):
        return x.clamp(min=lo) if self.torch is not None else np.maximum(x, lo)

    def cross(self, a, b):
        return self.torch.linalg.cross(a, b, dim=-1) if self.torch is not None else np.cross(a, b)

    def sqrt(self, x):
        return x.sqrt() if self.torch is not None else np.sqrt(x)

    def sin(self, x):
        return x.sin() if self.torch is not None else np.sin(x)

    def cos(self, x):
        return x.cos() if self.torch is not None else np.cos(x)

    def atan2(self, y, x):
        return self.torch.atan2(y, x) if self.torch is not None else np.arctan2(y, x)

    def argmax(self, x):
        return x.argmax(dim=-1) if self.torch is not None else np.argmax(x, axis=-1)

    def take_along_last(self, x, idx):
        """x (..., K, D), idx (...) -> (..., D)."""
        if self.torch is not None:
            return self.torch.gather(x, -2, idx[..., None, None].expand(*idx.shape, 1, x.shape[-1]))[..., 0, :]
        return np.take_along_axis(x, idx[..., None, None], axis=-2)[..., 0, :]

    def eye3_like(self, x, batch_shape):
        if self.torch is not None:
            return self.torch.eye(3, dtype=x.dtype, device=x.device).expand(*batch_shape, 3, 3).clone()
        return np.broadcast_to(np.eye(3, dtype=x.dtype), (*batch_shape, 3, 3)).copy()


def axis_angle_to_quaternion(aa):
    """(..., 3) -> (..., 4) (w, x, y, z)."""
    ops = _Ops(aa)
    angle = ops.norm(aa)
    half = angle * 0.5
    small = angle < 1e-6
    # sin(a/2)/a, with its Taylor series near 0 so gradients and tiny angles stay exact.
    k = ops.where(small, 0.5 - angle * angle / 48.0, ops.sin(half) / ops.where(small, ops.clip_min(angle, 1.0), angle))
    return ops.cat([ops.cos(half), aa * k], -1)


def quaternion_to_axis_angle(q):
    """(..., 4) -> (..., 3); picks the shorter rotation (angle in [0, pi])."""
    ops = _Ops(q)
    q = ops.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = ops.norm(v)
    angle = 2.0 * ops.atan2(s, q[..., :1])
    small = s < 1e-6
    k = ops.where(small, 2.0 / ops.clip_min(q[..., :1], _EPS), angle / ops.where(small, ops.clip_min(s, 1.0), s))
    return v * k


def quaternion_to_matrix(q):
    """(..., 4) -> (..., 3, 3); q need not be unit length."""
    ops = _Ops(q)
    q = q / ops.clip_min(ops.norm(q), _EPS)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        ops.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        ops.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        ops.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return ops.stack(rows, -2)


def matrix_to_quaternion(m):
    """(..., 3, 3) -> (..., 4), w >= 0. Picks the best-conditioned of four formulas (Shepperd)."""
    ops = _Ops(m)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    m01, m02, m10, m12, m20, m21 = m[..., 0, 1], m[..., 0, 2], m[..., 1, 0], m[..., 1, 2], m[..., 2, 0], m[..., 2, 1]
    traces = ops.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    r = ops.sqrt(ops.clip_min(traces, 0.0))  # (..., 4): 2|w|, 2|x|, 2|y|, 2|z|
    cands = ops.stack([
        ops.stack([r[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
        ops.stack([m21 - m12, r[..., 1] ** 2, m10 + m01, m02 + m20], -1),
        ops.stack([m02 - m20, m10 + m01, r[..., 2] ** 2, m12 + m21], -1),
        ops.stack([m10 - m01, m20 + m02, m21 + m12, r[..., 3] ** 2], -1),
    ], -2) / (2.0 * ops.clip_min(r, 0.1))[..., None]
    q = ops.take_along_last(cands, ops.argmax(r))
    q = q / ops.clip_min(ops.norm(q), _EPS)
    return ops.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(aa):
    return quaternion_to_matrix(axis_angle_to_quaternion(aa))


def matrix_to_axis_angle(m):
    return quaternion_to_axis_angle(matrix_to_quaternion(m))


def matrix_to_rot6d(m):
    """(..., 3, 3) -> (..., 6): the first two rows."""
    return m[..., :2, :].reshape(*m.shape[:-2], 6)


def rot6d_to_matrix(d6):
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two rows (any 6-vector gives a valid rotation)."""
    ops = _Ops(d6)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / ops.clip_min(ops.norm(a1), _EPS)
    a2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1 if ops.torch is None else a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / ops.clip_min(ops.norm(a2), _EPS)
    b3 = ops.cross(b1, b2)
    return ops.stack([b1, b2, b3], -2)


def axis_angle_to_rot6d(aa):
    return matrix_to_rot6d(axis_angle_to_matrix(aa))


def rot6d_to_axis_angle(d6):
    return matrix_to_axis_angle(rot6d_to_matrix(d6))


def quaternion_multiply(a, b):
    """Hamilton product of (..., 4) quaternions (w, x, y, z)."""
    ops = _Ops(a)
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return ops.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)


def make_quaternions_continuous(q: np.ndarray, axis: int = 0) -> np.ndarray:
    """Flip signs along `axis` (time) so consecutive quaternions have a non-negative dot product.

    Blender interpolates each quaternion channel separately: a sign flip between keys would spin the joint.
    """
    q = np.moveaxis(np.array(q, copy=True), axis, 0)
    if len(q) > 1:
        dots = np.sum(q[1:] * q[:-1], axis=-1)
        # A flip at step t flips every later frame too: cumulative parity of the negative dots.
        flips = np.concatenate([np.zeros((1,) + dots.shape[1:], bool), np.cumsum(dots < 0, axis=0) % 2 == 1])
        q[flips] *= -1
    return np.moveaxis(q, 0, axis)


def quaternion_slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation of (..., 4) unit quaternions; t broadcasts against (...)."""
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    t = np.asarray(t)[..., None] if np.ndim(t) == q0.ndim - 1 else np.asarray(t)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-6
    safe = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    w1 = np.where(near, t, np.sin(t * theta) / safe)
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def forward_kinematics(rotmats, rest_joints, parents, trans=None):
    """World joint positions and rotations.

    rotmats (..., J, 3, 3) local joint rotations; rest_joints (J, 3); parents (J,) with -1 for the root;
    trans (..., 3) added to the root. Returns positions (..., J, 3) and global rotations (..., J, 3, 3).
    The root rotates about its own rest position, as SMPL-X does.
    """
    ops = _Ops(rotmats)
    if ops.torch is not None:
        rest = ops.torch.as_tensor(rest_joints, dtype=rotmats.dtype, device=rotmats.device)
    else:
        rest = np.asarray(rest_joints, dtype=rotmats.dtype)
    glob_r, glob_p = [], []
    for j, p in enumerate(parents):
        if p < 0:
            glob_r.append(rotmats[..., j, :, :])
            pos = rest[j] + (0 if trans is None else trans)
            glob_p.append(pos + 0 * rotmats[..., j, :, 0])  # broadcast to the batch shape
        else:
            offset = rest[j] - rest[p]
            glob_r.append(glob_r[p] @ rotmats[..., j, :, :])
            glob_p.append(glob_p[p] + (glob_r[p] @ offset[:, None])[..., 0])
    return ops.stack(glob_p, -2), ops.stack(glob_r, -3)


# --------------------------------------------------------------------------------------------- Euler angles
# Blender's convention (numpy only): angles (..., 3) are about X, Y, Z in that layout whatever the order,
# and order "XYZ" rotates about X first, then Y, then Z: R = Rz @ Ry @ Rx (the order names the sequence).

EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")


def _euler_axes(order: str) -> tuple[int, int, int, float]:
    if order not in EULER_ORDERS:
        raise ValueError(f"unknown Euler order {order!r}; one of {', '.join(EULER_ORDERS)}")
    i, j, k = ("XYZ".index(c) for c in order)
    parity = 1.0 if (j - i) % 3 == 1 else -1.0   # +1 for the cyclic orders XYZ, YZX, ZXY
    return i, j, k, parity


def _axis_matrix(angle: np.ndarray, axis: int) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros(np.shape(angle) + (3, 3))
    a, b = [(1, 2), (2, 0), (0, 1)][axis]
    m[..., axis, axis] = 1.0
    m[..., a, a] = c
    m[..., b, b] = c
    m[..., b, a] = s
    m[..., a, b] = -s
    return m


def euler_to_matrix(euler: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """(..., 3) angles in radians -> (..., 3, 3)."""
    euler = np.asarray(euler, np.float64)
    i, j, k, _ = _euler_axes(order)
    return _axis_matrix(euler[..., k], k) @ _axis_matrix(euler[..., j], j) @ _axis_matrix(euler[..., i], i)


def matrix_to_euler(m: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """(..., 3, 3) rotations -> (..., 3) angles in radians (the middle angle in [-pi/2, pi/2])."""
    m = np.asarray(m, np.float64)
    i, j, k, s = _euler_axes(order)
    cos_b = np.hypot(m[..., i, i], m[..., j, i])
    b = np.arctan2(-s * m[..., k, i], cos_b)
    locked = cos_b < 1e-9       # gimbal lock: only a combination of the outer angles is defined
    a = np.where(locked, np.arctan2(-s * m[..., j, k], m[..., j, j]), np.arctan2(s * m[..., k, j], m[..., k, k]))
    c = np.where(locked, 0.0, np.arctan2(s * m[..., j, i], m[..., i, i]))
    out = np.empty(m.shape[:-2] + (3,))
    out[..., i], out[..., j], out[..., k] = a, b, c
    return out


def euler_to_quaternion(euler: np.ndarray, order: str = "XYZ") -> np.ndarray:
    return matrix_to_quaternion(euler_to_matrix(euler, order))


def quaternion_to_euler(q: np.ndarray, order: str = "XYZ") -> np.ndarray:
    return matrix_to_euler(quaternion_to_matrix(np.asarray(q, np.float64)), order)


def make_euler_continuous(euler: np.ndarray, order: str = "XYZ", reference: np.ndarray | None = None) -> np.ndarray:
    """Euler angles (T, ..., 3) over time made continuous for per-channel interpolation, as Blender's
    "compatible Euler": each frame takes whichever of its two equivalent angle triples (a, b, c) and
    (a + pi, pi - b, c + pi), shifted by whole turns per channel, is nearest the previous frame.
    `reference` (..., 3): the angles just before the first frame (e.g. the keys a range is spliced into)."""
    euler = np.array(euler, np.float64, copy=True)
    i, j, k, _ = _euler_axes(order)
    flip = np.zeros(3)
    flip[[i, j, k]] = np.pi
    turn = 2.0 * np.pi
    previous = None if reference is None else np.asarray(reference, np.float64)
    for t in range(len(euler)):
        alternative = euler[t] + flip
        alternative[..., j] = np.pi - euler[t][..., j]
        if previous is None:
            previous = euler[t]
            continue
        best = None
        for candidate in (euler[t], alternative):
            candidate = candidate + turn * np.round((previous - candidate) / turn)
            if best is None:
                best = candidate
            else:
                closer = np.abs(candidate - previous).sum(-1, keepdims=True) < np.abs(best - previous).sum(-1, keepdims=True)
                best = np.where(closer, candidate, best)
        euler[t] = best
        previous = best
    return euler
