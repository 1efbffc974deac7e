"""EchoMask for Blender: speech in, whole-body SMPL-X gesture out.

The repository root is the extension root. Blender imports this package and calls register(), which
registers the bpy layer in `echomask_blender`. The `core` sub-package never imports bpy (it also runs as
the worker process and the CLI), so importing this file without Blender must not fail either.
"""


def register():
    from .echomask_blender import register as register_blender

    register_blender()


def unregister():
    from .echomask_blender import unregister as unregister_blender

    unregister_blender()
