"""Target rigs for the retargeting tests and bench/bench_retarget.py (bpy; nothing downloaded):

- the real Mixamo skeleton of ../shared/data/mixamo_bvh_emagemixamo, read with Blender's BVH importer;
- a Rigify rig generated from Blender's bundled human meta-rig (needs the bundled rigify add-on);
- a UE5-named rig built here at the mannequin's proportions (A-pose, metacarpals, twist and IK bones).
"""
from __future__ import annotations

import numpy as np

MIXAMO_BVH = ("mixamo_bvh_emagemixamo", "1_fufu_0_7_7_full.bvh")


def import_bvh(path: str, scale: float = 0.01):
    import addon_utils
    import bpy

    if not hasattr(bpy.ops.import_anim, "bvh"):
        addon_utils.enable("io_anim_bvh", default_set=False)
    bpy.ops.import_anim.bvh(filepath=str(path), global_scale=scale, update_scene_fps=False,
                            update_scene_duration=False)
    return bpy.context.active_object


def rigify_available() -> str | None:
    """None when a Rigify rig can be generated here, else the reason."""
    import addon_utils

    try:
        mod = addon_utils.enable("rigify", default_set=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: not here
        return f"the bundled rigify add-on does not load in this bpy ({exc})"
    if mod is None:
        return "the bundled rigify add-on does not load in this bpy module"
    return None


def generate_rigify():
    import bpy

    reason = rigify_available()
    if reason:
        raise RuntimeError(reason)
    bpy.ops.object.armature_human_metarig_add()
    meta = bpy.context.active_object
    result = bpy.ops.pose.rigify_generate()
    if "FINISHED" not in result:
        raise RuntimeError("rigify_generate did not finish")
    rig = bpy.context.active_object
    meta.hide_set(True)
    return rig


# Measuring bones of a generated Rigify rig: its deform bones (what a mesh follows).
RIGIFY_DEFORM = {"pelvis": "DEF-spine", "spine1": "DEF-spine.002", "spine3": "DEF-spine.003", "neck": "DEF-spine.004",
                 "head": "DEF-spine.006"}
for _s, _x in (("left", "L"), ("right", "R")):
    RIGIFY_DEFORM.update({f"{_s}_hip": f"DEF-thigh.{_x}", f"{_s}_knee": f"DEF-shin.{_x}", f"{_s}_ankle": f"DEF-foot.{_x}",
                          f"{_s}_foot": f"DEF-toe.{_x}", f"{_s}_collar": f"DEF-shoulder.{_x}",
                          f"{_s}_shoulder": f"DEF-upper_arm.{_x}", f"{_s}_elbow": f"DEF-forearm.{_x}",
                          f"{_s}_wrist": f"DEF-hand.{_x}", f"{_s}_middle1": f"DEF-f_middle.01.{_x}"})


def _ue5_joints():
    """UE5 mannequin-like joint positions, metres, Blender axes (Z up, facing -Y), A-pose arms (~40 deg)."""
    j = {"root": (0, 0, 0), "pelvis": (0, 0.01, 0.98), "spine_01": (0, 0.0, 1.03), "spine_02": (0, -0.005, 1.09),
         "spine_03": (0, -0.01, 1.16), "spine_04": (0, -0.01, 1.25), "spine_05": (0, 0.0, 1.36),
         "neck_01": (0, 0.01, 1.50), "neck_02": (0, 0.0, 1.55), "head": (0, -0.005, 1.60)}
    a = np.radians(40.0)
    for s, x in (("l", 1.0), ("r", -1.0)):
        sh = np.array([x * 0.17, 0.02, 1.44])
        down = np.array([x * np.cos(a), 0.0, -np.sin(a)])
        el = sh + 0.29 * down
        wr = el + 0.26 * down + np.array([0, -0.02, 0])
        j.update({f"clavicle_{s}": (x * 0.03, -0.01, 1.42), f"upperarm_{s}": tuple(sh), f"lowerarm_{s}": tuple(el),
                  f"hand_{s}": tuple(wr), f"upperarm_twist_01_{s}": tuple(sh + 0.12 * down),
                  f"lowerarm_twist_01_{s}": tuple(el + 0.13 * down)})
        for k, (f, off) in enumerate((("thumb", (0.02, -0.03, -0.01)), ("index", (0.09, -0.025, 0.0)),
                                      ("middle", (0.095, -0.005, 0.0)), ("ring", (0.09, 0.015, 0.0)),
                                      ("pinky", (0.08, 0.03, -0.005)))):
            base = wr + np.array([x * off[0] * np.cos(a), off[1], -off[0] * np.sin(a) + off[2]])
            if f != "thumb":
                j[f"{f}_metacarpal_{s}"] = tuple(wr + np.array([x * 0.03 * np.cos(a), off[1], -0.03 * np.sin(a)]))
            step = down * (0.035 if f != "thumb" else 0.03)
            if f == "thumb":
                step = np.array([x * 0.02, -0.025, -0.015])
            for n in (1, 2, 3):
                j[f"{f}_0{n}_{s}"] = tuple(base + (n - 1) * step)
        j.update({f"thigh_{s}": (x * 0.095, 0.01, 0.94), f"calf_{s}": (x * 0.10, 0.0, 0.51),
                  f"foot_{s}": (x * 0.105, 0.03, 0.085), f"ball_{s}": (x * 0.11, -0.11, 0.02),
                  f"thigh_twist_01_{s}": (x * 0.097, 0.005, 0.72), f"calf_twist_01_{s}": (x * 0.102, 0.015, 0.30)})
    j.update({"ik_foot_root": (0, 0, 0), "ik_foot_l": (0.105, 0.03, 0.085), "ik_foot_r": (-0.105, 0.03, 0.085)})
    return {k: np.array(v, np.float64) for k, v in j.items()}


def _ue5_parents():
    p = {"root": None, "pelvis": "root", "spine_01": "pelvis", "spine_02": "spine_01", "spine_03": "spine_02",
         "spine_04": "spine_03", "spine_05": "spine_04", "neck_01": "spine_05", "neck_02": "neck_01", "head": "neck_02",
         "ik_foot_root": "root", "ik_foot_l": "ik_foot_root", "ik_foot_r": "ik_foot_root"}
    for s in ("l", "r"):
        p.update({f"clavicle_{s}": "spine_05", f"upperarm_{s}": f"clavicle_{s}", f"lowerarm_{s}": f"upperarm_{s}",
                  f"hand_{s}": f"lowerarm_{s}", f"upperarm_twist_01_{s}": f"upperarm_{s}",
                  f"lowerarm_twist_01_{s}": f"lowerarm_{s}", f"thigh_{s}": "pelvis", f"calf_{s}": f"thigh_{s}",
                  f"foot_{s}": f"calf_{s}", f"ball_{s}": f"foot_{s}", f"thigh_twist_01_{s}": f"thigh_{s}",
                  f"calf_twist_01_{s}": f"calf_{s}"})
        for f in ("thumb", "index", "middle", "ring", "pinky"):
            first = f"{f}_metacarpal_{s}" if f != "thumb" else f"hand_{s}"
            if f != "thumb":
                p[first] = f"hand_{s}"
            p[f"{f}_01_{s}"] = first
            p[f"{f}_02_{s}"] = f"{f}_01_{s}"
            p[f"{f}_03_{s}"] = f"{f}_02_{s}"
    return p


def build_ue5_rig(context, name: str = "UE5_Mannequin", seed: int = 5, euler_bones=("clavicle_l", "clavicle_r",
                                                                                     "head", "foot_l")):
    """A UE5-named armature at the mannequin's proportions; bones rolled at random (seeded); a few bones in
    Euler rotation modes (as an imported rig may have)."""
    import bpy

    joints, parents = _ue5_joints(), _ue5_parents()
    children = {}
    for b, p in parents.items():
        children.setdefault(p, []).append(b)
    first_child = {"pelvis": "spine_01", "spine_05": "neck_01", "hand_l": "middle_metacarpal_l",
                   "hand_r": "middle_metacarpal_r", "upperarm_l": "lowerarm_l", "upperarm_r": "lowerarm_r",
                   "lowerarm_l": "hand_l", "lowerarm_r": "hand_r", "thigh_l": "calf_l", "thigh_r": "calf_r",
                   "calf_l": "foot_l", "calf_r": "foot_r", "root": None, "ik_foot_root": None}
    rng = np.random.default_rng(seed)
    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    context.scene.collection.objects.link(obj)
    context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        eb = data.edit_bones
        for b in parents:   # parents listed before children
            bone = eb.new(b)
            head = joints[b]
            kid = first_child.get(b, (children.get(b) or [None])[0])
            if kid is not None and np.linalg.norm(joints[kid] - head) > 1e-3:
                tail = joints[kid]
            else:
                par = parents[b]
                d = head - joints[par] if par and np.linalg.norm(head - joints[par]) > 1e-3 else np.array([0, 0, 1.0])
                tail = head + 0.05 * d / np.linalg.norm(d)
            bone.head, bone.tail = head, tail
            bone.roll = float(rng.uniform(-np.pi, np.pi))
            if parents[b]:
                bone.parent = eb[parents[b]]
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
    for pb in obj.pose.bones:
        pb.rotation_mode = "YXZ" if pb.name in euler_bones else "QUATERNION"
    return obj


def evaluate_rig(context, obj, bones, frames):
    """Armature-space heads and rotations of `bones` at each scene frame: ({bone: (N, 3)}, {bone: (N, 3, 3)})."""
    scene = context.scene
    heads = {b: np.empty((len(frames), 3)) for b in bones}
    rots = {b: np.empty((len(frames), 3, 3)) for b in bones}
    for i, f in enumerate(frames):
        scene.frame_set(int(f))
        for b in bones:
            m = np.array(obj.pose.bones[b].matrix)
            heads[b][i] = m[:3, 3]
            rots[b][i] = m[:3, :3]
    return heads, rots
