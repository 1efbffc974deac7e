"""Command line: `python -m core <command> ...` (run from the repository root).

Each command maps onto one function of the core package; errors that are the input's fault print one
clear line (no traceback) and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import EchoMaskError
from ..paths import DEFAULT_MODEL
from ..generation.options import add_generation_options
from ..precision import PRECISIONS


def cmd_import_take(args) -> int:
    """BEAT2/SMPL-X take (+ speech) -> SMPL-X rig in a .blend, and/or FBX."""
    from .blender_bridge import run_blender_task
    from ..motion.take import load_take

    take = load_take(args.take)  # validate here: a clear message before Blender starts
    if args.audio:
        from ..speech.audio import load_speech

        load_speech(args.audio, max_seconds=1.0)  # readable?
    if not (args.blend or args.fbx):
        raise EchoMaskError("Nothing to write: give --blend OUT.blend and/or --fbx OUT.fbx.")
    out = run_blender_task("import_take", take=str(args.take), audio=args.audio, blend=args.blend,
                           fbx=args.fbx, fps=args.fps, smplx_model=args.smplx_model)
    print(f"Imported {take.num_frames} frames ({take.duration:.1f} s) onto rig '{out.get('armature')}'.")
    for key in ("blend", "fbx"):
        if out.get(key):
            print(f"  wrote {out[key]}")
    return 0


def cmd_retarget(args) -> int:
    """A take onto a character's own rig (Mixamo, Rigify, Unreal, custom) in headless Blender."""
    import os
    import time

    from .blender_bridge import run_blender_task
    from ..retarget.bone_map import load_bone_map
    from ..motion.take import load_take

    take = load_take(args.take)  # validate here: a clear message before Blender starts
    if args.map:
        load_bone_map(args.map)
    if os.path.splitext(args.out)[1].lower() not in (".fbx", ".bvh", ".blend"):
        raise EchoMaskError(f"The output must be a .fbx, .bvh or .blend file, not '{args.out}'.")
    start = time.perf_counter()
    out = run_blender_task("retarget", take=os.path.abspath(args.take), rig=os.path.abspath(args.rig),
                           out=os.path.abspath(args.out), preset=args.preset, map=args.map and os.path.abspath(args.map),
                           armature=args.armature, root_motion="IN_PLACE" if args.in_place else "TRAVEL",
                           foot_correction=not args.no_foot_correction)
    print(f"Retargeted {take.num_frames} frames ({take.duration:.1f} s) onto '{out['armature']}' with the bone map "
          f"'{out['bone_map']}' ({out['mapped']} joints) in {time.perf_counter() - start:.1f} s.")
    for note in out.get("notes", []):
        print(f"  note: {note}")
    print(f"  wrote {out['out']}")
    return 0


def cmd_eval(args) -> int:
    """Metrics table (FGD, BC, diversity, face, plausibility) of generated takes against reference takes."""
    from ..metrics.evaluate import run_eval_command

    return run_eval_command(args)


def cmd_train_fgd_evaluator(args) -> int:
    """Train the project's own FGD evaluator (not the paper's) on BEAT2-format takes."""
    from ..metrics.evaluate import run_train_fgd_command

    return run_train_fgd_command(args)


def cmd_train_tokenizers(args) -> int:
    """Stage 1: train the four motion tokenizers (RVQ-VAEs) on a folder of BEAT2 takes or the shared data."""
    from ..training.train_tokenizers import run_cli

    return run_cli(args)


def cmd_train(args) -> int:
    """Stage 2: train the EchoMask generator (MAM + SQA masked model) on frozen tokenizers."""
    from ..training.train import run_cli

    return run_cli(args)


def cmd_train_face_head(args) -> int:
    """Stage 3: the speech face head on a trained model (core.model.face_head)."""
    from ..training.train_face_head import run_cli

    return run_cli(args)


def cmd_generate(args) -> int:
    """Speech -> OUT/take.npz, OUT/take.blend (rig + sound strip), OUT/take.fbx."""
    from .generate_job import run_cli

    return run_cli(args)


def cmd_build_retrieval_bank(args) -> int:
    """Training windows keyed by their speech, for `generate --retrieval-bank` (core.generation.retrieval)."""
    from ..generation.retrieval import run_cli

    return run_cli(args)


