"""Shared fixtures and helpers for the Blender-layer tests (bpy 4.2 / 4.5 / 5.0).

Not named conftest.py: a second conftest module would shadow tests/conftest.py for `from conftest import`.
Test modules import what they use from here. bpy is imported inside functions so that collecting these
tests in an environment without bpy only skips them (the modules carry `pytestmark = requires_bpy`).
"""
from __future__ import annotations

import numpy as np
import pytest

from echomask.core.motion import rotations as R
from echomask.core.motion import skeleton as S
from echomask.core.motion.take import Take, save_take

# SMPL-X axes -> Blender axes, as in echomask_blender/rigs/rig.py (restated here so the tests check the rig).
C = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="session")
def registered():
    """The add-on registered once per session (as its root package `echomask`).

    Each test module imports this fixture, which makes one fixture per module: only the first registers.
    """
    import bpy

    import echomask

    first = not hasattr(bpy.types, "ECHOMASK_OT_import_take")
    if first:
        echomask.register()
    yield echomask
    if first:
        echomask.unregister()


@pytest.fixture
def ctx(registered):
    """A fresh, empty scene per test (bpy state is global)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context


def synthetic_take(n: int = 48, fps: float = 30.0, seed: int = 0, scale: float = 0.6) -> Take:
    """Smooth random motion: every joint turns (up to ~scale rad), the root travels, the face moves."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / fps
    freq = rng.uniform(0.3, 1.5, size=(1, 165))
    phase = rng.uniform(0, 2 * np.pi, size=(1, 165))
    poses = scale * rng.uniform(0.3, 1.0, size=(1, 165)) * np.sin(2 * np.pi * freq * t + phase)
    trans = np.stack([0.3 * np.sin(t[:, 0]), 0.9 + 0.05 * np.cos(2 * t[:, 0]), 0.2 * t[:, 0]], -1)
    expressions = 2.0 * np.sin(2 * np.pi * rng.uniform(0.5, 2, (1, 100)) * t + rng.uniform(0, 6, (1, 100)))
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=expressions.astype(np.float32), fps=fps)


def write_take(path, take: Take) -> str:
    save_take(take, path)
    return str(path)


def fk_blender(take: Take, rest_yup: np.ndarray | None = None, scale: float = 1.0):
    """Core FK of the take, mapped to Blender axes: positions (N, 55, 3) and global rotations (N, 55, 3, 3)."""
    rest = S.REST_JOINTS_YUP if rest_yup is None else rest_yup
    rot = R.axis_angle_to_matrix(take.joint_rotations().astype(np.float64))
    pos, glob = R.forward_kinematics(rot, rest, S.PARENTS, take.trans.astype(np.float64))
    return scale * pos @ C.T, C @ glob @ C.T


def world_heads(obj) -> np.ndarray:
    """(55, 3) world positions of the SMPL-X pose bones' heads at the current frame."""
    mw = np.array(obj.matrix_world)
    heads = np.array([np.array(obj.pose.bones[name].head) for name in S.JOINT_NAMES])
    return heads @ mw[:3, :3].T + mw[:3, 3]


def world_rotation_deltas(obj) -> np.ndarray:
    """(55, 3, 3) each bone's world rotation relative to its rest (independent of the bone's own axes)."""
    mw = np.array(obj.matrix_world)[:3, :3]
    out = []
    for name in S.JOINT_NAMES:
        posed = mw @ np.array(obj.pose.bones[name].matrix)[:3, :3]
        rest = mw @ np.array(obj.data.bones[name].matrix_local)[:3, :3]
        out.append(_orthonormal(posed) @ _orthonormal(rest).T)
    return np.array(out)


