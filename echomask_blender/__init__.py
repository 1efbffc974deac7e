"""EchoMask's Blender layer (bpy only here; all maths and file formats live in the sibling `core` package).

Folders by role: ui/ (panel, preferences, disabled-reason poll), run/ (Generate, the warm worker, the speech
source, the generator runtime), takes/ (the key writer, takes as NLA tracks, re-key tools), rigs/ (SMPL-X
armature and mesh, the animator's own characters: bone and face mapping), exchange/ (import, FBX/BVH/npz
export, menu operators), preview/ (Render Preview). compat.py holds every Blender-version difference;
workflow.py lists the workflow's classes; headless.py, preview_job.py and retarget_job.py are the scripts a
background Blender runs (core/jobs/blender_bridge.py, Render Preview). `register()` registers one list.
"""
import bpy

from . import workflow
from .exchange import operators
from .rigs import bone_mapping, face_mapping
from .ui import preferences

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
