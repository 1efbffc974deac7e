"""Face errors of a generated take against its reference (same speech, same frames).

Without an SMPL-X model (the default; the model file is the user's and never ships):
  expression MSE = mean over frames and the 100 coefficients of (gen - ref)^2;
  expression LVD = mean |(gen[t+1] - gen[t]) - (ref[t+1] - ref[t])| (velocity difference);
  jaw MSE       = mean over frames and the 3 axis-angle components of (gen - ref)^2, radians^2.
With the user's SMPL-X model file (`SmplxFaceModel`), the same two errors on mesh vertices, posed as EMAGE
does for its face metrics: shape from the reference's betas, the 100 expression coefficients and the jaw
rotation; every other joint and the translation at zero. Paper scales: MSE x1e8 (m^2), LVD x1e5 (m).

EMAGE's code computes its "LVD" as L1(rec[t+1] - tar[t], tar[t+1] - tar[t]), which reduces to the mean
|rec[t+1] - tar[t+1]| (a position error); we compute the velocity difference the name describes, so our
LVD is not that number.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..motion import rotations as R
from ..errors import EchoMaskError
from ..motion.skeleton import JAW, NUM_EXPRESSIONS, POSE_JAW
from ..motion.take import Take

SHAPE_SPACE = 300          # SMPL-X stores 300 shape then the expression directions in `shapedirs`


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def velocity_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |(a[t+1] - a[t]) - (b[t+1] - b[t])| over time and all other axes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[0] < 2:
        return float("nan")
    return float(np.mean(np.abs(np.diff(a, axis=0) - np.diff(b, axis=0))))


def _aligned(gen: Take, ref: Take) -> int:
    n = min(gen.num_frames, ref.num_frames)
    if n == 0:
        raise ValueError("face errors need frames in both takes")
    return n


def face_coefficient_errors(gen: Take, ref: Take) -> dict[str, float]:
    """Expression MSE / LVD and jaw MSE on the takes' common frames."""
    n = _aligned(gen, ref)
    ge, re = gen.expressions[:n], ref.expressions[:n]
    gj, rj = gen.poses[:n, POSE_JAW], ref.poses[:n, POSE_JAW]
    return {"expr_mse": mse(ge, re), "expr_lvd": velocity_difference(ge, re), "jaw_mse": mse(gj, rj)}


