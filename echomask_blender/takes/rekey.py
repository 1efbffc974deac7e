"""Tweak a take without losing work: re-key a range or body parts, simplify keys, scale intensity.

Each tool makes a NEW take from the playing one (the original stays on its NLA track):
- Re-key: the playing take (the animator's edits included) goes to the worker as known frames
  (`known_take`/`known_mask`, see core/motion/take_parts.py); the masked model fills in the chosen parts inside
  the chosen range. The new take is an exact copy of the old one — every key outside the range, with all
  its attributes, bit for bit — with the regenerated channels' keys inside the range replaced (a few
  frames at each inside edge crossfade from old to new).
- Simplify keys: dense per-frame keys -> key poses within a tolerance and a key budget (core/motion/keyreduce.py),
  linear; the rotation error left is measured and reported.
- Intensity: gestures bigger or smaller around the rest pose (core/motion/intensity.py).
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import bpy
import numpy as np

from ...core.motion import rotations as R
from ...core.errors import EchoMaskError, RigError
from ...core.motion.intensity import scale_take
from ...core.motion.keyreduce import interpolate_kept, quaternion_angle_deg, quaternion_tolerance, reduce_keys
from ...core.motion.take import Take, save_take
from ...core.motion.take_parts import ANIM_PARTS, PART_JOINT_INDICES, check_parts, model_parts
from .. import compat
from ..rigs import retarget
from ..run import runtime_ops, speech_source
from ..run.generation_run import GenerationRun, RunModal, build_request, current_run, launch_run, new_job_dir
from .keys import (EXPRESSION_KEY, bone_quaternions, channels_to_quaternions, expression_meshes, pose_bone_path,
                   rotation_channels, rotation_property, shape_key_path)
from ..settings import selected_parts
from ..ui.poll import DisabledReasonPoll
from ..rigs.rig import BONE_NAMES, check_smplx_armature, rig_frames
from .nla import (BODY, MAX_NAME, CurveKeys, StagedActions, StagedTake, bone_rotation_samples, channelbag_curves,
                    face_tracks, get_take_action, keyed_rotation_mode, playing_take, playing_take_reason,
                    read_curve_keys, read_take, sample_fcurve, take_info, take_strip_slot, write_staged)


def derived_name(source: str, suffix: str) -> str:
    room = MAX_NAME - len(suffix.encode())
    stem = source
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return stem + suffix


def _source_curves(armature, action) -> dict:
    """{owner: {(path, index): fcurve}} of a take: BODY for the rig, the mesh name for each face."""
    out = {BODY: channelbag_curves(action, take_strip_slot(armature, action))}
    meshes = {m.data.shape_keys.name: m.name for m in expression_meshes(armature)}
    for key, track in face_tracks(armature, action):
        strip = track.strips[0]
        slot = compat.strip_slot(strip)
        if key.name in meshes:
            out[meshes[key.name]] = channelbag_curves(strip.action, slot)
    return out


# ------------------------------------------------------------------------------------------ re-key

def known_mask(num_frames: int, take_start: int, start: int, end: int, parts) -> np.ndarray:
    """(frames, 5) bool: True = keep (known); False for the regenerated parts inside [start, end]."""
    mask = np.ones((num_frames, len(ANIM_PARTS)), bool)
    a = max(0, start - take_start)
    b = min(num_frames - 1, end - take_start)
    for p in check_parts(parts):
        mask[a:b + 1, ANIM_PARTS.index(p)] = False
    return mask


def _blend_weights(n: int, blend: int) -> np.ndarray:
    """Weight of the new motion for n range frames: ramps over `blend` frames at each inside edge."""
    w = np.ones(n)
    blend = min(blend, n // 2)
    for k in range(blend):
        ramp = (k + 1) / (blend + 1)
        w[k] = min(w[k], ramp)
        w[n - 1 - k] = min(w[n - 1 - k], ramp)
    return w


def _splice(old: CurveKeys | None, frames: np.ndarray, values: np.ndarray, owner: str, path: str, index: int,
            group: str) -> CurveKeys:
    """Old keys outside [frames[0], frames[-1]] exactly as they were + new linear keys inside."""
    n = len(frames)
    new_co = np.empty(2 * n, np.float32)
    new_co[0::2], new_co[1::2] = frames, values
    new_attrs = {"handle_left": new_co.copy(), "handle_right": new_co.copy()}
    defaults = {"interpolation": bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value,
                "handle_left_type": bpy.types.Keyframe.bl_rna.properties["handle_left_type"].enum_items["AUTO_CLAMPED"].value,
                "handle_right_type": bpy.types.Keyframe.bl_rna.properties["handle_right_type"].enum_items["AUTO_CLAMPED"].value}
    if old is None:
        attrs = dict(new_attrs)
        from .nla import KEY_ATTRIBUTES

        for name in KEY_ATTRIBUTES:
            prop = bpy.types.Keyframe.bl_rna.properties[name]
            dtype = np.int32 if prop.type == "ENUM" else np.float32
            default = defaults.get(name, prop.default if prop.type != "ENUM" else prop.enum_items[prop.default].value)
            attrs[name] = np.full(n, default, dtype)
        return CurveKeys(owner, path, index, frames.astype(np.float32), values.astype(np.float32), group, attrs)
    before = old.frames < frames[0] - 1e-4
    after = old.frames > frames[-1] + 1e-4
    out_frames = np.concatenate([old.frames[before], frames.astype(np.float32), old.frames[after]])
    out_values = np.concatenate([old.values[before], values.astype(np.float32), old.values[after]])
    attrs = {}
    for name, arr in old.attributes.items():
        if name in ("handle_left", "handle_right"):
            pairs = arr.reshape(-1, 2)
            attrs[name] = np.concatenate([pairs[before], new_attrs[name].reshape(-1, 2), pairs[after]]).ravel()
        else:
            fill = defaults.get(name, arr[0] if len(arr) else 0)
            attrs[name] = np.concatenate([arr[before], np.full(n, fill, arr.dtype), arr[after]])
    return CurveKeys(owner, path, index, out_frames, out_values, old.group, attrs)


class StagedRekey(StagedActions):
    """The source take copied exactly, with `parts` replaced by `new_take` inside [start, end]."""

    def __init__(self, armature, source: str, new_take: Take, *, start: int, end: int, parts, blend: int,
                 name: str):
        check_smplx_armature(armature)
        action = get_take_action(armature, source)
        info = take_info(armature, action)
        parts = check_parts(parts)
        start, end = max(start, info.frame_start), min(end, info.frame_end, info.frame_start + new_take.num_frames - 1)
        if end < start:
            raise EchoMaskError(f"The range lies outside the take (frames {info.frame_start}–{info.frame_end}).")
        curves = _source_curves(armature, action)
        face_meshes = [bpy.data.objects[m] for m in curves if m != BODY]
        if "face" in parts and not face_meshes:
            face_meshes = expression_meshes(armature)
        all_parts = tuple(p for p in ANIM_PARTS if p in set(info.parts) | set(parts))
        super().__init__(armature, name=name, parts=all_parts, fps=new_take.fps, frame_start=info.frame_start,
                         frame_end=info.frame_end, face_meshes=face_meshes)
        self.source = source
        self.range = (start, end)
        frames = np.arange(start, end + 1, dtype=np.float64)
        rows = (frames - info.frame_start).astype(int)
        weights = _blend_weights(len(frames), blend)
        rig = rig_frames(armature)
        replaced: dict[tuple, np.ndarray] = {}   # (owner, path, index) -> values on `frames`
        mapped = retarget.is_mapped(armature)    # a character's own rig: its channels (retarget.py)
        if mapped:
            replaced.update(retarget.rekey_channels(armature, new_take, parts, frames, rows, weights, curves[BODY]))
        joints = sorted(j for p in parts for j in PART_JOINT_INDICES[p])
        if joints and not mapped:
            new_q = bone_quaternions(rig, new_take)[rows]
            for j in joints:
                pose_bone = armature.pose.bones[BONE_NAMES[j]]
                # the rotation property the source keys for this bone (else the bone's own mode)
                mode = keyed_rotation_mode(curves[BODY], pose_bone) or pose_bone.rotation_mode
                path = pose_bone_path(BONE_NAMES[j], rotation_property(mode)[0])
                old_values = bone_rotation_samples(curves[BODY], pose_bone, mode, frames)
                old_q = channels_to_quaternions(old_values, mode)
                q = new_q[:, j].copy()
                if np.dot(q[0], old_q[0]) < 0:   # same hemisphere as the keys around it: no spin
                    q = -q
                q = R.quaternion_slerp(old_q, q, weights)
                values = rotation_channels(q, mode, reference=old_values[0])   # continuous with the old keys
                for c in range(values.shape[1]):
                    replaced[(BODY, path, c)] = values[:, c]
        if "root" in parts and not mapped:
            path = pose_bone_path(BONE_NAMES[0], "location")
            new_loc = rig.pelvis_location(new_take.trans.astype(np.float64))[rows]
            for c in range(3):
                fc = curves[BODY].get((path, c))
                old = sample_fcurve(fc, frames) if fc is not None else np.zeros(len(frames))
                replaced[(BODY, path, c)] = old + weights * (new_loc[:, c] - old)
        if "face" in parts:
            for mesh in self.face_meshes:
                mesh_curves = curves.get(mesh, {})
                for i in range(new_take.expressions.shape[1]):
                    path = shape_key_path(EXPRESSION_KEY.format(i))
                    if EXPRESSION_KEY.format(i) not in bpy.data.objects[mesh].data.shape_keys.key_blocks:
                        break
                    fc = mesh_curves.get((path, 0))
                    old = sample_fcurve(fc, frames) if fc is not None else np.zeros(len(frames))
                    replaced[(mesh, path, 0)] = old + weights * (new_take.expressions[rows, i] - old)
        # exact copies of every existing curve, with the replaced range spliced in
        for owner, owner_curves in curves.items():
            for (path, index), fc in owner_curves.items():
                keys = read_curve_keys(fc, owner)
                values = replaced.pop((owner, path, index), None)
                if values is not None:
                    keys = _splice(keys, frames, values, owner, path, index, keys.group)
                self.pending.append(keys)
        for (owner, path, index), values in replaced.items():   # channels the source take did not key
            group = "Expressions" if owner != BODY else path.split('"')[1]
            self.pending.append(_splice(None, frames, values, owner, path, index, group))


def rekey_blocker(context) -> str | None:
    if current_run() is not None:
        return "A generation is running: wait for it or cancel it."
    settings = context.scene.echomask
    rig = settings.target
    if rig is None:
        return "Pick the SMPL-X rig in the EchoMask panel."
    try:
        check_smplx_armature(rig)
    except RigError as err:
        return str(err)
    take = playing_take(rig)
    if take is None:
        return "The rig has no playing take to re-key: generate one first."
    if not selected_parts(settings):
        return "Tick the body parts to regenerate."
    a, b = settings.rekey_start, settings.rekey_end
    if b < a:
        return f"The re-key range {a}–{b} is empty."
    if b < take.frame_start or a > take.frame_end:
        return f"The re-key range {a}–{b} lies outside the playing take (frames {take.frame_start}–{take.frame_end})."
    try:
        runtime_ops.choose_python(context)
    except EchoMaskError as err:
        return str(err)
    return None


def _rekey_speech(context, rig, source) -> speech_source.SpeechPlan:
    """The speech the source take was made from, over the take's frames."""
    action = get_take_action(rig, source.name)
    scene = context.scene
    kind = str(action.get("echomask_source", "MIX"))
    if kind == "FILE":
        path = speech_source.resolve_file(str(action.get("echomask_audio_file", "")))
        return speech_source.SpeechPlan("FILE", source.frame_start, None, source.audio, file=path,
                                        description=f"'{os.path.basename(path)}'")
    if kind == "STRIP":
        name = str(action.get("echomask_strip", ""))
        strip = next((s for s in compat.all_sound_strips(scene) if s.name == name), None)
        if strip is None:
            raise EchoMaskError(f"The sound strip '{name}' this take was made from is gone. Re-keying needs its "
                                "speech: put the strip back, or generate a new take.")
        problem = speech_source.sound_file_problem(strip.sound)
        if problem:
            raise EchoMaskError(f"The sound strip '{name}' cannot be used: {problem}. Relink it to the take's "
                                "speech, or generate a new take.")
        description = speech_source.strip_description(strip)
        if strip.sound.packed_file is not None:
            return speech_source.SpeechPlan("STRIP", source.frame_start, None, source.audio, packed_strip=name,
                                            description=description)
        return speech_source.SpeechPlan("STRIP", source.frame_start, None, source.audio,
                                        file=speech_source.sound_path(strip.sound), description=description)
    if not compat.HAS_AUDASPACE:
        raise EchoMaskError("This Blender build cannot mix the scene's sound, which re-keying this take needs.")
    if not speech_source.strips_in_range(scene, source.frame_start, source.frame_end):
        raise EchoMaskError(f"No sound strip plays in the take's frames {source.frame_start}–{source.frame_end}: "
                            "re-keying needs the speech the take was made from.")
    return speech_source.SpeechPlan("MIX", source.frame_start, source.frame_end, source.audio,
                                    description=speech_source.mix_description(source.frame_start, source.frame_end))


