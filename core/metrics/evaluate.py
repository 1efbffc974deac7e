"""`python -m core eval`: one metrics table for several systems against the same reference clips.

Rows: the reference itself (ground truth), a still neutral pose, real motion from a different clip (natural
but out of sync with the speech), EchoMask with random masking instead of SQA (the paper's ablation), the
project's model, and any further `--system NAME=PATH`. Rows without takes print as "pending".
Takes pair with reference clips and speech by clip id (core.metrics.takeset). With `--tail F` only the last
F of each reference clip is scored (the held-out part); generated takes are cut to the same frames, so a
model can be run on the whole speech and scored on its held-out end.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform

import numpy as np

from ..errors import EchoMaskError
from ..paths import SHARED_DATA_DIR, WEIGHTS_DIR
from . import beat, diversity, face, plausibility
from .kinematics import take_positions
from .takeset import AUDIO_EXTENSIONS, TAKE_EXTENSIONS, collect, tail_start
from ..motion.take import Take, load_take, resample_take

SHARED_DATA = str(SHARED_DATA_DIR)
DEFAULT_FGD_WEIGHTS = str(WEIGHTS_DIR / "fgd_evaluator.safetensors")
BEAT2_MEAN_SPEED = os.path.join(SHARED_DATA, "beat2_samples", "weights", "mean_vel_smplxflame_30.npy")

ROW_REFERENCE = "ground truth (reference itself)"
ROW_STILL = "still neutral pose"
ROW_OTHER = "real motion, other clip (out of sync)"
ROW_MATCHING = "motion matching from the training capture (baseline)"
ROW_RANDOM = "EchoMask, random masking instead of SQA (ablation)"
ROW_MODEL = "EchoMask (this project's model)"


@dataclasses.dataclass
class Clip:
    """The scored segment of one reference clip."""
    cid: str
    reference: Take             # the scored frames
    start: int                  # first scored frame in the full clip
    audio: np.ndarray | None    # 16 kHz speech from `start` to the end of the file
    audio_path: str | None
    full: Take                  # the whole reference clip


@dataclasses.dataclass
class System:
    name: str
    takes: dict[str, Take]      # clip id -> take cut to that clip's segment
    note: str = ""


@dataclasses.dataclass
class Settings:
    mean_speed: np.ndarray
    mean_speed_source: str
    evaluator: object | None = None      # FGDEvaluator, when torch and its weights are there
    evaluator_source: str = ""
    face_model: face.SmplxFaceModel | None = None
    rest_joints: np.ndarray | None = None
    bc_protocols: tuple[str, ...] = ("emage", "symmetric")   # BC columns: metric "bc" and "bc_symmetric"


# ------------------------------------------------------------------------------------------ clips and takes

def load_clips(reference_paths: list[str], audio_paths: list[str], tail: float) -> list[Clip]:
    refs = collect(reference_paths, TAKE_EXTENSIONS, "reference take")
    if not refs:
        raise EchoMaskError("No reference takes given: pass --reference FILES_OR_FOLDER (.npz).")
    audio = collect(audio_paths, AUDIO_EXTENSIONS, "speech")
    clips = []
    for cid, path in sorted(refs.items()):
        take = load_take(path)
        start = tail_start(take.num_frames, tail)
        segment = take.slice(start, take.num_frames)
        speech = None
        if cid in audio:
            from ..speech.audio import load_speech

            full = load_speech(audio[cid])
            speech = full[int(round(start / take.fps * 16000)):]
        clips.append(Clip(cid, segment, start, speech, audio.get(cid), take))
    return clips


def cut_to_clip(take: Take, clip: Clip, source: str) -> Take:
    """A take of the whole clip -> the frames of the clip's scored segment (resampled to its rate)."""
    if abs(take.fps - clip.reference.fps) > 1e-6:
        take = resample_take(take, clip.reference.fps)
    stop = min(take.num_frames, clip.start + clip.reference.num_frames)
    if stop - clip.start < 32:
        raise EchoMaskError(f"{source}: has {take.num_frames} frames but the scored part of clip '{clip.cid}' "
                            f"runs from frame {clip.start} to {clip.start + clip.reference.num_frames}; "
                            f"generate the take for the whole speech of the clip.")
    return take.slice(clip.start, stop)


