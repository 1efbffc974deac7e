"""The extension zip: built and validated with Blender's own tool, then installed and enabled in a clean
Blender user folder (a subprocess: BLENDER_USER_RESOURCES must be set before bpy is imported)."""
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

from blender_helpers import make_synthetic_smplx_model, synthetic_take, write_take
from conftest import ROOT, requires_bpy

pytestmark = requires_bpy

# Import names of the worker's requirements that Blender's Python does not ship (it has numpy).
NOT_IN_BLENDER = ("torch", "scipy", "librosa", "soundfile", "soxr", "pocketsphinx", "safetensors", "tqdm",
                  "transformers", "numba", "smplx")


def test_blocked_list_covers_the_worker_requirements():
    names = {line.split("==")[0].strip().lower() for line in (ROOT / "requirements" / "core.txt").read_text().splitlines()
             if line.strip() and not line.startswith(("#", "-"))}
    assert names - {"numpy"} <= set(NOT_IN_BLENDER), names - set(NOT_IN_BLENDER)

INSTALL_AND_USE = r"""
import importlib.abc, json, os, sys
zip_path, take_path, model_path, blocked = sys.argv[1:5]
blocked = set(blocked.split(","))


class BlockNotShippedByBlender(importlib.abc.MetaPathFinder):
    # Blender's own Python has numpy, requests, zstandard and cython only: the add-on must register and
    # work without the worker's packages even where this test environment happens to have them.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"No module named {name!r} (Blender does not ship it)", name=name)
        return None


sys.meta_path.insert(0, BlockNotShippedByBlender())
import bpy, addon_utils
out = {}
bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
module = "bl_ext.user_default.echomask"
out["enabled"] = module in bpy.context.preferences.addons
out["operators"] = [name for name in ("import_take", "export_take_fbx", "create_rig")
                    if hasattr(bpy.types, "ECHOMASK_OT_" + name)]
prefs = bpy.context.preferences.addons[module].preferences
prefs.smplx_model_path = os.path.join(os.path.dirname(model_path), "missing.npz")
count = len(bpy.data.objects)
try:
    bpy.ops.echomask.create_rig()
    out["bad_model_error"] = None
except RuntimeError as err:
    out["bad_model_error"] = str(err)
out["objects_after_bad_model"] = len(bpy.data.objects) - count
prefs.smplx_model_path = model_path
out["create_rig"] = sorted(bpy.ops.echomask.create_rig())
out["objects"] = sorted((o.name, o.type) for o in bpy.data.objects if o.name.startswith("SMPLX"))
out["import"] = sorted(bpy.ops.echomask.import_take(filepath=take_path, use_audio=False, fps_mode="TAKE"))
rig = bpy.context.view_layer.objects.active
out["action"] = rig.animation_data.action.name
out["face_keys"] = sum(1 for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys
                       and o.data.shape_keys.animation_data and o.data.shape_keys.animation_data.action)
addon_utils.disable(module)
out["registered_after_disable"] = hasattr(bpy.types, "ECHOMASK_OT_import_take")
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "build_extension.py"), "--output-dir", str(out_dir)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zip_path = pathlib.Path(proc.stdout.strip().splitlines()[-1])
    assert zip_path.name == "echomask-0.1.0.zip" and zip_path.exists()
    return zip_path


def test_zip_holds_the_add_on_and_no_dev_files(extension_zip):
    names = zipfile.ZipFile(extension_zip).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "echomask_blender/exchange/operators.py" in names and "core/motion/take.py" in names
    # Install Runtime needs the pins for the Python of every supported Blender (3.11: 4.2-5.0, 3.13: 5.1+)
    assert {"echomask_blender/runtime_requirements/python3.11.txt",
            "echomask_blender/runtime_requirements/python3.13.txt"} <= set(names)
    for excluded in ("tests/", "bench/", "tools/", "requirements/", ".ci/", "docs/", "__pycache__"):
        assert not [n for n in names if n.startswith(excluded) or f"/{excluded}" in n], excluded
    assert not [n for n in names if n.endswith(".pyc")]


def test_manifest_admits_every_supported_blender():
    import tomllib

    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text())
    assert manifest["blender_version_min"] == "4.2.0"
    # blender_version_max is the first version NOT supported: absent, or past 5.3
    maximum = manifest.get("blender_version_max")
    assert maximum is None or tuple(int(x) for x in maximum.split(".")) > (5, 3, 99), maximum
    assert "wheels" not in manifest   # the bpy layer uses only what Blender's Python ships (3.11 and 3.13 alike)


def test_built_zip_installs_enables_and_works(extension_zip, tmp_path):
    take = write_take(tmp_path / "take.npz", synthetic_take(n=12))
    model = make_synthetic_smplx_model(tmp_path / "SMPLX_TEST.npz")
    user = tmp_path / "blender_user"
    user.mkdir()
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(user)}
    proc = subprocess.run([sys.executable, "-c", INSTALL_AND_USE, str(extension_zip), take, model, ",".join(NOT_IN_BLENDER)],
                          capture_output=True, text=True, env=env, timeout=180, cwd=str(tmp_path))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["enabled"]
    assert out["operators"] == ["import_take", "export_take_fbx", "create_rig"]
    assert out["bad_model_error"] and "SMPL-X model file not found" in out["bad_model_error"]
    assert out["objects_after_bad_model"] == 0
    assert out["create_rig"] == ["FINISHED"]
    assert out["objects"] == [["SMPLX", "ARMATURE"], ["SMPLX-mesh", "MESH"]]
    assert out["import"] == ["FINISHED"] and out["action"] == "take"
    assert out["face_keys"] == 1  # the rig the import created got the mesh (model set) and its face keys
    assert not out["registered_after_disable"]
    assert (user / "extensions" / "user_default" / "echomask" / "blender_manifest.toml").exists()