def start_rekey(context) -> GenerationRun:
    reason = rekey_blocker(context)
    if reason:
        raise EchoMaskError(reason)
    scene = context.scene
    settings = scene.echomask
    rig = settings.target
    source = playing_take(rig)
    parts = selected_parts(settings)
    start, end = max(settings.rekey_start, source.frame_start), min(settings.rekey_end, source.frame_end)
    plan = _rekey_speech(context, rig, source)
    choice = runtime_ops.choose_python(context)
    fps = speech_source.scene_fps(scene)
    job_dir = new_job_dir()
    try:
        audio = speech_source.materialize(plan, scene, job_dir)
        known = read_take(rig, source.name, fps=fps)
        known_path = os.path.join(job_dir, "known_take.npz")
        save_take(known, known_path)
        mask_path = os.path.join(job_dir, "known_mask.npy")
        np.save(mask_path, known_mask(known.num_frames, source.frame_start, start, end, parts))
        request = build_request(settings, audio, os.path.join(job_dir, "take.npz"), fps, parts,
                                runtime_ops.weights_path(context), plan.description)
        request.update(known_take=known_path, known_mask=mask_path, parts=model_parts(parts))
        name = derived_name(source.name, f" · rekey {start}-{end}")
        blend = int(settings.rekey_blend)
        action = get_take_action(rig, source.name)
        meta = {k[len("echomask_"):]: action[k] for k in action.keys()
                if k.startswith("echomask_") and k not in ("echomask_take", "echomask_frame_start",
                                                           "echomask_frame_end", "echomask_fps", "echomask_parts",
                                                           "echomask_face_actions")}
        meta.update(seed=int(settings.seed), rekey_of=source.name, rekey_range=f"{start}-{end}")

        def make_staged(ctx, take, rig_name=rig.name):
            return StagedRekey(bpy.data.objects[rig_name], source.name, take, start=start, end=end, parts=parts,
                               blend=blend, name=name)

        run = GenerationRun(scene=scene.name, armature=rig.name,
                            command=choice.command(["--request", os.path.join(job_dir, "request.json")]),
                            request=request, job_dir=job_dir, frame_start=source.frame_start, parts=parts, name=name,
                            meta=meta, trim_to=known.num_frames, max_end=None, make_staged=make_staged,
                            runtime_choice=choice)
    except Exception:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return launch_run(context, run)


