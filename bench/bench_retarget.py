"""Retargeting quality and speed on three target rigs, measured in Blender (bpy as a module):

    python bench/bench_retarget.py [--take TAKE.npz] [--step 2] [--rigs mixamo,ue5,rigify]

For each rig (the real Mixamo BVH skeleton in its rest pose, a UE5-named rig at the mannequin's proportions,
a Rigify rig generated from Blender's meta-rig) a real BEAT2 take is retargeted with the rig's preset and
written as a take; then Blender evaluates the rig every `step` frames and we compare, per frame, the world
direction of each limb segment (upper arm, forearm, hand, thigh, shin, foot, spine, neck, head) with the
SMPL-X source (mean, 95th percentile), each mapped bone's full rotation (twist; a "flip" is over 45 deg),
and the feet: clearance on the source's contact frames, extra sliding, floor penetration. Rigify is
measured on its deform bones (DEF-*), i.e. after its constraints. Times: the core solve for 60 s
(1800 frames) and the whole Apply (keys written as a new take).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "blender")]

import conftest  # noqa: E402,F401  (imports the repository as the package `echomask`)
import numpy as np  # noqa: E402

DEFAULT_TAKE = conftest.SHARED_DATA / "beat2_samples" / "smplxflame_30" / "2_scott_0_1_1.npz"


def run_rig(kind: str, take, step: int, foot_correction: bool = True) -> dict:
    import bpy
    import retarget_rigs as rigs

    from echomask.core.retarget import solve
    from echomask.core.retarget.bone_map import load_bone_map, preset_path
    from echomask.core.retarget.quality import measure
    from echomask.echomask_blender.rigs import bone_mapping, retarget

    bpy.ops.wm.read_factory_settings(use_empty=True)
    context = bpy.context
    context.scene.render.fps = 30
    measure_bones = None
    if kind == "mixamo":
        obj = rigs.import_bvh(conftest.SHARED_DATA.joinpath(*rigs.MIXAMO_BVH))
        preset = "mixamo_plain"
    elif kind == "ue5":
        obj = rigs.build_ue5_rig(context)
        preset = "ue5"
    else:
        obj = rigs.generate_rigify()
        preset = "rigify"
        measure_bones = rigs.RIGIFY_DEFORM
    bone_map = load_bone_map(preset_path(preset))
    options = solve.RetargetOptions(foot_correction=foot_correction)
    # core solve time for 60 s (1800 frames)
    plan, _ = retarget.plan_for(obj, bone_map, options)
    sixty = take.slice(0, min(take.num_frames, 1800))
    t0 = time.perf_counter()
    plan, _ = retarget.plan_for(obj, bone_map, options)
    t1 = time.perf_counter()
    solve.retarget(plan, sixty)
    t2 = time.perf_counter()
    constraints = [(pb.name, c.name, c.type) for pb in obj.pose.bones for c in pb.constraints]
    info, notes = bone_mapping.apply_bone_map(context, obj, bone_map, options, sixty, name="bench", frame_start=1)
    t3 = time.perf_counter()
    intact = constraints == [(pb.name, c.name, c.type) for pb in obj.pose.bones for c in pb.constraints]
    frames = np.arange(info.frame_start, info.frame_end + 1, step)
    bones = set(plan.joint_bone.values()) | set((measure_bones or {}).values())
    bones = [b for b in bones if b in obj.pose.bones]
    heads, rots = rigs.evaluate_rig(context, obj, bones, frames)
    rows = frames - info.frame_start
    pos_s, G = solve.source_fk(sixty)
    q = measure(plan, pos_s[rows], G[rows], heads, rots, measure_bones=measure_bones)
    out = q.summary()
    out.update(rig=kind, bones=len(obj.data.bones), mapped=len(plan.joint_bone), plan_s=t1 - t0, solve_s=t2 - t1,
               apply_s=t3 - t2, frames=len(frames), notes=notes, scale=plan.scale,
               constraints_intact=intact)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--take", default=str(DEFAULT_TAKE))
    parser.add_argument("--step", type=int, default=2, help="evaluate every n-th frame in Blender")
    parser.add_argument("--rigs", default="mixamo,ue5,rigify")
    parser.add_argument("--json", default=None, help="also write the figures to this .json file")
    parser.add_argument("--no-foot-correction", action="store_true", help="measure without the root's foot correction")
    args = parser.parse_args(argv)
    import bpy

    from echomask.core.motion.take import load_take

    take = load_take(args.take)
    seconds = min(take.num_frames, 1800)
    print(f"Blender {bpy.app.version_string}; take {pathlib.Path(args.take).name}: {take.num_frames} frames, "
          f"{seconds / 30:.0f} s slice used ({seconds} frames)")
    results = []
    for kind in args.rigs.split(","):
        try:
            results.append(run_rig(kind, take, args.step, not args.no_foot_correction))
        except RuntimeError as exc:
            print(f"{kind}: skipped {exc}")
    for r in results:
        print(f"\n== {r['rig']}: {r['bones']} bones, {r['mapped']} joints mapped, scale {r['scale']:.3f}; "
              f"{r['frames']} frames evaluated")
        print(f"  limb direction error: mean {r['mean_deg']:.2f} deg, p95 {r['p95_deg']:.2f} deg, max {r['max_deg']:.2f} deg")
        for label, (mean, p95) in r["per_segment"].items():
            print(f"    {label:10s} mean {mean:6.2f}  p95 {p95:6.2f}")
        print(f"  twist: worst rotation error {r['twist_max_deg']:.2f} deg, flipped (>45 deg) {r['flipped']}")
        print(f"  feet ({r['contact_frames']} source contact joint-frames): clearance error p95 "
              f"{r['contact_height_p95_cm']:.2f} cm, max {r['contact_height_max_cm']:.2f} cm; extra sliding mean "
              f"{r['slide_extra_mean_cm']:.3f} cm/frame, p95 {r['slide_extra_p95_cm']:.3f} (source slides "
              f"{r['slide_source_mean_cm']:.3f}); penetration target {r['penetration_target_cm']:.2f} cm vs source "
              f"{r['penetration_source_cm']:.2f} cm")
        print(f"  time: plan {r['plan_s'] * 1000:.0f} ms, solve 60 s {r['solve_s'] * 1000:.0f} ms, "
              f"apply (keys as a new take) {r['apply_s'] * 1000:.0f} ms")
        for n in r["notes"]:
            print(f"  note: {n}")
    if args.json:
        import json

        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # A bpy module that has generated a Rigify rig hangs on interpreter exit (seen on 4.5): leave at once.
    import os

    os._exit(code)
