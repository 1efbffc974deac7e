"""Add-on preferences: where the user's own SMPL-X model file is (EchoMask never ships it)."""
from __future__ import annotations

import bpy

from ..run.runtime_ops import ADDON_PACKAGE, RuntimePreferences


class EchoMaskPreferences(RuntimePreferences, bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    smplx_model_path: bpy.props.StringProperty(
        name="SMPL-X model",
        description="Your own SMPL-X model file (.npz, e.g. SMPLX_NEUTRAL_2020.npz from smpl-x.is.tue.mpg.de). "
                    "When set, new rigs also get the skinned body mesh with expression shape keys",
        subtype="FILE_PATH",
        default="",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "smplx_model_path")
        layout.label(text="The SMPL-X model is licensed separately; EchoMask never includes it.", icon="INFO")
        self.draw_runtime(context, layout)


def get_preferences(context: bpy.types.Context | None = None):
    """The preferences, or None when the add-on is registered without Blender's add-on system (tests)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None else None


def smplx_model_path(context: bpy.types.Context | None = None) -> str:
    prefs = get_preferences(context)
    return prefs.smplx_model_path if prefs is not None else ""


CLASSES = (EchoMaskPreferences,)