class ECHOMASK_OT_rekey(RunModal, bpy.types.Operator):
    """Regenerate the ticked body parts in the re-key range, keeping everything else (your edits included)
    as known frames. Makes a new take; Esc cancels"""

    bl_idname = "echomask.rekey"
    bl_label = "Re-key Range"
    bl_options = {"REGISTER"}

    @classmethod
    def disabled_reason(cls, context):
        return rekey_blocker(context)

    def start_run(self, context):
        start_rekey(context)


# ------------------------------------------------------------------------------------------ simplify

@dataclasses.dataclass
class SimplifyResult:
    info: object                 # the new take's TakeInfo
    kept: int                    # key poses (Per Bone: the most any bone kept)
    total: int                   # frames of the source take
    max_error_deg: float         # largest rotation error of any bone at any frame, as the new keys play
    mean_error_deg: float        # over every rotation-keyed bone and frame
    worst_bone: str              # where the largest error is
    budget_reached: bool         # the key budget stopped before every frame was within the tolerances

    def report(self, rotation_deg: float, budget_percent: float | None) -> str:
        text = (f"'{self.info.name}': {self.kept} key poses for {self.total} frames "
                f"({100.0 * self.kept / max(1, self.total):.0f}%); rotation error max {self.max_error_deg:.1f}° "
                f"({self.worst_bone}), mean {self.mean_error_deg:.2f}°.")
        if self.budget_reached and budget_percent is not None:
            text += (f" The key budget ({budget_percent:g}% of the frames) was reached before the {rotation_deg:g}° "
                     "tolerance: raise the budget for a smaller error.")
        return text


