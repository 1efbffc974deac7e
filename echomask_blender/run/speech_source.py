"""Where the speech for a generation comes from: the scene's sound strips (mixed), one strip, or a file.

`plan_speech` is cheap and only reads the scene, so the panel can call it on every redraw to say why
Generate is disabled. `materialize` then produces the audio file the worker reads: the file itself, the
bytes of a packed sound written to the job folder, or a 16 kHz mono mixdown of the frame range
(bpy.ops.sound.mixdown, which needs Audaspace: real Blender has it, the PyPI 4.2 wheel does not).
The worker decodes the file (core.speech.audio), so Blender itself needs no audio decoder.
"""
from __future__ import annotations

import dataclasses
import os
import wave

import bpy

from ...core.errors import AudioError
from .. import compat

MIX_RATE = 16000  # the speech features' rate: the mixdown is written at it, so the worker does not resample

SOURCES = (
    ("MIX", "Scene Sound", "Mix every unmuted sound strip in the frame range (what you hear)"),
    ("STRIP", "One Strip", "The speech of one sound strip; the take starts where its sound starts"),
    ("FILE", "File", "A speech file (wav, flac, ogg, mp3); the take starts at the frame range's start"),
)


@dataclasses.dataclass
class SpeechPlan:
    source: str                  # 'MIX', 'STRIP' or 'FILE'
    frame_start: int             # the scene frame where the take's first frame goes
    frame_end: int | None        # last frame when known before decoding (MIX: the range end)
    label: str                   # names the take: the file's or strip's name
    file: str | None = None      # an existing audio file to hand to the worker
    packed_strip: str | None = None   # a strip whose packed sound bytes must be written out first
    add_strip_file: str | None = None  # FILE: put this file on the timeline when the take is applied
    description: str = ""        # the speech in messages: "the sound strip 'line_04'", "'take3.wav'"


def scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


def generation_range(scene, settings) -> tuple[int, int]:
    if settings.range_mode == "CUSTOM":
        return int(settings.frame_start), int(settings.frame_end)
    return int(scene.frame_start), int(scene.frame_end)


def _strip_span(strip) -> tuple[int, int]:
    """First and last frame (inclusive) the strip plays."""
    first, end = compat.strip_span(strip)
    return first, end - 1


def _strip_is_audible(strip) -> bool:
    return not strip.mute and float(getattr(strip, "volume", 1.0)) > 0.0


def sound_file_problem(sound) -> str | None:
    """Why Blender's sound datablock cannot be read (None when it can): missing, empty or undecodable file."""
    if sound is None:
        return "it has no sound"
    if sound.packed_file is not None:
        if compat.sound_decodes(sound) is False:
            return "Blender cannot read its packed sound (damaged, or not audio)"
        return None
    path = sound_path(sound)
    if not path:
        return "it has no file path"
    if getattr(sound, "is_missing", False) or not os.path.isfile(path):
        return f"its file is missing ({path})"
    if os.path.getsize(path) == 0:
        return f"its file is empty ({path})"
    if compat.sound_decodes(sound) is False:
        return f"Blender cannot read its file as sound ({path}: damaged, or not an audio file)"
    return None


def sound_path(sound) -> str:
    """Absolute path of a sound's file (relative '//' paths and linked libraries resolved)."""
    if not sound.filepath:
        return ""
    return os.path.normpath(bpy.path.abspath(sound.filepath, library=sound.library))


def strips_in_range(scene, start: int, end: int) -> list:
    out = []
    for strip in compat.all_sound_strips(scene):
        first, last = _strip_span(strip)
        if last >= start and first <= end:
            out.append(strip)
    return sorted(out, key=lambda s: (s.channel, compat.strip_span(s)[0]))


