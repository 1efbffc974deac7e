"""The command line's `retarget` task, run headless (core/jobs/blender_bridge.py -> headless.py):
a take .npz onto a character's rig read from .fbx, .bvh or .blend, written to .fbx, .bvh or .blend.
"""
from __future__ import annotations

import os

import bpy


def _load_rig(path: str, armature_name: str | None):
    from ..core.errors import EchoMaskError

    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise EchoMaskError(f"Rig file not found: {path}")
    if ext == ".blend":
        bpy.ops.wm.open_mainfile(filepath=path)
    else:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        import addon_utils

        if ext == ".fbx":
            if not hasattr(bpy.ops.import_scene, "fbx"):
                addon_utils.enable("io_scene_fbx", default_set=False)
            bpy.ops.import_scene.fbx(filepath=path)
        elif ext == ".bvh":
            if not hasattr(bpy.ops.import_anim, "bvh"):
                addon_utils.enable("io_anim_bvh", default_set=False)
            bpy.ops.import_anim.bvh(filepath=path, update_scene_fps=False, update_scene_duration=False)
        else:
            raise EchoMaskError(f"Cannot read a rig from '{ext}' files: give a .fbx, .bvh or .blend.")
    arms = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    if armature_name:
        obj = bpy.data.objects.get(armature_name)
        if obj is None or obj.type != "ARMATURE":
            raise EchoMaskError(f"{os.path.basename(path)} has no armature named '{armature_name}' "
                                f"(armatures: {', '.join(o.name for o in arms) or 'none'}).")
        return obj
    if not arms:
        raise EchoMaskError(f"{os.path.basename(path)} holds no armature.")
    if len(arms) > 1:
        raise EchoMaskError(f"{os.path.basename(path)} holds several armatures ({', '.join(o.name for o in arms)}): "
                            f"say which with --armature.")
    return arms[0]


def task_retarget(request: dict) -> dict:
    """Keys: take, rig (path), out (path: .fbx/.bvh/.blend), preset (mixamo|rigify|ue5|smplx|auto),
    map (a bone-map .json or null), armature (name or null), root_motion, foot_correction."""
    from ..core.errors import EchoMaskError
    from ..core.retarget.bone_map import load_bone_map, preset_path
    from ..core.retarget.solve import RetargetOptions
    from ..core.motion.take import load_take, resample_take
    from .exchange import export
    from .rigs import bone_mapping, retarget
    from .takes import nla as takes

    out = os.path.abspath(os.path.expanduser(request["out"]))
    ext = os.path.splitext(out)[1].lower()
    if ext not in (".fbx", ".bvh", ".blend"):
        raise EchoMaskError(f"Cannot write '{ext or out}': the output must be a .fbx, .bvh or .blend file.")
    if not os.path.isdir(os.path.dirname(out)):
        raise EchoMaskError(f"Cannot write {out}: the folder {os.path.dirname(out)} does not exist.")
    take = load_take(request["take"])
    obj = _load_rig(os.path.abspath(request["rig"]), request.get("armature"))
    context = bpy.context
    if request.get("map"):
        bone_map = load_bone_map(request["map"])
    elif (request.get("preset") or "auto") == "auto":
        bone_map = retarget.auto_map(obj)
    else:
        name = request["preset"]
        bone_map = load_bone_map(preset_path(name))
        if name == "mixamo" and not any(":" in b for b in obj.data.bones.keys()):
            bone_map = load_bone_map(preset_path("mixamo_plain"))
    options = RetargetOptions(root_motion=request.get("root_motion") or "TRAVEL",
                              foot_correction=bool(request.get("foot_correction", True)))
    scene = context.scene
    scene.render.fps, scene.render.fps_base = int(round(take.fps)), 1.0
    if abs(scene.render.fps - take.fps) > 1e-6:
        take = resample_take(take, float(scene.render.fps))
    label = os.path.splitext(os.path.basename(request["take"]))[0]
    info, notes = bone_mapping.apply_bone_map(context, obj, bone_map, options, take, name=label, frame_start=1)
    scene.frame_start, scene.frame_end = info.frame_start, info.frame_end
    result = {"armature": obj.name, "take": info.name, "frames": info.frame_end - info.frame_start + 1,
              "mapped": len(retarget.plan_for(obj)[1].bones), "notes": notes, "bone_map": bone_map.name}
    if ext == ".blend":
        bpy.ops.wm.save_as_mainfile(filepath=out, check_existing=False)
    elif ext == ".fbx":
        export.export_fbx(context, obj, out, take=info.name)
    else:
        export.export_bvh(context, obj, out, take=info.name)
    result["out"] = out
    assert takes.playing_take(obj) is not None
    return result
