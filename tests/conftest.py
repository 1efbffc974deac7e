"""Test set-up: import the repository root as the package `echomask`, as Blender does with an extension.

core/ and echomask_blender/ use relative imports, so tests import them as `echomask.core...` and
`echomask.echomask_blender...`. Tests that need ../shared skip with a reason when it is absent.
"""
import importlib.util
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"


def _import_root_as_package(name: str = "echomask"):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_import_root_as_package()


def pytest_configure(config):
    # Blender 5.x warns on API it will remove ("'SoundStrip.frame_start' is expected to be removed in Blender
    # 6.0"). The add-on must use the replacements (through echomask_blender/compat.py), so such a warning fails
    # the test that triggers it, on every Blender version that emits one.
    config.addinivalue_line("filterwarnings", "error:.*is expected to be removed in Blender:DeprecationWarning")


def write_pcm16_wav(path, samples, rate: int = 16000) -> str:
    """Mono samples in [-1, 1] as a 16-bit WAV, with the standard library only (the Blender test
    environments have no soundfile)."""
    import wave

    import numpy as np

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return str(path)


def shared_path(*parts: str) -> pathlib.Path:
    """A path under ../shared/data, or skip the test with a clear reason when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared data folder ({path} is absent: a fresh clone has no ../shared)")
    return path


@pytest.fixture
def tmp_out(tmp_path):
    return tmp_path


def has_bpy() -> bool:
    return importlib.util.find_spec("bpy") is not None


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


requires_bpy = pytest.mark.skipif(not has_bpy(), reason="needs Blender's bpy module (this environment has none)")
requires_torch = pytest.mark.skipif(not has_torch(), reason="needs torch (the Blender-only test environments have none)")