def cmd_build_token_prior(args) -> int:
    """The token bigram prior's tables from training takes, into a weights file (core.generation.token_prior)."""
    from ..generation.token_prior import run_cli

    return run_cli(args)


def _number_or_unset(text: str):
    """argparse type of `set-decoding --guidance / --gesture-gain / --token-prior`: a number, or "unset" to remove
    the record."""
    if text == "unset":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a number (1 = none) or unset, not {text!r}") from None


def cmd_set_decoding(args) -> int:
    """Record decoding defaults measured for a model's weights in its file (core.model.checkpoint)."""
    from ..model.checkpoint import write_decoding_defaults

    changes = {}
    if args.levels is not None:
        changes["levels"] = None if args.levels == "unset" else int(args.levels)
    if args.guidance is not None:
        changes["guidance"] = None if args.guidance == "unset" else args.guidance
    if args.gesture_gain is not None:
        changes["gesture_gain"] = None if args.gesture_gain == "unset" else args.gesture_gain
    if args.token_prior is not None:
        changes["token_prior"] = None if args.token_prior == "unset" else args.token_prior
    if not changes:
        print("Nothing to record: give --levels, --guidance, --gesture-gain and/or --token-prior.")
        return 2
    recorded = write_decoding_defaults(args.weights, note=args.note, **changes)
    print(f"{args.weights}: decoding defaults {recorded or 'none (the product defaults apply)'}")
    return 0


def cmd_speech_features(args) -> int:
    """Speech -> low/high-level features (+ phones), optionally scored against a TextGrid."""
    from ..speech.command import run_cli

    return run_cli(args)


def cmd_lipsync(args) -> int:
    """Phone-accurate mouth on a take's face: lips close on P/B/M, open on vowels, the rest of the face kept."""
    from ..face.command import run_cli

    return run_cli(args)


def cmd_render_preview(args) -> int:
    """A small MP4 (the posed skeleton, or a Workbench render, with the speech) of the playing take in a .blend."""
    import os

    from .blender_bridge import run_blender_task

    out = run_blender_task("render_preview", blend=os.path.abspath(args.blend), output=os.path.abspath(args.output),
                           armature=args.armature, style=args.style.upper(), frame_step=args.frame_step)
    print(f"Wrote {out['output']} ({out['frames']} frames at {out['fps']:g} fps"
          f"{', with the speech' if out['audio'] else ', no sound'}).")
    return 0


def cmd_convert_official(args) -> int:
    """The authors' official EchoMask release -> this project's model bundle (core/official/convert.py)."""
    from ..official.convert import run_cli

    return run_cli(args)


def cmd_prepare_data(args) -> int:
    """Build the training data cache (motion variants + speech features) of a data set ahead of training."""
    from ..training.streaming import run_prepare_cli

    return run_prepare_cli(args)


def cmd_generate_batch(args) -> int:
    """Many speech files -> one take each, resumable, shardable over machines (core.jobs.batch_generate)."""
    from .batch_generate import run_cli

    return run_cli(args)


_PRECISION_HELP = ("training precision: auto (bf16 on CUDA where supported, else fp16 with loss scaling; fp32 on "
                   "the CPU and MPS), fp32, bf16 (CUDA or CPU autocast) or fp16 (CUDA only)")
_MANIFEST_HELP = ("'shared' (../shared/data), a BEAT2 folder (beat_english_v2.0.0/ with smplxflame_30/, wave16k/, "
                  "train_test_split.csv: its official train/val split, streamed from the data cache) or a folder of "
                  "BEAT2 .npz + .wav (split by time)")


