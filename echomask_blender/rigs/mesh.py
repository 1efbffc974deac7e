"""The skinned SMPL-X mesh, built from the user's own SMPL-X model file (.npz).

The SMPL-X model is licensed separately (MPI); EchoMask never ships it. When the add-on preferences point
at the user's file (e.g. SMPLX_NEUTRAL_2020.npz), the rig is built from the model's joints
(J_regressor @ v_template) and this module adds the template mesh, skinned to the 55 bones with the
model's LBS weights, with the expression directions as shape keys Exp000..Exp099 (the names the SMPL-X
Blender add-on uses). Body-shape keys and pose correctives are not built.
"""
from __future__ import annotations

import dataclasses
import os

import bpy
import numpy as np

from ...core.motion import skeleton
from ...core.errors import SmplxModelError
from ..takes.keys import EXPRESSION_KEY, SHAPE_KEY_SLIDER_LIMIT
from .rig import BONE_NAMES, C

# shapedirs' last axis = betas then expressions: SMPL-X 2020 has 300 + 100, SMPL-X 1.1 has 10 + 10.
_BETAS_FOR_SHAPEDIRS = {400: 300, 20: 10}


@dataclasses.dataclass
class SmplxModel:
    v_template: np.ndarray       # (V, 3) Y up, metres
    faces: np.ndarray            # (F, 3) int
    weights: np.ndarray          # (V, 55) LBS weights
    j_regressor: np.ndarray      # (55, V)
    expression_dirs: np.ndarray  # (V, 3, E)
    path: str = ""

    @property
    def rest_joints(self) -> np.ndarray:
        """(55, 3) joints of the template, Y up."""
        return self.j_regressor @ self.v_template


def load_smplx_model(path: str) -> SmplxModel:
    """Read and check an SMPL-X model .npz; raises SmplxModelError naming the problem."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if not path or not os.path.isfile(path):
        raise SmplxModelError(f"SMPL-X model file not found: {path or '(none set)'}. Set it in the EchoMask "
                              f"add-on preferences (download SMPLX_NEUTRAL_2020.npz from smpl-x.is.tue.mpg.de).")
    try:
        data = np.load(path, allow_pickle=False)
        files = set(data.files)
    except Exception as exc:
        raise SmplxModelError(f"{name} cannot be read as an SMPL-X model .npz ({exc}).") from None
    need = ("v_template", "f", "weights", "J_regressor", "shapedirs")
    missing = [key for key in need if key not in files]
    if missing:
        raise SmplxModelError(f"{name} is not an SMPL-X model file: it has no {', '.join(missing)}. Use the "
                              f"SMPL-X .npz model (e.g. SMPLX_NEUTRAL_2020.npz), not a motion file.")
    try:
        v_template = np.asarray(data["v_template"], np.float64)
        faces = np.asarray(data["f"], np.int64)
        weights = np.asarray(data["weights"], np.float64)
        j_regressor = np.asarray(data["J_regressor"], np.float64)
        shapedirs = np.asarray(data["shapedirs"], np.float64)
    except Exception as exc:  # pickled object arrays, truncated members
        raise SmplxModelError(f"{name}: an array cannot be read ({exc}).") from None
    v = v_template.shape[0] if v_template.ndim == 2 else -1
    shapes = {"v_template": (v_template, (v, 3)), "f": (faces, (faces.shape[0] if faces.ndim else -1, 3)),
              "weights": (weights, (v, skeleton.NUM_JOINTS)),
              "J_regressor": (j_regressor, (skeleton.NUM_JOINTS, v))}
    for key, (array, shape) in shapes.items():
        if array.shape != shape or v <= 0:
            raise SmplxModelError(f"{name}: '{key}' has shape {array.shape}, expected {shape}; the file is "
                                  f"not a 55-joint SMPL-X model.")
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (v, 3) or shapedirs.shape[2] not in _BETAS_FOR_SHAPEDIRS:
        raise SmplxModelError(f"{name}: 'shapedirs' has shape {shapedirs.shape}, expected ({v}, 3, 400) "
                              f"(SMPL-X 2020) or ({v}, 3, 20) (SMPL-X 1.1).")
    if faces.size and (faces.min() < 0 or faces.max() >= v):
        raise SmplxModelError(f"{name}: 'f' refers to vertices outside 0..{v - 1}.")
    for key, array in (("v_template", v_template), ("weights", weights), ("J_regressor", j_regressor),
                       ("shapedirs", shapedirs)):
        if not np.isfinite(array).all():
            raise SmplxModelError(f"{name}: '{key}' contains NaN or infinite values.")
    if "kintree_table" in files:
        try:
            parents = np.asarray(data["kintree_table"], np.int64)[0]
        except Exception:
            parents = None
        if parents is not None and len(parents) == skeleton.NUM_JOINTS:
            parents = np.where(parents > skeleton.NUM_JOINTS, -1, parents)  # the root stores 2**32 - 1
            if tuple(int(p) for p in parents[1:]) != skeleton.PARENTS[1:]:
                raise SmplxModelError(f"{name}: its joint hierarchy is not SMPL-X's (an SMPL or SMPL-H file?).")
    n_betas = _BETAS_FOR_SHAPEDIRS[shapedirs.shape[2]]
    return SmplxModel(v_template=v_template, faces=faces, weights=weights, j_regressor=j_regressor,
                      expression_dirs=shapedirs[:, :, n_betas:], path=path)


def build_smplx_mesh(context: bpy.types.Context, model: SmplxModel, armature: bpy.types.Object,
                     name: str = "SMPLX-mesh") -> bpy.types.Object:
    """Add the template mesh parented and skinned to `armature`, with Exp### shape keys."""
    verts = model.v_template @ C.T
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], model.faces)
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), bool))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    for collection in armature.users_collection:
        collection.objects.link(obj)
    obj.parent = armature
    modifier = obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature

    for j, bone in enumerate(BONE_NAMES):
        group = obj.vertex_groups.new(name=bone)
        influenced = np.flatnonzero(model.weights[:, j] > 0.0)
        # vertex_groups.add takes one weight per call: batch vertices that share a weight.
        values, inverse = np.unique(model.weights[influenced, j], return_inverse=True)
        batches = np.split(influenced[np.argsort(inverse, kind="stable")], np.cumsum(np.bincount(inverse))[:-1])
        for weight, batch in zip(values, batches):
            group.add(batch.tolist(), float(weight), "REPLACE")

    obj.shape_key_add(name="Basis", from_mix=False)
    directions = model.expression_dirs
    for i in range(min(directions.shape[2], skeleton.NUM_EXPRESSIONS)):
        block = obj.shape_key_add(name=EXPRESSION_KEY.format(i), from_mix=False)
        block.data.foreach_set("co", (verts + directions[:, :, i] @ C.T).astype(np.float32).ravel())
        block.slider_min = -SHAPE_KEY_SLIDER_LIMIT
        block.slider_max = SHAPE_KEY_SLIDER_LIMIT
    obj["smplx_model"] = os.path.basename(model.path)
    return obj
