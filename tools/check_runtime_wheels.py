"""Check that every runtime pin has a wheel on PyPI for each platform Blender runs on, per Python version.

    python tools/check_runtime_wheels.py                 # every echomask_blender/runtime_requirements/*.txt
    python tools/check_runtime_wheels.py --python 3.13 --also numba,llvmlite,scikit-learn

Install Runtime installs with --only-binary=:all:, so a pin without a wheel for an animator's Python and
computer makes the install stop (with a message) instead of compiling. This asks pip, for each pin, which
versions have a wheel for (Python, platform) — by requesting the impossible version `NAME==0`, whose error
lists them — so nothing is downloaded. Needs the internet (PyPI); run it when changing a pin. `--also` checks
dependencies that are not pinned (their newest version with a wheel is what pip would pick). Machine-wide pip
settings (local indexes, constraints) are ignored, so the answer is PyPI's.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PINS = ROOT / "echomask_blender" / "runtime_requirements"
# Blender's platforms. Linux: Blender 4.2+ needs glibc 2.28, so manylinux_2_28 and older tags. macOS: torch 2.13
# and scipy 1.17 publish Apple Silicon wheels for macOS 14+ only.
PLATFORMS = {
    "Linux x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                     "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "macOS 14+ arm64": ["macosx_14_0_arm64"],
    "Windows x64": ["win_amd64"],
}


def versions_with_wheels(name: str, python: str, tags: list[str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--python-version", python, "-d", tmp, f"{name}==0"]
        for tag in tags:
            cmd += ["--platform", tag]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    match = re.search(r"\(from versions: ([^)]*)\)", proc.stdout + proc.stderr)
    if not match:
        raise SystemExit(f"error: pip gave no version list for {name} (no internet?):\n{proc.stdout}{proc.stderr}")
    return [v.strip() for v in match.group(1).split(",") if v.strip() and v.strip() != "none"]


def pins_of(path: pathlib.Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==", 1)
            out.append((name.strip(), version.strip()))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="only this Python version (e.g. 3.13); repeatable")
    parser.add_argument("--also", default="", help="comma-separated unpinned dependencies to check too")
    args = parser.parse_args(argv)
    files = sorted(PINS.glob("python*.txt"))
    if args.python:
        files = [f for f in files if f.stem[len("python"):] in args.python]
    missing = 0
    for path in files:
        python = path.stem[len("python"):]
        print(f"== Python {python} ({path.relative_to(ROOT)})")
        wanted = pins_of(path) + [(name, None) for name in args.also.split(",") if name]
        for platform_name, tags in PLATFORMS.items():
            for name, version in wanted:
                have = versions_with_wheels(name, python, tags)
                ok = (version in have) if version else bool(have)
                missing += not ok
                shown = f"{name}=={version}" if version else f"{name} (newest: {have[-1] if have else 'none'})"
                print(f"  {'ok     ' if ok else 'MISSING'} {platform_name:16} {shown}")
    print("every pin has a wheel" if not missing else f"{missing} without a wheel")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