def simplify_take(armature, source: str, *, rotation_deg: float, location: float, expression: float,
                  mode: str = "POSE", max_keys: int | None = None) -> SimplifyResult:
    """A new take with the source's keys reduced to key poses within the tolerances, at most `max_keys`
    of them (None: as many as the tolerances need; the largest errors are taken care of first), and the
    rotation error left (measured as the new keys play: Blender interpolates the kept keys linearly)."""
    action = get_take_action(armature, source)
    info = take_info(armature, action)
    curves = _source_curves(armature, action)
    frames = np.arange(info.frame_start, info.frame_end + 1, dtype=np.float64)
    rig = rig_frames(armature)
    channels, groups, tolerances, layout = [], [], [], []   # layout: (owner, path, index) per channel
    rotations = {}   # group number -> (bone, rotation mode) of the rotation groups, to measure their error
    col = 0

    def add_group(owner, path, indices, tol):
        nonlocal col
        fcs = [curves[owner][(path, i)] for i in indices]
        for fc, i in zip(fcs, indices):
            channels.append(sample_fcurve(fc, frames))
            layout.append((owner, path, i, fc))
        groups.append(slice(col, col + len(indices)))
        tolerances.append(tol)
        col += len(indices)

    def bone_of(path):
        return armature.pose.bones[path.split('"')[1]]

    passthrough = []
    for owner, owner_curves in curves.items():
        seen = set()
        for (path, index), fc in owner_curves.items():
            if (path, index) in seen:
                continue
            if owner == BODY and path.endswith(".rotation_quaternion") and all((path, c) in owner_curves for c in range(4)):
                rotations[len(groups)] = (bone_of(path).name, "QUATERNION")
                add_group(owner, path, range(4), quaternion_tolerance(rotation_deg))
                seen.update((path, c) for c in range(4))
            elif owner == BODY and path.endswith(".rotation_euler") and all((path, c) in owner_curves for c in range(3)):
                # the rotation between two Euler triples is at most the sum of their angle differences,
                # <= sqrt(3) x their distance: this tolerance keeps the rotation error within rotation_deg
                own = bone_of(path).rotation_mode
                rotations[len(groups)] = (bone_of(path).name, own if rotation_property(own)[1] == 3 else "XYZ")
                add_group(owner, path, range(3), np.radians(rotation_deg) / np.sqrt(3.0))
                seen.update((path, c) for c in range(3))
            elif owner == BODY and path.endswith(".location") and all((path, c) in owner_curves for c in range(3)):
                add_group(owner, path, range(3), location * rig.scale)
                seen.update((path, c) for c in range(3))
            elif owner != BODY and path.startswith("key_blocks["):
                add_group(owner, path, [index], expression)
                seen.add((path, index))
            else:
                passthrough.append(read_curve_keys(fc, owner))
                seen.add((path, index))
    if not channels:
        raise EchoMaskError(f"The take '{source}' has no keys to simplify.")
    values = np.stack(channels, 1)
    budget = None if max_keys is None else max(2, int(max_keys))
    if mode == "POSE":   # key poses per Action: the rig's bones together, each face's shape keys together
        kept_per_group = [None] * len(groups)
        for owner in dict.fromkeys(layout[g.start][0] for g in groups):
            mine = [n for n, g in enumerate(groups) if layout[g.start][0] == owner]
            cols = np.concatenate([np.arange(groups[n].start, groups[n].stop) for n in mine])
            local, at = [], 0
            for n in mine:
                local.append(slice(at, at + groups[n].stop - groups[n].start))
                at = local[-1].stop
            kept = reduce_keys(frames, values[:, cols], local, [tolerances[n] for n in mine], max_keys=budget)
            for n in mine:
                kept_per_group[n] = kept
    elif mode == "CHANNEL":
        kept_per_group = [reduce_keys(frames, values[:, g], [slice(0, g.stop - g.start)], [t], max_keys=budget)
                          for g, t in zip(groups, tolerances)]
    else:
        raise EchoMaskError(f"Unknown simplify mode '{mode}' (use POSE or CHANNEL).")
    errors, worst, within = [], (0.0, ""), True
    for g, (bone, rotation_mode) in rotations.items():
        sl, kept = groups[g], kept_per_group[g]
        played = interpolate_kept(frames, values[:, sl], kept)
        angle = quaternion_angle_deg(channels_to_quaternions(values[:, sl], rotation_mode),
                                     channels_to_quaternions(played, rotation_mode))
        errors.append(angle)
        if angle.max() > worst[0]:
            worst = (float(angle.max()), bone)
    for g, (sl, tol) in enumerate(zip(groups, tolerances)):   # did every group end within its tolerance?
        diff = values[:, sl] - interpolate_kept(frames, values[:, sl], kept_per_group[g])
        within &= bool(np.linalg.norm(diff, axis=1).max() <= tol * (1 + 1e-9))
    face_meshes = [bpy.data.objects[m] for m in curves if m != BODY]
    staged = StagedActions(armature, name=derived_name(source, " · simplified"), parts=info.parts, fps=float(
        action.get("echomask_fps", speech_source.scene_fps(bpy.context.scene))), frame_start=info.frame_start,
        frame_end=info.frame_end, face_meshes=face_meshes)
    kept_total = 0   # the rig's key poses (Per Bone: the most any bone kept); faces are reduced on their own
    for g, kept in zip(groups, kept_per_group):
        if layout[g.start][0] == BODY or not any(layout[h.start][0] == BODY for h in groups):
            kept_total = max(kept_total, len(kept))
        for c in range(g.start, g.stop):
            owner, path, index, fc = layout[c]
            group = fc.group.name if fc.group is not None else ""
            staged.pending.append(CurveKeys(owner, path, index, frames[kept], values[kept, c], group))
    staged.pending.extend(passthrough)
    meta = {k[len("echomask_"):]: action[k] for k in action.keys()
            if k.startswith("echomask_") and k in ("echomask_audio", "echomask_seed", "echomask_source",
                                                   "echomask_audio_file", "echomask_strip")}
    meta["simplified_from"] = source
    all_errors = np.concatenate(errors) if errors else np.zeros(1)
    return SimplifyResult(write_staged(staged, meta), kept_total, len(frames), worst[0], float(all_errors.mean()),
                          worst[1], budget is not None and not within)


