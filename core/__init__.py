"""EchoMask core: everything that runs without Blender.

Audio, speech features, the EchoMask model, training, inference, SMPL-X maths, takes, metrics, the CLI and
the worker. Never imports bpy; uses relative imports only, so it works as the extension's sub-package, as a
worker process (`python -m core.jobs.worker`) and from the command line (`python -m core`). Heavy modules
(torch, librosa) are imported by the submodules that need them, never here.
"""

__version__ = "0.1.0"
