"""RNA data paths of the channels EchoMask keys (F-curve `data_path`s): pose bones and shape keys."""
import bpy


def pose_bone_path(bone: str, prop: str) -> str:
    """RNA path of a pose bone's property (the F-curve data_path)."""
    return f'pose.bones["{bpy.utils.escape_identifier(bone)}"].{prop}'


def shape_key_path(name: str) -> str:
    """RNA path of a shape key's value, relative to its Key datablock."""
    return f'key_blocks["{bpy.utils.escape_identifier(name)}"].value'
