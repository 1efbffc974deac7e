"""User-facing errors: each carries a message an animator can act on.

Code that rejects bad input raises one of these; the CLI, the worker and the Blender layer show `str(err)`
as it is (no traceback), so messages say what is wrong and what to do about it.
"""


class EchoMaskError(Exception):
    """Base for every error that is the input's fault, not a bug."""


class TakeFormatError(EchoMaskError):
    """A motion file (.npz) is missing fields, has wrong shapes, NaNs or no frames."""


class AudioError(EchoMaskError):
    """Speech audio is missing, unreadable, empty or unusable."""


class RigError(EchoMaskError):
    """The target armature is not an SMPL-X rig (missing bones)."""


class WeightsError(EchoMaskError):
    """Model weights are missing, corrupt or do not match the code's config."""


class DeviceError(EchoMaskError):
    """A compute device was asked for that this machine does not have."""


class SmplxModelError(EchoMaskError):
    """The user's SMPL-X model file (.npz) is missing, unreadable or lacks the arrays a mesh needs."""
