"""Where things are on disk, from the package's own location, so modules can move between sub-packages freely.

The repository root is the extension root: core/ and weights/ side by side; the licensed shared data (never in
the repository) is expected beside the repository as ../shared.
"""
from __future__ import annotations

import pathlib

CORE_DIR = pathlib.Path(__file__).resolve().parent
EXTENSION_ROOT = CORE_DIR.parent
WEIGHTS_DIR = EXTENSION_ROOT / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "echomask_small.safetensors"
SHARED_DIR = EXTENSION_ROOT.parent / "shared"
SHARED_DATA_DIR = SHARED_DIR / "data"