def key_budget(frames: int, percent: float) -> int | None:
    """The most keys Simplify Keys keeps for a take of `frames` frames (None at 100%: no budget)."""
    return None if percent >= 100 else max(2, int(round(frames * percent / 100.0)))


class ECHOMASK_OT_simplify_keys(DisabledReasonPoll, bpy.types.Operator):
    """Make a copy of the playing take with editable key poses for hand-editing: at most the key budget's
    share of the frames, largest errors fixed first, within the tolerances where the budget allows (the
    report says the rotation error left)"""

    bl_idname = "echomask.simplify_keys"
    bl_label = "Simplify Keys"
    bl_options = {"REGISTER", "UNDO"}

    rotation: bpy.props.FloatProperty(name="Rotation (°)", default=-1.0, options={"SKIP_SAVE"})
    location: bpy.props.FloatProperty(name="Location", default=-1.0, options={"SKIP_SAVE"})
    expression: bpy.props.FloatProperty(name="Expression", default=-1.0, options={"SKIP_SAVE"})
    budget: bpy.props.FloatProperty(name="Key Budget (%)", default=-1.0, options={"SKIP_SAVE"})

    @classmethod
    def disabled_reason(cls, context):
        return playing_take_reason(context)

    def execute(self, context):
        settings = context.scene.echomask
        rig = settings.target
        rotation = self.rotation if self.rotation > 0 else settings.simplify_rotation
        budget = self.budget if self.budget > 0 else settings.simplify_budget
        try:
            source = playing_take(rig)
            result = simplify_take(
                rig, source.name, rotation_deg=rotation,
                location=self.location if self.location > 0 else settings.simplify_location,
                expression=self.expression if self.expression > 0 else settings.simplify_expression,
                mode=settings.simplify_mode, max_keys=key_budget(source.frame_end - source.frame_start + 1, budget))
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, result.report(rotation, budget if budget < 100 else None))
        return {"FINISHED"}


