"""Time to write a 60 s take (30 fps: body, fingers, jaw, eyes, root motion, 100 expressions) onto the rig.

    python bench/bench_write_take.py [--seconds 60] [--repeats 5]

The rig has a face mesh with Exp000..Exp099 shape keys built from a small synthetic SMPL-X-layout model
file (the real model is licensed and not needed: writing cost depends on frames x channels, not on
vertices). Set-up is not timed; each repeat writes a new Action pair (armature + shape keys), stashing the
previous one, exactly as a user's re-import does. Target: < 0.5 s on a 2-core machine.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import numpy as np
from common import import_repo_as_package

ROOT = pathlib.Path(__file__).resolve().parent.parent


def synthetic_model(path: pathlib.Path, skeleton) -> str:
    """SMPL-X model layout with 3 vertices per joint (J_regressor @ v_template = the rest joints)."""
    rng = np.random.default_rng(0)
    offsets = np.array([[0.02, 0.0, 0.0], [-0.01, 0.017, 0.0], [-0.01, -0.017, 0.0]])
    v_template = (skeleton.REST_JOINTS_YUP[:, None] + offsets[None]).reshape(-1, 3)
    n = len(v_template)
    weights = np.zeros((n, 55))
    weights[np.arange(n), np.arange(n) // 3] = 1.0
    j_regressor = np.zeros((55, n))
    j_regressor[np.arange(n) // 3, np.arange(n)] = 1.0 / 3.0
    np.savez(path, v_template=v_template, f=np.arange(n, dtype=np.uint32).reshape(-1, 3), weights=weights,
             J_regressor=j_regressor, shapedirs=rng.normal(scale=0.002, size=(n, 3, 400)))
    return str(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import bpy

    import_repo_as_package()
    from echomask.core.motion import skeleton
    from echomask.core.motion.take import Take
    from echomask.echomask_blender.rigs import mesh, rig
    from echomask.echomask_blender.takes import keys

    frames = int(round(args.seconds * 30))
    rng = np.random.default_rng(1)
    t = np.arange(frames)[:, None] / 30.0
    take = Take(poses=(0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2, (1, 165)) * t + rng.uniform(0, 6, (1, 165))))
                .astype(np.float32),
                trans=(0.1 * np.sin(t * [1.0, 2.0, 3.0])).astype(np.float32),
                expressions=rng.normal(size=(frames, 100)).astype(np.float32), fps=30.0)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    context = bpy.context
    with tempfile.TemporaryDirectory() as tmp:
        model = mesh.load_smplx_model(synthetic_model(pathlib.Path(tmp) / "model.npz", skeleton))
    armature = rig.create_smplx_armature(context, rest_joints_yup=model.rest_joints)
    face = mesh.build_smplx_mesh(context, model, armature)
    channels = 55 * 4 + 3 + keys.expression_key_count(face)

    times = []
    for i in range(args.repeats):
        start = time.perf_counter()
        result = keys.write_take_to_armature(armature, take, name=f"bench {i}")
        times.append(time.perf_counter() - start)
        assert result.shape_actions, "the face mesh must receive the expressions"
    print(f"bpy {bpy.app.version_string}: wrote {frames} frames x {channels} channels "
          f"({frames * channels / 1e6:.2f} M keys) per take")
    print(f"write_take_to_armature: median {statistics.median(times):.3f} s, best {min(times):.3f} s, "
          f"worst {max(times):.3f} s over {args.repeats} runs (target < 0.5 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