def resolve_file(path: str) -> str:
    """An absolute, existing, non-empty audio file path (AudioError with what to do otherwise)."""
    if not path:
        raise AudioError("No speech file is chosen. Pick one in the EchoMask panel (Audio > File).")
    if path.startswith("//") and not bpy.data.filepath:
        raise AudioError(f"The speech file path {path} is relative to the .blend file, which is not saved yet. "
                         "Save the .blend file first, or choose the file again (absolute path).")
    resolved = os.path.normpath(os.path.abspath(os.path.expanduser(bpy.path.abspath(path))))
    if not os.path.exists(resolved):
        raise AudioError(f"Speech file not found: {resolved}. Check the path in the EchoMask panel.")
    if os.path.isdir(resolved):
        raise AudioError(f"{resolved} is a folder, not a speech file.")
    if os.path.getsize(resolved) == 0:
        raise AudioError(f"The speech file {os.path.basename(resolved)} is empty (0 bytes).")
    return resolved


def plan_speech(scene, settings) -> SpeechPlan:
    """Check the chosen audio source against the scene; AudioError (with what to do) when it cannot work."""
    start, end = generation_range(scene, settings)
    if end < start:
        raise AudioError(f"The frame range {start}–{end} is empty: its end is before its start.")
    source = settings.audio_source
    if source == "FILE":
        path = resolve_file(settings.audio_file)
        label = os.path.splitext(os.path.basename(path))[0]
        return SpeechPlan("FILE", start, None, label, file=path, add_strip_file=path,
                          description=f"'{os.path.basename(path)}'")
    if source == "STRIP":
        name = settings.strip
        strip = next((s for s in compat.all_sound_strips(scene) if s.name == name), None) if name else None
        if strip is None:
            if not compat.all_sound_strips(scene):
                raise AudioError("The scene has no sound strip. Add the speech in the Video Sequencer "
                                 "(Add > Sound), or choose 'File' as the audio source.")
            raise AudioError("Choose the sound strip with the speech in the EchoMask panel." if not name else
                             f"There is no sound strip named '{name}' any more. Choose the strip again.")
        if not _strip_is_audible(strip):
            raise AudioError(f"The sound strip '{strip.name}' is muted (or its volume is 0). Unmute it, or "
                             "choose another strip.")
        problem = sound_file_problem(strip.sound)
        if problem:
            raise AudioError(f"The sound strip '{strip.name}' cannot be used: {problem}. Relink it to a working "
                             "audio file (Sequencer > Sidebar > Strip > Sound), or choose another strip.")
        first = int(compat.strip_content_start(strip))  # where the sound's first sample plays (before any trim)
        label = os.path.splitext(strip.name)[0]
        if strip.sound.packed_file is not None:
            return SpeechPlan("STRIP", first, None, label, packed_strip=strip.name, description=strip_description(strip))
        return SpeechPlan("STRIP", first, None, label, file=sound_path(strip.sound), description=strip_description(strip))
    # MIX
    if not compat.HAS_AUDASPACE:
        raise AudioError("This Blender build has no audio support (Audaspace), so the scene's sound cannot "
                         "be mixed. Choose 'File' as the audio source.")
    strips = strips_in_range(scene, start, end)
    if not strips:
        raise AudioError(f"No sound strip plays in frames {start}–{end}. Add the speech in the Video "
                         "Sequencer (Add > Sound), change the frame range, or choose 'File' as the audio source.")
    audible = [s for s in strips if _strip_is_audible(s)]
    if not audible:
        names = ", ".join(s.name for s in strips[:4])
        raise AudioError(f"Every sound strip in frames {start}–{end} is muted ({names}). Unmute the speech.")
    for strip in audible:
        problem = sound_file_problem(strip.sound)
        if problem:
            raise AudioError(f"The sound strip '{strip.name}' cannot be played: {problem}. Relink the file "
                             "(or mute that strip) and try again.")
    label = os.path.splitext(audible[0].name)[0] if len(audible) == 1 else f"{scene.name} mix"
    return SpeechPlan("MIX", start, end, label, description=mix_description(start, end))


def strip_description(strip) -> str:
    return f"the sound strip '{strip.name}'"


def mix_description(start: int, end: int) -> str:
    return f"the scene's sound in frames {start}–{end}"


