"""EchoMask's Blender layer (bpy only here; all maths and file formats live in the sibling `core` package).

Modules: compat (every 4.2/4.5/5.0 difference), rig (SMPL-X armature), mesh (skinned mesh from the user's
SMPL-X model), keys (bulk take writer), scene_io (import/export of takes), operators, preferences, and
headless.py (the script core/jobs/blender_bridge.py runs). `register()` registers one list of classes.
"""
import bpy

from . import bone_mapping, face_mapping, operators, preferences, workflow

CLASSES = (*preferences.CLASSES, *operators.CLASSES, *face_mapping.CLASSES, *bone_mapping.CLASSES, *workflow.CLASSES)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    workflow.register_properties()
    face_mapping.register_properties()
    bone_mapping.register_properties()
    for menu, draw in operators.MENUS:
        menu.append(draw)


def unregister():
    for menu, draw in reversed(operators.MENUS):
        menu.remove(draw)
    bone_mapping.unregister_properties()
    face_mapping.unregister_properties()
    workflow.unregister_properties()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