def system_from_paths(name: str, paths: list[str], clips: list[Clip]) -> System:
    files = collect(paths, TAKE_EXTENSIONS, f"'{name}' take")
    by_id = {c.cid: c for c in clips}
    unknown = sorted(set(files) - set(by_id))
    if unknown:
        raise EchoMaskError(f"'{name}': no reference clip for {', '.join(unknown)} (clips pair by file name; "
                            f"references: {', '.join(sorted(by_id))}).")
    takes = {cid: cut_to_clip(load_take(path), by_id[cid], path) for cid, path in files.items()}
    return System(name, takes, _coverage_note(takes, clips))


def _coverage_note(takes: dict, clips: list[Clip]) -> str:
    return "" if len(takes) == len(clips) else f"{len(takes)} of {len(clips)} clips: {', '.join(sorted(takes))}"


def still_pose_system(clips: list[Clip]) -> System:
    """The neutral pose, standing where the reference stands (median root placement), never moving."""
    takes = {}
    for c in clips:
        n = c.reference.num_frames
        trans = np.broadcast_to(np.median(c.reference.trans, axis=0), (n, 3)).astype(np.float32).copy()
        takes[c.cid] = Take(poses=np.zeros((n, 165), np.float32), trans=trans,
                            expressions=np.zeros((n, 100), np.float32), betas=c.reference.betas, fps=c.reference.fps)
    return System(ROW_STILL, takes)


def other_clip_system(clips: list[Clip]) -> System:
    """Real motion of the same speaker that does not belong to this speech: for each clip, the frames of
    the next clip (the clip itself when there is only one) just before that clip's scored part; when the
    scored part is the whole clip, the next clip's motion looped to length (with one clip: shifted by half).
    Taking frames outside the scored parts keeps the row from being a mere reshuffle of the reference set,
    which would give it an FGD of exactly 0."""
    takes = {}
    for i, c in enumerate(clips):
        n = c.reference.num_frames
        donor = clips[(i + 1) % len(clips)]
        if donor.start >= n:
            idx = np.arange(donor.start - n, donor.start)
            src = donor.full
        elif len(clips) > 1:
            idx, src = np.arange(n) % donor.reference.num_frames, donor.reference
        else:
            idx, src = (np.arange(n) + n // 2) % n, c.reference
        takes[c.cid] = Take(poses=src.poses[idx], trans=src.trans[idx], expressions=src.expressions[idx],
                            betas=src.betas, fps=src.fps)
    if clips[0].start >= clips[0].reference.num_frames:
        note = "frames just before the next clip's scored part"
    elif len(clips) > 1:
        note = "the next clip, looped to length: nearly the reference set itself, so FGD is near 0"
    else:
        note = "one clip only: its own motion shifted by half its length"
    return System(ROW_OTHER, takes, note)


def motion_matching_system(clips: list[Clip]) -> System | None:
    """Real motion re-sequenced by speech (core.metrics.motion_matching) from the frames of the reference clips
    *before* their scored parts (with --tail: the training capture), so no scored frame is in the database.
    None when no clip has speech or unscored frames."""
    from ..speech.audio import load_speech
    from .motion_matching import MatchingConfig, MotionDatabase, speech_descriptor
    from ..speech import compute_speech_features

    usable = [c for c in clips if c.audio_path]
    descs = {}
    for c in usable:
        f = compute_speech_features(load_speech(c.audio_path), fps=c.full.fps)
        descs[c.cid] = speech_descriptor(f.low, f.high)
    cfg = MatchingConfig()
    db_clips = [c for c in usable if c.start >= cfg.segment]
    if not db_clips:
        return None
    db = MotionDatabase([c.full.slice(0, c.start) for c in db_clips], [descs[c.cid][:c.start] for c in db_clips], cfg)
    takes = {}
    for c in usable:
        query = descs[c.cid][c.start:c.start + c.reference.num_frames]
        take = db.generate(query, c.reference.fps)
        take.trans[:, [0, 2]] = np.median(c.reference.trans[:, [0, 2]], axis=0)  # stand where the speaker stands
        takes[c.cid] = take
    seconds = sum(c.start for c in db_clips) / clips[0].full.fps
    return System(ROW_MATCHING, takes, f"{seconds:.0f} s of capture before the scored parts, "
                                       f"{cfg.segment}-frame segments, {cfg.blend}-frame cross-fades")


def generated_system(name: str, weights: str, clips: list[Clip], seed: int, temperature: float | None = None,
                     steps: int | None = None) -> System:
    """Run the project's generator on each clip's whole speech, then cut to the scored segment.
    `temperature`/`steps` None = the product's defaults (GenerationOptions), as an animator gets them."""
    try:
        from ..generation.options import GenerationOptions
        from ..generation.inference import generate
    except ImportError:
        raise EchoMaskError("--model needs core.generation.inference.generate, which this version of the project does "
                            "not have; generate takes another way and pass them with --generated.") from None
    temperature = GenerationOptions().temperature if temperature is None else temperature
    takes = {}
    for c in clips:
        if c.audio_path is None:
            raise EchoMaskError(f"Generating '{name}' needs the speech of clip '{c.cid}': pass it with --audio.")
        full = generate(c.audio_path, seed=seed, model=weights, temperature=temperature,
                        **({"steps": steps} if steps else {}))
        takes[c.cid] = cut_to_clip(full, c, f"generated take for {c.cid}")
    how = ("arg-max" if temperature == 0 else f"temperature {temperature:g}") + \
        (f", {steps} decoding passes" if steps else "")
    return System(name, takes, f"generated with {os.path.basename(weights)}, {how}, seed {seed}")


# ------------------------------------------------------------------------------------------ metrics

def _weighted(values: list[tuple[float, int]]) -> float:
    pairs = [(v, w) for v, w in values if np.isfinite(v) and w > 0]
    return float(sum(v * w for v, w in pairs) / sum(w for _, w in pairs)) if pairs else float("nan")


def evaluate_system(system: System, clips: list[Clip], settings: Settings, reference_latents=None,
                    reference_speed: float | None = None) -> dict:
    by_id = {c.cid: c for c in clips}
    per_clip, bc_results, local_sets = {}, {p: [] for p in settings.bc_protocols}, []
    acc: dict[str, list[tuple[float, int]]] = {}
    for cid, take in system.takes.items():
        clip = by_id[cid]
        n = min(take.num_frames, clip.reference.num_frames)
        take, ref = take.slice(0, n), clip.reference.slice(0, n)
        local = take_positions(take, with_translation=False, rest_joints=settings.rest_joints)
        local_sets.append(local)
        row = dict(plausibility.plausibility(take, settings.rest_joints))
        row.update(face.face_coefficient_errors(take, ref))
        if settings.face_model is not None:
            row.update(face.face_vertex_errors(take, ref, settings.face_model))
        if clip.audio is not None:
            for protocol in settings.bc_protocols:
                result = beat.beat_consistency(local, clip.audio, take.fps, settings.mean_speed,
                                               beat.BeatConfig(protocol=protocol))
                bc_results[protocol].append(result)
                row[_BC_KEYS[protocol]] = result.score
        row["frames"] = n
        per_clip[cid] = row
        for key, value in row.items():
            if key != "frames":
                acc.setdefault(key, []).append((value, n))
    out = {key: _weighted(values) for key, values in acc.items()}
    for protocol, results in bc_results.items():
        out[_BC_KEYS[protocol]] = beat.pool_beat_consistency(results, protocol) if results else float("nan")
    out["l1div"] = diversity.l1_diversity(local_sets)
    out["frames"] = int(sum(r["frames"] for r in per_clip.values()))
    if reference_speed:
        out["speed_ratio"] = out["mean_speed"] / reference_speed
    if settings.evaluator is not None and reference_latents is not None:
        from .fgd_evaluator import latents
        from .frechet import frechet_distance

        out["fgd"] = frechet_distance(latents(settings.evaluator, list(system.takes.values())), reference_latents)
    out["per_clip"] = per_clip
    return out


# ------------------------------------------------------------------------------------------ table

def _fmt(value, scale=1.0, digits=3) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value * scale:.{digits}f}"