# ------------------------------------------------------------------------------------------ intensity

def scale_take_intensity(armature, source: str, scale: float, parts) -> object:
    action = get_take_action(armature, source)
    info = take_info(armature, action)
    parts = tuple(p for p in check_parts(parts) if p in info.parts)
    if not parts:
        raise EchoMaskError("None of the ticked body parts is in this take: tick a part it animates.")
    take = read_take(armature, source)
    scaled = scale_take(take, scale, parts)
    staged = StagedTake(armature, scaled, name=derived_name(source, f" · x{scale:g}"), frame_start=info.frame_start,
                        parts=info.parts)
    meta = {k[len("echomask_"):]: action[k] for k in action.keys()
            if k in ("echomask_audio", "echomask_seed", "echomask_source", "echomask_audio_file", "echomask_strip")}
    meta.update(scaled_from=source, scale=float(scale))
    return write_staged(staged, meta)


class ECHOMASK_OT_scale_intensity(DisabledReasonPoll, bpy.types.Operator):
    """Make a copy of the playing take with the ticked body parts' motion scaled around the rest pose"""

    bl_idname = "echomask.scale_intensity"
    bl_label = "Scale Intensity"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def disabled_reason(cls, context):
        return playing_take_reason(context)

    def execute(self, context):
        settings = context.scene.echomask
        try:
            source = playing_take(settings.target)
            info = scale_take_intensity(settings.target, source.name, settings.intensity_scale, selected_parts(settings))
        except EchoMaskError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"New take '{info.name}' is playing.")
        return {"FINISHED"}


CLASSES = (ECHOMASK_OT_rekey, ECHOMASK_OT_simplify_keys, ECHOMASK_OT_scale_intensity)