def _write_packed(strip, folder: str) -> str:
    sound = strip.sound
    ext = os.path.splitext(sound.filepath or "")[1] or ".wav"
    path = os.path.join(folder, "packed_speech" + ext)
    with open(path, "wb") as f:
        f.write(bytes(sound.packed_file.data))
    return path


def mixdown_frames(scene, start: int, end: int, path: str, *, rate: int, channels: str, failure: Exception) -> str:
    """A 16-bit WAV of frames start..end as Blender plays them (strip offsets, trims, volume, mutes), exactly
    that long; raises `failure` when Blender cannot mix."""
    saved = (scene.frame_start, scene.frame_end)
    try:
        scene.frame_start, scene.frame_end = start, end
        with bpy.context.temp_override(scene=scene):
            result = bpy.ops.sound.mixdown(filepath=path, check_existing=False, container="WAV", codec="PCM",
                                           format="S16", mixrate=rate, channels=channels)
    finally:
        scene.frame_start, scene.frame_end = saved
    if "FINISHED" not in result or not os.path.isfile(path):
        raise failure
    # Blender mixes whole buffers, so the file runs a little past the last frame (frames 1-1860 at 30 fps:
    # 992,768 samples, 1861.4 frames). Cut it to exactly the frames asked for: the take, and a re-key of it,
    # then have the same length as the range.
    fit_wav_length(path, int(round((end - start + 1) / scene_fps(scene) * rate)))
    return path


def _mixdown(scene, start: int, end: int, path: str) -> str:
    """16 kHz mono WAV of frames start..end (the generator's input)."""
    return mixdown_frames(scene, start, end, path, rate=MIX_RATE, channels="MONO",
                          failure=AudioError("Blender could not mix the scene's sound (sound mixdown failed). "
                                             "Choose 'File' or 'One Strip' as the audio source."))


def fit_wav_length(path: str, samples: int) -> None:
    """Trim (or pad with silence) a PCM WAV file to exactly `samples` sample frames, in place."""
    with wave.open(path, "rb") as w:
        params = w.getparams()
        data = w.readframes(samples)
    frame_bytes = params.sampwidth * params.nchannels
    data = data[:samples * frame_bytes].ljust(samples * frame_bytes, b"\0")
    with wave.open(path, "wb") as w:
        w.setnchannels(params.nchannels)
        w.setsampwidth(params.sampwidth)
        w.setframerate(params.framerate)
        w.writeframes(data)


def materialize(plan: SpeechPlan, scene, folder: str) -> str:
    """The audio file for the worker (writing packed bytes or a mixdown into `folder` when needed)."""
    os.makedirs(folder, exist_ok=True)
    if plan.source == "MIX":
        return _mixdown(scene, plan.frame_start, plan.frame_end, os.path.join(folder, "speech_mix.wav"))
    if plan.packed_strip:
        strip = next(s for s in compat.all_sound_strips(scene) if s.name == plan.packed_strip)
        return _write_packed(strip, folder)
    return plan.file


def audio_duration(path: str) -> float | None:
    """Seconds of audio when cheap to know (WAV header, or Audaspace); None otherwise."""
    try:
        with wave.open(path, "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, OSError):
        pass
    if compat.HAS_AUDASPACE:
        try:
            import aud

            sound = aud.Sound(path)
            rate = sound.specs[0]
            return float(sound.length) / rate if rate > 0 else None
        except Exception:  # aud.error: unreadable -> the worker explains
            return None
    return None


def frames_for(seconds: float, fps: float) -> int:
    return max(1, int(round(seconds * fps)))


def too_long_message(first: int, last: int, scene, fps: float) -> str:
    frames = last - first + 1
    return (f"The take is {frames} frames ({frames / fps:.1f} s) from frame {first}, so it runs past the scene's "
            f"end frame {scene.frame_end}. Set the scene's End frame to {last} or later (or tick 'Extend Scene' "
            "in the EchoMask panel), or use a shorter sound.")