_BC_KEYS = {"emage": "bc", "symmetric": "bc_symmetric"}


def _columns(with_vertices: bool, bc_protocols=("emage", "symmetric")):
    cols = [("FGD (own evaluator)† ↓", "fgd", 1.0, 3)]
    if "emage" in bc_protocols:
        cols.append(("BC ×10 ↑ (EMAGE code)", "bc", 10.0, 3))
    if "symmetric" in bc_protocols:
        cols.append(("BC ×10 ↑ (symmetric)", "bc_symmetric", 10.0, 3))
    cols += [
        ("L1div", "l1div", 1.0, 2),
        ("expr MSE ↓", "expr_mse", 1.0, 4),
        ("expr LVD ↓", "expr_lvd", 1.0, 4),
        ("jaw MSE (rad²) ↓", "jaw_mse", 1.0, 5),
    ]
    if with_vertices:
        cols += [("face vertex MSE ×1e8 ↓", "vertex_mse", 1e8, 3), ("face vertex LVD ×1e5 ↓", "vertex_lvd", 1e5, 3)]
    cols += [
        ("jerk (m/s³)", "jerk", 1.0, 1),
        ("foot skating (cm/s) ↓", "foot_skating", 100.0, 2),
        ("floor penetration (mm) ↓", "penetration", 1000.0, 2),
        ("joint-limit violations (%) ↓", "limit_violations", 100.0, 3),
        ("mean speed / GT (→1)", "speed_ratio", 1.0, 2),
    ]
    return cols


