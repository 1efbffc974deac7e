"""Build and validate the extension zip with Blender's own extension tool: `python tools/build_extension.py`.

The tool (`blender --command extension build/validate`) is a plain script shipped in the bpy wheel
(bpy/<version>/scripts/addons_core/bl_pkg/cli/blender_ext.py), so no Blender binary is needed. The
repository root is the extension root; blender_manifest.toml's [build] excludes tests, bench and dev files.
Writes dist/echomask-<version>.zip and prints its path.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def find_blender_ext_tool() -> pathlib.Path:
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: this Python has no bpy module; use the project's environment (make extension).")
    bpy_dir = pathlib.Path(list(spec.submodule_search_locations)[0])
    tools = sorted(glob.glob(str(bpy_dir / "*" / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py")))
    if not tools:
        raise SystemExit(f"error: Blender's extension tool (bl_pkg/cli/blender_ext.py) is not inside {bpy_dir}.")
    return pathlib.Path(tools[-1])


def build(output_dir: pathlib.Path) -> pathlib.Path:
    tool = find_blender_ext_tool()
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    output_dir.mkdir(parents=True, exist_ok=True)  # the tool fails with "Error creating archive" otherwise
    zip_path = output_dir / f"{manifest['id']}-{manifest['version']}.zip"
    if zip_path.exists():
        zip_path.unlink()
    for args in (["build", "--source-dir", str(ROOT), "--output-filepath", str(zip_path)],
                 ["validate", str(zip_path)]):
        proc = subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: `blender_ext {args[0]}` failed:\n{proc.stdout}{proc.stderr}")
    return zip_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=str(ROOT / "dist"), help="where the zip goes (default: dist/)")
    args = parser.parse_args(argv)
    zip_path = build(pathlib.Path(args.output_dir).resolve())
    print(zip_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