def _data_arguments(p) -> None:
    """Which takes to train on and where their prepared features live (core.training.streaming.DataOptions)."""
    p.add_argument("--speakers", default=None, help="BEAT2 speakers: 'all' (default) or numbers such as 2 (the "
                   "paper's setting), 2,4 or 1-4 (the leading number of ids like 2_scott_0_1_1)")
    p.add_argument("--split-file", default=None, help="train/val/test split for a folder of takes (CSV with columns "
                   "id,type as BEAT2's train_test_split.csv; default: that file in the --manifest folder)")
    p.add_argument("--additional", action="store_true", help="also train on the split's 'additional' takes")
    p.add_argument("--stream", action="store_true", help="read windows from the on-disk data cache, not memory "
                   "(automatic for split data sets; for data larger than memory)")
    p.add_argument("--data-cache", default=None, help="data cache folder (default: $ECHOMASK_CACHE/windows or the "
                   "system temp folder); must be outside the data; shared by runs, keyed by file contents")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="EchoMask for Blender: core tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import-take", help="put a BEAT2/SMPL-X .npz take on an SMPL-X rig; write .blend/.fbx")
    p.add_argument("take", help="motion file (.npz, BEAT2/SMPL-X format)")
    p.add_argument("--audio", help="its speech (wav/flac/ogg/mp3); placed as a sound strip at the take's start")
    p.add_argument("--blend", help="write the scene to this .blend file")
    p.add_argument("--fbx", help="export the rig and this take to this .fbx file")
    p.add_argument("--fps", type=float, default=None, help="scene frame rate (default: the take's, 30)")
    p.add_argument("--smplx-model", default=None, help="your own SMPL-X model file (.npz) to also build the mesh")
    p.set_defaults(func=cmd_import_take)

    p = sub.add_parser("retarget", help="put a take onto a character's own rig (Mixamo, Rigify, Unreal, custom); "
                       "write .fbx/.bvh/.blend")
    p.add_argument("take", help="motion file (.npz, BEAT2/SMPL-X format)")
    p.add_argument("--rig", required=True, help="the character's rig: .fbx, .bvh or .blend")
    p.add_argument("--preset", default="auto", choices=("mixamo", "rigify", "ue5", "smplx", "auto"),
                   help="bone map preset (default: auto, matching bones by name)")
    p.add_argument("--map", default=None, help="a bone-map .json (saved from the Bone Mapping panel); overrides --preset")
    p.add_argument("--armature", default=None, help="the armature's name when the file holds several")
    p.add_argument("--in-place", action="store_true", help="no horizontal travel")
    p.add_argument("--no-foot-correction", action="store_true", help="do not shift the root to keep the feet on the floor")
    p.add_argument("-o", "--out", required=True, help="output: .fbx, .bvh or .blend")
    p.set_defaults(func=cmd_retarget)

    p = sub.add_parser("eval", help="metrics table (FGD, BC, diversity, face, plausibility) against reference takes")
    p.add_argument("--reference", nargs="+", required=True, help="reference (ground-truth) takes: .npz files or folders")
    p.add_argument("--generated", nargs="*", default=[], help="the project's model's takes (.npz files or folders), "
                   "paired with the references by clip id (file name)")
    p.add_argument("--random-masking", nargs="*", default=[], help="takes of EchoMask trained with random masking "
                   "instead of SQA (the paper's ablation)")
    p.add_argument("--system", action="append", default=[], metavar="NAME=PATH[,PATH]",
                   help="any further system to add as a row (repeatable)")
    p.add_argument("--audio", nargs="*", default=[], help="speech per clip (.wav etc., files or folders) for BC and generation")
    p.add_argument("--model", help="generate the model's takes from --audio with these weights (core.generation.inference)")
    p.add_argument("--random-masking-model", help="generate the ablation's takes from --audio with these weights")
    p.add_argument("--seed", type=int, default=0, help="seed for --model generation")
    p.add_argument("--steps", type=int, default=None, help="decoding passes per window for --model generation "
                   "(default: the generator's; 1 = the paper's single pass)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature for --model generation "
                   "(default: generate's, the product default; 0 = arg-max, as the paper)")
    p.add_argument("--tail", type=float, default=0.0, help="score only the last FRACTION of each reference clip "
                   "(e.g. 0.15: the held-out tails); 0 = whole clips")
    p.add_argument("--fgd-evaluator", default=None, help="FGD evaluator weights (default weights/fgd_evaluator.safetensors)")
    p.add_argument("--mean-speed", default=None, help="BEAT2's mean_vel_smplxflame_30.npy for BC (default: from "
                   "../shared/data when present, else computed from the reference takes)")
    p.add_argument("--smplx-model", default=None, help="your SMPL-X model file (.npz) for face vertex MSE/LVD")
    p.add_argument("--bc-protocol", choices=("both", "emage", "symmetric"), default="both",
                   help="BC columns: as EMAGE's code computes it (comparable with papers), its symmetric variant, or both")
    p.add_argument("--no-baselines", action="store_true", help="leave out the still-pose and other-clip rows")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    p.add_argument("--json", dest="json_out", help="also write all numbers to this JSON file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train-fgd-evaluator", help="train the project's own FGD evaluator (NOT the paper's)")
    p.add_argument("--gt", nargs="*", default=None, help="ground-truth takes (files/folders); their last --holdout-tail "
                   "is held out (default: ../shared/data/beat2_samples/smplxflame_30)")
    p.add_argument("--extra", nargs="*", default=None, help="secondary takes used whole, e.g. published models' "
                   "outputs (default: the folders of ../shared/data/beat2_model_outputs)")
    p.add_argument("--out", default="weights/fgd_evaluator.safetensors")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--holdout-tail", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.set_defaults(func=cmd_train_fgd_evaluator)

    p = sub.add_parser("train-face-head", help="train the speech face head of a trained model (stage 3: the face "
                       "frame by frame from the speech; the model stays as it is)")
    p.add_argument("--weights", default=str(DEFAULT_MODEL),
                   help="the trained model (.safetensors) to add a face head to (default: the bundled weights)")
    p.add_argument("--manifest", default="shared", help=_MANIFEST_HELP)
    _data_arguments(p)
    p.add_argument("--model-output-weight", type=float, default=0.6,
                   help="--manifest shared: loss weight of the published models' outputs (default 0.6)")
    p.add_argument("--out", required=True, help="output folder (face_head.safetensors, train_log.jsonl)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--patience", type=int, default=5, help="stop after this many validations without a better loss")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.set_defaults(func=cmd_train_face_head)

    p = sub.add_parser("train-tokenizers", help="train the four motion tokenizers (RVQ-VAEs), stage 1")
    p.add_argument("--manifest", default="shared", help=_MANIFEST_HELP)
    _data_arguments(p)
    p.add_argument("--config", default="small", help="model config: paper, small or tiny")
    p.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help=_PRECISION_HELP)
    p.add_argument("--resume", action="store_true", help="continue from OUT.resume.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=cmd_train_tokenizers)

    p = sub.add_parser("train", help="train the EchoMask generator (stage 2) on frozen tokenizers")
    p.add_argument("--manifest", default="shared", help=_MANIFEST_HELP)
    _data_arguments(p)
    p.add_argument("--config", default="small", help="model config: paper, small or tiny")
    p.add_argument("--tokenizers", required=True, help="tokenizer weights (.safetensors, from train-tokenizers)")
    p.add_argument("--out", required=True, help="output folder (model.safetensors, train_log.jsonl, resume state)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16, help="global batch (split over torchrun's processes)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the training config's)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: the training config's)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--dropout", type=float, default=None,
                   help="the generator's dropout (default: the config's, 0.1 for small); a resumed run keeps its own")
    p.add_argument("--body-speech", default=None, choices=("full", "bands", "prosody"),
                   help="what the body's speech branch reads: full (every built-in feature; the config's default), "
                   "bands (8 mel bands + prosody, no phones) or prosody (onset, loudness, pitch, voicing); research "
                   "options, docs/TRAINING.md; a resumed run keeps its own")
    p.add_argument("--body-speech-window", type=int, default=None, metavar="FRAMES",
                   help="the body's speech branch attends only to frames within this many of each other "
                   "(0 = the whole window, the config's default; a research option, docs/TRAINING.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch per process (0: torch's default)")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--ckpt-every", type=int, default=None, help="checkpoint every N steps (default: --val-every)")
    p.add_argument("--patience", type=int, default=0,
                   help="early stopping: stop after this many validations without a better score (0 = off)")
    p.add_argument("--init", default=None, help="fine-tune: start from this model bundle's generator (same --config)")
    p.add_argument("--model-output-weight", type=float, default=None,
                   help="--manifest shared: loss weight of the published models' outputs against 1 for captured "
                   "motion (default 0.3)")
    p.add_argument("--speech-aug", type=float, default=None,
                   help="speech feature augmentation strength (noise, time and band masks; 0 = off)")
    p.add_argument("--speech-contrast", type=float, default=None,
                   help="weight of the speech-contrast hinge (the body must predict worse under another window's "
                   "speech; 0 = off, the default)")
    p.add_argument("--speech-dropout", type=float, default=None,
                   help="share of training windows shown no speech (0 = off, the default), so that decoding can "
                   "use classifier-free guidance (generate --guidance)")
    p.add_argument("--score", default=None, help="early-stopping score: probe conditions averaged over the parts, "
                   "e.g. vis4 (the single-pass inference condition) or vis4,vis24 (default)")
    p.add_argument("--stop-after", type=int, default=0,
                   help="pause after this step (resumable; the schedule still spans --steps)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (and save) after this much time; 0 = no limit")
    p.add_argument("--ramp", type=float, default=0.5,
                   help="share of training over which SQA masking goes from soft (random) to hard; 0 = hard from the start")
    p.add_argument("--random-masking", action="store_true",
                   help="ablation: mask uniformly random frames instead of SQA-chosen ones (docs/RESULTS.md)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help=_PRECISION_HELP)
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="speech -> animated SMPL-X take (take.npz, take.blend, take.fbx)")
    p.add_argument("speech", help="speech audio (wav, flac, ogg, mp3)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    add_generation_options(p)
    p.add_argument("--weights", default=None, help="model weights (default: the bundled small model)")
    p.add_argument("--no-blend", action="store_true", help="write take.npz only (no .blend / .fbx)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("generate-batch", help="many speech files -> one take each (resumable; --shard i/n splits "
                       "a list over machines)")
    p.add_argument("inputs", nargs="+", help="speech files, folders of them, or list files (.txt: one path a line, "
                   "relative to the list; # comments)")
    p.add_argument("-o", "--out", required=True, help="output folder: CLIP.npz (+ CLIP.blend / CLIP.fbx) and "
                   "CLIP.json per speech file")
    p.add_argument("--shard", default=None, metavar="I/N", help="do only shard I of N (0 <= I < N) of the sorted "
                   "list: every machine runs the same command with its own I")
    add_generation_options(p)   # --seed is the base seed: each file's seed derives from it and the file's content
    p.add_argument("--weights", default=None, help="model weights (default: the bundled small model)")
    p.add_argument("--blend", action="store_true", help="also write CLIP.blend (rig, animation, sound strip)")
    p.add_argument("--fbx", action="store_true", help="also write CLIP.fbx")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1: fastest for "
                   "one window at a time; run several processes or shards for more cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate_batch)

    p = sub.add_parser("prepare-data", help="check a training data set and build its data cache ahead of training")
    p.add_argument("manifest", help=_MANIFEST_HELP)
    _data_arguments(p)
    p.add_argument("--config", default="small", help="model config whose window and speech features to prepare")
    p.add_argument("--no-speech", action="store_true", help="motion only (enough for train-tokenizers)")
    p.add_argument("--shard", default=None, metavar="I/N", help="prepare only shard I of N of the takes (machines "
                   "sharing one --data-cache folder); no summary")
    p.add_argument("--list", choices=("train", "val", "test"), default=None, help="print the speech files of this "
                   "split (one a line, e.g. for generate-batch) and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("build-retrieval-bank", help="a retrieval bank for generate --retrieval-bank: your training "
                       "windows keyed by their speech, for one set of weights")
    p.add_argument("--manifest", default="shared", help="'shared' (the shared data's captured takes) or a folder of "
                   "takes (.npz + .wav)")
    p.add_argument("--weights", default=None, help="model weights the bank is for (default: the bundled small model)")
    p.add_argument("--all-takes", action="store_true", help="--manifest shared: also the published models' outputs")
    p.add_argument("-o", "--out", required=True, help="bank file to write (.safetensors)")
    p.set_defaults(func=cmd_build_retrieval_bank)

    p = sub.add_parser("build-token-prior", help="add a token bigram prior (generate --token-prior) to weights: "
                       "statistics of consecutive coarse motion tokens in your training takes")
    p.add_argument("--manifest", default="shared", help="'shared' (the shared data's captured takes) or a folder of "
                   "takes (.npz + .wav)")
    p.add_argument("--weights", required=True, help="model weights to add it to (rewritten unless --out is given)")
    p.add_argument("--all-takes", action="store_true", help="also takes of other models' outputs (default: the "
                   "captured takes when there are any)")
    p.add_argument("-o", "--out", default=None, help="weights file to write (default: --weights itself, rewritten "
                   "atomically)")
    p.set_defaults(func=cmd_build_token_prior)

    p = sub.add_parser("set-decoding", help="record decoding defaults measured for a model's weights in its file "
                       "(measure them with bench/select_checkpoint.py --option levels=0 / levels=1)")
    p.add_argument("weights", help="model weights (.safetensors made by `python -m core train`)")
    p.add_argument("--levels", default=None, choices=[str(i) for i in range(17)] + ["unset"],
                   help="RVQ levels generate keeps by default for these weights (0 = every predicted level, "
                   "1 = the coarse level; unset = the product default)")
    p.add_argument("--guidance", default=None, type=_number_or_unset, metavar="X|unset",
                   help="speech guidance generate uses by default for these weights (1 = none; unset = the product "
                   "default; only for weights trained with --speech-dropout)")
    p.add_argument("--gesture-gain", dest="gesture_gain", default=None, type=_number_or_unset, metavar="X|unset",
                   help="arm and hand amplitude generate applies by default for these weights (1 = as decoded; "
                   "unset = none; measure with bench/select_checkpoint.py --option gesture_gain=X)")
    p.add_argument("--token-prior", dest="token_prior", default=None, type=_number_or_unset, metavar="X|unset",
                   help="token prior strength generate uses by default for these weights (0 = off; unset = off unless "
                   "asked; needs the tables: build-token-prior)")
    p.add_argument("--note", default=None, help="how it was measured (stored beside it)")
    p.set_defaults(func=cmd_set_decoding)

    p = sub.add_parser("speech-features", help="speech -> features and phones (.npz); phone agreement with a TextGrid")
    p.add_argument("audio", help="speech audio (wav, flac, ogg, mp3)")
    p.add_argument("-o", "--out", help="write low, high, fps and the phones to this .npz")
    p.add_argument("--fps", type=float, default=30.0, help="feature frame rate (default 30)")
    p.add_argument("--backend", default="builtin", help="feature backend (default: builtin)")
    p.add_argument("--cache-dir", default=None, help="reuse/store features here, keyed by the audio's content")
    p.add_argument("--textgrid", help="a TextGrid with a phones tier: report frame agreement")
    p.add_argument("--show-phones", type=int, default=0, metavar="N", help="print the first N phone segments")
    p.set_defaults(func=cmd_speech_features)

    p = sub.add_parser("lipsync", help="phone-accurate mouth on a take (lips close on P/B/M, open on vowels)")
    p.add_argument("take", help="the take (.npz, BEAT2/SMPL-X format)")
    p.add_argument("--audio", help="its speech: phones recognised with PocketSphinx")
    p.add_argument("--textgrid", help="or its phone alignment (TextGrid with a phones tier; more accurate)")
    p.add_argument("--strength", type=float, default=0.5, help="0 = unchanged .. 1 = mouth fully from the phones "
                   "(default 0.5: best on held-out data with recognised phones; 0.75 with an alignment)")
    p.add_argument("-o", "--out", required=True, help="output take (.npz)")
    p.set_defaults(func=cmd_lipsync)

    p = sub.add_parser("render-preview", help="small MP4 with sound of the playing EchoMask take in a .blend")
    p.add_argument("blend", help="the .blend file with an SMPL-X rig and a take")
    p.add_argument("-o", "--output", required=True, help="the video to write (.mp4)")
    p.add_argument("--armature", default=None, help="the rig's name (default: the first rig with a playing take)")
    p.add_argument("--style", default="skeleton", choices=("skeleton", "workbench"),
                   help="skeleton (default): the posed bones with a head/jaw close-up, faster than real time; "
                        "workbench: a shaded 3D render of every frame (slow without a GPU)")
    p.add_argument("--frame-step", type=int, default=None,
                   help="skeleton style: draw every n-th frame, the sound stays whole (default 2: 15 fps for a "
                        "30 fps take; 1 = every frame, about twice as long)")
    p.set_defaults(func=cmd_render_preview)

    p = sub.add_parser("convert-official", help="convert the official EchoMask release (non-commercial) into "
                       "this project's model format")
    p.add_argument("release_dir", help="folder of the unpacked official release (the one holding weights/)")
    p.add_argument("-o", "--out", default="weights/echomask_paper", help="output folder (model.safetensors + "
                   "conversion_report.json)")
    p.add_argument("--hubert", default=None, help="local folder of facebook/hubert-large-ls960-ft to record in the "
                   "model (else $ECHOMASK_HUBERT_DIR or the Hugging Face cache at generation time)")
    p.add_argument("--no-verify", action="store_true", help="do not load the written model back to check it")
    p.set_defaults(func=cmd_convert_official)

    # Further commands (generate, train, eval, features, convert-official) are added below, one block each;
    # heavy imports (torch, librosa) stay inside the command functions so `--help` is instant.
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except EchoMaskError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