@dataclasses.dataclass
class SmplxFaceModel:
    """The parts of an SMPL-X model file that pose the face: template, shape and expression directions,
    the jaw's pose-corrective directions, the jaw's skinning weights and the joint regressor."""
    v_template: np.ndarray      # (V, 3)
    shapedirs: np.ndarray       # (V, 3, B) shape directions
    exprdirs: np.ndarray        # (V, 3, 100)
    jaw_posedirs: np.ndarray    # (V, 3, 9): offsets per element of (R_jaw - I)
    jaw_weights: np.ndarray     # (V,) skinning weight of the jaw joint
    j_regressor: np.ndarray     # (55, V)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SmplxFaceModel":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise EchoMaskError(f"SMPL-X model file not found: {path}. Give the path to your own "
                                f"SMPLX_NEUTRAL_2020.npz (downloaded from smpl-x.is.tue.mpg.de).")
        try:
            data = np.load(path, allow_pickle=False)
            arrays = {k: np.asarray(data[k], np.float64) for k in
                      ("v_template", "shapedirs", "posedirs", "weights", "J_regressor")}
        except KeyError as exc:
            raise EchoMaskError(f"{os.path.basename(path)} is not an SMPL-X model file: no {exc} array.") from None
        except Exception as exc:  # zip errors, pickled-only arrays
            raise EchoMaskError(f"{os.path.basename(path)} cannot be read as an SMPL-X .npz model ({exc}).") from None
        v = arrays["v_template"]
        shapedirs = arrays["shapedirs"]
        if shapedirs.ndim != 3 or shapedirs.shape[2] < SHAPE_SPACE + NUM_EXPRESSIONS:
            raise EchoMaskError(f"{os.path.basename(path)}: its 'shapedirs' {shapedirs.shape} hold no 100 "
                                f"expression directions; use the SMPL-X 2020 model (SMPLX_NEUTRAL_2020.npz).")
        posedirs = arrays["posedirs"]
        if posedirs.ndim == 2:       # (P, V*3), the layout some conversions use
            posedirs = posedirs.T.reshape(v.shape[0], 3, -1)
        first = (JAW - 1) * 9        # pose features are (R_j - I) of joints 1..54, 9 values each
        return cls(v_template=v, shapedirs=shapedirs[:, :, :SHAPE_SPACE],
                   exprdirs=shapedirs[:, :, SHAPE_SPACE:SHAPE_SPACE + NUM_EXPRESSIONS],
                   jaw_posedirs=posedirs[:, :, first:first + 9], jaw_weights=arrays["weights"][:, JAW],
                   j_regressor=arrays["J_regressor"])

    def face_vertices(self, betas: np.ndarray, expressions: np.ndarray, jaw_axis_angle: np.ndarray,
                      chunk: int = 256):
        """Yield (n, V, 3) vertex chunks for frames of (N, 100) expressions and (N, 3) jaw rotations.

        Linear blend skinning reduced to what the pose has: only the jaw rotates (about its rest joint),
        so a vertex moves by its jaw weight times (R v + J - R J - v).
        """
        nb = min(len(betas), self.shapedirs.shape[2])
        shaped = self.v_template + self.shapedirs[:, :, :nb] @ np.asarray(betas[:nb], np.float64)
        regressor = self.j_regressor[JAW]
        for start in range(0, len(expressions), chunk):
            expr = np.asarray(expressions[start:start + chunk], np.float64)
            rot = R.axis_angle_to_matrix(np.asarray(jaw_axis_angle[start:start + chunk], np.float64))
            verts = shaped[None] + np.einsum("vck,nk->nvc", self.exprdirs, expr)
            jaw_joint = np.einsum("v,nvc->nc", regressor, verts)[:, None, :]  # SMPL-X regresses after expressions
            feature = (rot - np.eye(3)).reshape(-1, 9)
            verts = verts + np.einsum("vck,nk->nvc", self.jaw_posedirs, feature)
            rotated = np.einsum("nij,nvj->nvi", rot, verts - jaw_joint) + jaw_joint
            yield verts + self.jaw_weights[None, :, None] * (rotated - verts)


def face_vertex_errors(gen: Take, ref: Take, model: SmplxFaceModel) -> dict[str, float]:
    """Vertex MSE (m^2) and LVD (m, velocity difference) on the common frames; betas from the reference."""
    n = _aligned(gen, ref)
    sq_sum, count, vd_sum, vd_count = 0.0, 0, 0.0, 0
    prev_g = prev_r = None
    chunks = zip(model.face_vertices(ref.betas, gen.expressions[:n], gen.poses[:n, POSE_JAW]),
                 model.face_vertices(ref.betas, ref.expressions[:n], ref.poses[:n, POSE_JAW]))
    for vg, vr in chunks:
        sq_sum += float(((vg - vr) ** 2).sum())
        count += vg.size
        if prev_g is not None:  # keep the velocity across chunk borders
            vg_full, vr_full = np.concatenate([prev_g, vg]), np.concatenate([prev_r, vr])
        else:
            vg_full, vr_full = vg, vr
        diff = np.abs(np.diff(vg_full, axis=0) - np.diff(vr_full, axis=0))
        vd_sum += float(diff.sum())
        vd_count += diff.size
        prev_g, prev_r = vg[-1:], vr[-1:]
    return {"vertex_mse": sq_sum / count, "vertex_lvd": vd_sum / vd_count if vd_count else float("nan")}
