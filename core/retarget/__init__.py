"""Body retargeting: SMPL-X takes onto any character's armature (Mixamo, Rigify, Unreal, custom rigs).

No bpy here. `bone_map` pairs SMPL-X joints with a rig's bones (presets, matching by name, checks),
`solve` turns a take into that rig's per-bone local rotations and root location (and back), by comparing
rest directions in a common space, vectorised over all frames; `quality` measures the result.
"""
from .bone_map import (BONE_MAP_FORMAT, BoneMap, BoneMapError, BoneRow, auto_match, list_presets, load_bone_map,
                       preset_path, resolve_bone_map, save_bone_map)
from .solve import RetargetError, RetargetOptions, RetargetPlan, RetargetResult, TargetBone, TargetRig, plan_retarget

__all__ = ["BONE_MAP_FORMAT", "BoneMap", "BoneMapError", "BoneRow", "auto_match", "list_presets", "load_bone_map",
           "preset_path", "resolve_bone_map", "save_bone_map", "RetargetError", "RetargetOptions", "RetargetPlan",
           "RetargetResult", "TargetBone", "TargetRig", "plan_retarget"]
