"""Every Blender-version difference EchoMask touches, in one place (4.2 LTS, 4.5 LTS, 5.0, 5.2 LTS, 5.3).

- Actions: 4.2/4.3 keep F-curves on `action.fcurves`; 4.4+ have slots, layers, keyframe strips and
  channelbags (`action.fcurves` is a first-slot shim on 4.4/4.5 and gone in 5.0). A slot must be created and
  assigned by hand: an Action assigned without a slot animates nothing.
- NLA strips know which slot they play from 4.4 on (`NlaStrip.action_slot`).
- VSE: `SequenceEditor.sequences` became `strips` (both on 4.4/4.5, only `strips` on 5.0).
- Strip timing: 5.1+ name it `content_start` / `left_handle` / `right_handle` / `duration`; the older
  `frame_start` / `frame_final_start` / `frame_final_end` / `frame_final_duration` still work there but
  warn (DeprecationWarning on 5.3: "expected to be removed in Blender 6.0").
- Sound: the PyPI bpy 4.2 wheel is built without Audaspace (no `aud`, no sound strips).
Callers never test versions themselves; they use these helpers.
"""
from __future__ import annotations

import bpy
import numpy as np

from ..core.errors import AudioError

HAS_SLOTTED_ACTIONS = "slots" in bpy.types.Action.bl_rna.properties
HAS_AUDASPACE = bool(getattr(bpy.app.build_options, "audaspace", True))
_STRIP_TYPE = getattr(bpy.types, "Strip", None) or bpy.types.Sequence   # Sequence before 4.4
HAS_STRIP_HANDLES = "left_handle" in _STRIP_TYPE.bl_rna.properties     # 5.1+

_INTERPOLATION = {item.identifier: item.value
                  for item in bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items}


# --------------------------------------------------------------------------------------------- Actions

def new_action_for(owner_id: bpy.types.ID, name: str):
    """Create a new Action, assign it to `owner_id` (an Object or a shape-key Key) and return
    (action, container) where `container.fcurves` / `.groups` is where its F-curves go.

    On 4.4+ a slot for this owner is created and assigned explicitly, so the keys play.
    """
    action = bpy.data.actions.new(name)
    anim = owner_id.animation_data or owner_id.animation_data_create()
    if not HAS_SLOTTED_ACTIONS:
        action.id_root = owner_id.id_type  # lists the action for this ID type only (4.2/4.3)
        anim.action = action
        return action, action
    slot = action.slots.new(id_type=owner_id.id_type, name=owner_id.name)
    layer = action.layers.new("Layer")
    strip = layer.strips.new(type="KEYFRAME")
    anim.action = action
    anim.action_slot = slot
    return action, strip.channelbag(slot, ensure=True)


def assigned_slot(owner_id: bpy.types.ID):
    """The slot the owner's action plays (None on 4.2/4.3 or when nothing is assigned)."""
    anim = owner_id.animation_data
    if anim is None or not HAS_SLOTTED_ACTIONS:
        return None
    return anim.action_slot


def new_unassigned_action(name: str, id_type: str):
    """A new Action with one slot for `id_type` (4.4+) and a keyframe strip, not assigned to anything."""
    action = bpy.data.actions.new(name)
    if not HAS_SLOTTED_ACTIONS:
        action.id_root = id_type
        return action
    slot = action.slots.new(id_type=id_type, name="EchoMask")
    action.layers.new("Layer").strips.new(type="KEYFRAME").channelbag(slot, ensure=True)
    return action


def action_channels(action: bpy.types.Action):
    """Where a new Action's F-curves go: its first slot's channelbag (4.4+) or the Action itself (4.2/4.3)."""
    if not HAS_SLOTTED_ACTIONS:
        return action
    return action.layers[0].strips[0].channelbag(action.slots[0], ensure=True)


def strip_slot(strip):
    """The slot an NLA strip plays (None on 4.2/4.3, which have no slots)."""
    return strip.action_slot if HAS_SLOTTED_ACTIONS else None


def play_first_slot(strip, action) -> None:
    """Make an NLA strip play its Action's first slot (4.4+; a no-op before slots existed)."""
    if HAS_SLOTTED_ACTIONS and action.slots and strip.action_slot != action.slots[0]:
        strip.action_slot = action.slots[0]


# File-path properties may be relative to the .blend from 4.5 on (older versions reject the option).
FILE_PATH_OPTIONS = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()

KEYFRAME_INTERPOLATION = _INTERPOLATION