def format_table(rows: list[tuple[System | None, str, dict | None]], settings: Settings, clips: list[Clip],
                 tail: float) -> str:
    cols = _columns(settings.face_model is not None, settings.bc_protocols)
    lines = ["| system | " + " | ".join(c[0] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for system, name, metrics in rows:
        label = name + (f" ({system.note})" if system is not None and system.note else "")
        if metrics is None:
            cells = ["pending"] * len(cols)
        else:
            cells = []
            for _, key, scale, digits in cols:
                if key == "fgd" and name == ROW_REFERENCE and "fgd" in metrics:
                    cells.append("0 (itself)")
                elif key in ("expr_mse", "expr_lvd", "jaw_mse", "vertex_mse", "vertex_lvd") and name == ROW_REFERENCE:
                    cells.append("0 (itself)")
                else:
                    cells.append(_fmt(metrics.get(key), scale, digits))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    frames = sum(c.reference.num_frames for c in clips)
    part = (f"the last {tail:.0%} of each reference clip" if tail > 0 else "whole clips")
    notes = [
        "",
        f"Scored: {part}; {len(clips)} clip(s), {frames} frames ({frames / clips[0].reference.fps:.1f} s): "
        + ", ".join(f"{c.cid} [{c.start}:{c.start + c.reference.num_frames}]" for c in clips) + ".",
    ]
    if settings.evaluator is not None:
        from .fgd_evaluator import FGD_NOTE

        notes.append(f"† {FGD_NOTE} Weights: {settings.evaluator_source}.")
    else:
        notes.append(f"† FGD not computed: {settings.evaluator_source}")
    with_audio = sum(c.audio is not None for c in clips)
    notes.append(f"BC: old EMAGE protocol (sigma 0.3 s, order-7 speed minima, 13 upper-body joints, 60 edge "
                 f"frames); 'EMAGE code' keeps its quirks (onsets counted up to the motion's end, threshold looked "
                 f"up 60 frames early), 'symmetric' scores onsets and beats on the same frames (see "
                 f"core/metrics/beat.py); mean joint speeds {settings.mean_speed_source}; speech for {with_audio} of "
                 f"{len(clips)} clip(s)" + ("" if with_audio else " (BC n/a without --audio)") + ".")
    notes.append("L1div on joint positions without translation (neutral SMPL-X skeleton); face errors on "
                 "coefficients (expressions; jaw axis-angle)"
                 + ("; vertex errors with the given SMPL-X model" if settings.face_model is not None else
                    "; vertex MSE/LVD need --smplx-model") + ". Plausibility: see core/metrics/plausibility.py.")
    return "\n".join(lines + notes)


# ------------------------------------------------------------------------------------------ commands

def load_mean_speed(path: str | None, clips: list[Clip], rest_joints=None) -> tuple[np.ndarray, str]:
    """BEAT2's mean joint speeds when available, else the reference clips' own (said in the table)."""
    candidate = path or (BEAT2_MEAN_SPEED if os.path.isfile(BEAT2_MEAN_SPEED) else None)
    if candidate:
        if not os.path.isfile(candidate):
            raise EchoMaskError(f"Mean-speed file not found: {candidate}")
        table = np.load(candidate, allow_pickle=False).astype(np.float64).reshape(-1)
        if table.shape != (55,):
            raise EchoMaskError(f"{candidate}: expected 55 mean joint speeds, found {table.shape}.")
        return table, f"from BEAT2's {os.path.basename(candidate)}"
    positions = [take_positions(c.reference, False, rest_joints) for c in clips]
    return (beat.mean_speed_from_takes(positions, clips[0].reference.fps),
            "computed from the reference clips (BEAT2's mean_vel_smplxflame_30.npy was not found)")


def load_fgd_evaluator(path: str | None) -> tuple[object | None, str]:
    path = path or DEFAULT_FGD_WEIGHTS
    try:
        from .fgd_evaluator import load_evaluator
    except ImportError:
        return None, "torch is not installed"
    if not os.path.isfile(path) and path == DEFAULT_FGD_WEIGHTS:
        return None, f"no evaluator weights at {os.path.relpath(path)} (train them: python -m core train-fgd-evaluator)"
    evaluator, _ = load_evaluator(path)
    return evaluator, os.path.relpath(path, os.getcwd())


def _parse_system(spec: str) -> tuple[str, list[str]]:
    if "=" not in spec:
        raise EchoMaskError(f"--system expects NAME=PATH[,PATH...], got '{spec}'.")
    name, paths = spec.split("=", 1)
    return name.strip(), [p for p in paths.split(",") if p]


def run_eval(args) -> tuple[str, dict]:
    clips = load_clips(args.reference, args.audio, args.tail)
    rest = None
    face_model = face.SmplxFaceModel.load(args.smplx_model) if args.smplx_model else None
    mean_speed, speed_source = load_mean_speed(args.mean_speed, clips, rest)
    evaluator, evaluator_source = load_fgd_evaluator(args.fgd_evaluator)
    protocol = getattr(args, "bc_protocol", "both")
    settings = Settings(mean_speed, speed_source, evaluator, evaluator_source, face_model, rest,
                        ("emage", "symmetric") if protocol == "both" else (protocol,))

    reference = System(ROW_REFERENCE, {c.cid: c.reference for c in clips})
    planned: list[tuple[str, System | None]] = [(ROW_REFERENCE, reference)]
    if not args.no_baselines:
        planned += [(ROW_STILL, still_pose_system(clips)), (ROW_OTHER, other_clip_system(clips))]
        if not getattr(args, "no_matching", False):
            matching = motion_matching_system(clips)
            if matching is not None:
                planned.append((ROW_MATCHING, matching))
    for name, paths, weights in ((ROW_RANDOM, args.random_masking, args.random_masking_model),
                                 (ROW_MODEL, args.generated, args.model)):
        if paths:
            planned.append((name, system_from_paths(name, paths, clips)))
        elif weights:
            planned.append((name, generated_system(name, weights, clips, args.seed,
                                                   getattr(args, "temperature", None), getattr(args, "steps", None))))
        else:
            planned.append((name, None))
    for spec in args.system:
        name, paths = _parse_system(spec)
        planned.append((name, system_from_paths(name, paths, clips)))

    ref_latents = None
    if evaluator is not None:
        from .fgd_evaluator import latents

        ref_latents = latents(evaluator, [c.reference for c in clips])
    ref_metrics = evaluate_system(reference, clips, settings, ref_latents)
    rows, results = [], {}
    for name, system in planned:
        if system is None:
            rows.append((None, name, None))
            results[name] = None
            continue
        if system is reference:
            metrics = ref_metrics
            metrics["speed_ratio"] = 1.0
        else:
            metrics = evaluate_system(system, clips, settings, ref_latents, ref_metrics["mean_speed"])
        rows.append((system, name, metrics))
        results[name] = metrics
    table = format_table(rows, settings, clips, args.tail)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, {platform.system()}",
        "tail": args.tail, "clips": [{"id": c.cid, "start": c.start, "frames": c.reference.num_frames,
                                      "audio": c.audio_path} for c in clips],
        "mean_speed_source": speed_source, "fgd_evaluator": evaluator_source,
        "systems": results,
    }
    return table, report


def run_eval_command(args) -> int:
    table, report = run_eval(args)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
        print(f"\nwrote {args.out}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(_json_safe(report), f, indent=1)
        print(f"wrote {args.json_out}")
    return 0


def _json_safe(obj):
    """NaN/inf -> null, numpy scalars -> Python numbers, so the file is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def run_train_fgd_command(args) -> int:
    import sys

    import torch

    from .fgd_training import FGDTrainingConfig, train_fgd_evaluator

    torch.set_num_threads(max(1, args.threads))
    gt = args.gt if args.gt is not None else [os.path.join(SHARED_DATA, "beat2_samples", "smplxflame_30")]
    if args.extra is not None:
        extra = args.extra
    else:
        outputs = os.path.join(SHARED_DATA, "beat2_model_outputs")
        extra = sorted(os.path.join(outputs, d) for d in os.listdir(outputs)
                       if os.path.isdir(os.path.join(outputs, d))) if os.path.isdir(outputs) else []
    for path in gt + extra:
        if not os.path.exists(path):
            raise EchoMaskError(f"Training data not found: {path} (the shared data folder ../shared/data is "
                                f"needed, or give --gt/--extra).")
    cfg = FGDTrainingConfig(steps=args.steps, batch=args.batch, holdout_tail=args.holdout_tail, seed=args.seed)
    command = "python -m core " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("__main__.py") else ""
    from .fgd_evaluator import FGD_NOTE

    print(FGD_NOTE)
    train_fgd_evaluator(gt, extra, args.out, cfg, command=command or "python -m core train-fgd-evaluator")
    return 0
