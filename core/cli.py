"""Command line: `python -m core <command> ...` (run from the repository root).

Each command maps onto one function of the core package; errors that are the input's fault print one
clear line (no traceback) and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from .errors import EchoMaskError


def cmd_import_take(args) -> int:
    """BEAT2/SMPL-X take (+ speech) -> SMPL-X rig in a .blend, and/or FBX."""
    from .blender_bridge import run_blender_task
    from .take import load_take

    take = load_take(args.take)  # validate here: a clear message before Blender starts
    if args.audio:
        from .audio import load_speech

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