def action_fcurves(action: bpy.types.Action, slot=None):
    """F-curves of `action` (for `slot` on 4.4+; the first slot when None). Read-only use."""
    if not HAS_SLOTTED_ACTIONS:
        return list(action.fcurves)
    if slot is None:
        if not action.slots:
            return []
        slot = action.slots[0]
    out = []
    for layer in action.layers:
        for strip in layer.strips:
            bag = strip.channelbag(slot)
            if bag is not None:
                out.extend(bag.fcurves)
    return out


def write_fcurve(container, data_path: str, index: int, frames: np.ndarray, values: np.ndarray,
                 group: str | None = None, interpolation: str = "LINEAR"):
    """One F-curve with all its keys written in bulk (keyframe_points.add + foreach_set).

    `frames` must be increasing (one key per frame).
    """
    fcurve = container.fcurves.new(data_path, index=index)
    if group:
        fcurve.group = container.groups.get(group) or container.groups.new(group)
    n = len(frames)
    points = fcurve.keyframe_points
    points.add(n)
    co = np.empty(2 * n, np.float32)
    co[0::2] = frames
    co[1::2] = values
    points.foreach_set("co", co)
    points.foreach_set("interpolation", np.full(n, _INTERPOLATION[interpolation], np.int32))
    # Keys arrive sorted and unique, so only the handles need computing (fcurve.update() also sorts: ~3x slower).
    points.handles_recalc()
    return fcurve


def stash_active_action(owner_id: bpy.types.ID, track_name: str = "[Stash] EchoMask") -> str | None:
    """Move the owner's active action onto a new muted NLA track, keeping its slot; returns its name.

    The action itself is untouched; the NLA track keeps a user on it so nothing is lost, and the animator
    can bring it back from the NLA editor.
    """
    anim = owner_id.animation_data
    if anim is None or anim.action is None:
        return None
    action = anim.action
    slot = anim.action_slot if HAS_SLOTTED_ACTIONS else None
    start = int(action.frame_range[0])
    track = anim.nla_tracks.new()
    track.name = track_name
    strip = track.strips.new(action.name, start, action)
    if slot is not None and strip.action_slot != slot:
        strip.action_slot = slot
    track.mute = True
    track.lock = True
    anim.action = None
    return action.name


# --------------------------------------------------------------------------------------------- VSE / sound

def sequence_strips(scene: bpy.types.Scene):
    """The top-level strips collection of the scene's sequence editor (None when there is none)."""
    editor = scene.sequence_editor
    if editor is None:
        return None
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_sound_strips(scene: bpy.types.Scene) -> list:
    editor = scene.sequence_editor
    if editor is None:
        return []
    strips = editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all
    return [s for s in strips if s.type == "SOUND"]


def sound_decodes(sound) -> bool | None:
    """Whether Blender could decode this sound datablock's audio: False for a damaged or non-audio file
    (it loads with sample rate 0), None when this build cannot tell (no Audaspace: every sound reads 0)."""
    if not HAS_AUDASPACE:
        return None
    return int(sound.samplerate) > 0


def strip_content_start(strip) -> float:
    """The timeline frame where the strip's content (a sound's first sample) starts, before any trim."""
    return strip.content_start if HAS_STRIP_HANDLES else strip.frame_start


def strip_span(strip) -> tuple[int, int]:
    """(first frame, end frame) the strip plays after trims; the end is exclusive (its first silent frame)."""
    if HAS_STRIP_HANDLES:
        return int(strip.left_handle), int(strip.right_handle)
    return int(strip.frame_final_start), int(strip.frame_final_end)


def strip_duration(strip) -> int:
    """Frames the strip plays after trims."""
    return int(strip.duration if HAS_STRIP_HANDLES else strip.frame_final_duration)


def check_sound_file(path: str) -> None:
    """Raise AudioError unless Blender can decode `path` (checked before anything is created)."""
    if not HAS_AUDASPACE:
        raise AudioError("This Blender build has no audio support (Audaspace), so the speech cannot be "
                         "added as a sound strip. Import the motion without audio, or use a Blender "
                         "build with audio (every official download has it).")
    import aud

    try:
        specs = aud.Sound(path).specs
    except Exception as exc:  # aud.error: no reader could open it
        raise AudioError(f"Blender cannot read the speech file {path}: {exc} Re-export it as WAV.") from None
    if not specs or specs[0] <= 0:
        raise AudioError(f"Blender cannot read the speech file {path}: it reports no sample rate.")


def new_sound_strip(scene: bpy.types.Scene, name: str, filepath: str, frame_start: int, channel: int | None = None):
    """Add a sound strip on the first free channel (or `channel`) starting at `frame_start`."""
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    if channel is None:
        used = {s.channel for s in strips}
        channel = next(c for c in range(1, 129) if c not in used)
    return strips.new_sound(name, filepath, channel, frame_start)