def _orthonormal(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    return u @ vt


def make_synthetic_smplx_model(path, seed: int = 0, n_shapedirs: int = 400) -> str:
    """A tiny stand-in for SMPLX_NEUTRAL_2020.npz: the same keys and array layouts, 3 vertices per joint.

    Each joint gets a small triangle whose centroid is the joint (so J_regressor @ v_template = the rest
    skeleton), skinned 70/30 to the joint and its parent. shapedirs has 300 shape + 100 expression
    directions like the 2020 model. Never the real (licensed) model.
    """
    rng = np.random.default_rng(seed)
    offsets = np.array([[0.02, 0.0, 0.0], [-0.01, 0.017, 0.0], [-0.01, -0.017, 0.0]])
    v_template = (S.REST_JOINTS_YUP[:, None, :] + offsets[None]).reshape(-1, 3)
    n_verts = len(v_template)
    faces = np.arange(n_verts, dtype=np.uint32).reshape(-1, 3)
    weights = np.zeros((n_verts, S.NUM_JOINTS))
    j_regressor = np.zeros((S.NUM_JOINTS, n_verts))
    for j in range(S.NUM_JOINTS):
        rows = slice(3 * j, 3 * j + 3)
        j_regressor[j, rows] = 1.0 / 3.0
        parent = S.PARENTS[j]
        weights[rows, j] = 1.0 if parent < 0 else 0.7
        if parent >= 0:
            weights[rows, parent] = 0.3
    kintree = np.array([[4294967295] + list(S.PARENTS[1:]), list(range(S.NUM_JOINTS))], np.int64)
    np.savez(path, v_template=v_template, f=faces, weights=weights, J_regressor=j_regressor,
             shapedirs=rng.normal(scale=0.002, size=(n_verts, 3, n_shapedirs)),
             posedirs=np.zeros((n_verts, 3, 486)), kintree_table=kintree,
             hands_meanl=np.zeros(45), hands_meanr=np.zeros(45))
    return str(path)


def lbs_blender(model_path: str, take: Take, frame: int) -> np.ndarray:
    """Reference skinning of the synthetic model at one take frame (expressions + LBS), Blender axes."""
    data = np.load(model_path)
    verts = data["v_template"] + data["shapedirs"][:, :, 300:] @ take.expressions[frame].astype(np.float64)
    joints = data["J_regressor"] @ data["v_template"]
    rot = R.axis_angle_to_matrix(take.joint_rotations()[frame].astype(np.float64))
    pos, glob = R.forward_kinematics(rot, joints, S.PARENTS, take.trans[frame].astype(np.float64))
    # vertex -> sum_j w_vj (G_j (v - J_j) + P_j)
    per_joint = np.einsum("jab,vjb->vja", glob, verts[:, None, :] - joints[None]) + pos[None]
    posed = np.einsum("vj,vja->va", data["weights"], per_joint)
    return posed @ C.T


def evaluated_vertices(obj) -> np.ndarray:
    import bpy

    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
    finally:
        evaluated.to_mesh_clear()
    mw = np.array(obj.matrix_world)
    return co.reshape(-1, 3).astype(np.float64) @ mw[:3, :3].T + mw[:3, 3]


def fcurve_values(fcurves) -> dict:
    """{(data_path, index): (N, 2) keyframe co} for comparing actions before and after."""
    out = {}
    for fc in fcurves:
        co = np.empty(2 * len(fc.keyframe_points), np.float32)
        fc.keyframe_points.foreach_get("co", co)
        out[(fc.data_path, fc.array_index)] = co.reshape(-1, 2)
    return out


def scene_snapshot(scene) -> dict:
    """What an import may change: compared before/after a rejected import."""
    import bpy

    from echomask.echomask_blender import compat

    snap = {
        "objects": sorted(bpy.data.objects.keys()),
        "armatures": sorted(bpy.data.armatures.keys()),
        "meshes": sorted(bpy.data.meshes.keys()),
        "actions": sorted(bpy.data.actions.keys()),
        "sounds": sorted(bpy.data.sounds.keys()),
        "fps": (scene.render.fps, scene.render.fps_base),
        "range": (scene.frame_start, scene.frame_end, scene.frame_current),
        "sync": scene.sync_mode,
        "strips": sorted(s.name for s in compat.all_sound_strips(scene)),
    }
    for obj in bpy.data.objects:
        anim = obj.animation_data
        snap[f"anim:{obj.name}"] = None if anim is None else (
            anim.action.name if anim.action else None, len(anim.nla_tracks))
    return snap
