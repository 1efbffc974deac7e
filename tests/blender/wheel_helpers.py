"""Tiny local wheels, a local (optionally slow) package server and fake installed runtimes, so the runtime
installer's real code paths (venv, pip, swap, cancel) run in seconds without the internet.

The fake `torch` wheel holds a module with `__version__`, `cuda` and `backends.mps`: enough for the real
`python -m core.jobs.worker --probe` to describe the runtime it is in.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import zipfile

FAKE_TORCH = '''__version__ = "{version}"


class cuda:
    @staticmethod
    def is_available():
        return False

    @staticmethod
    def get_device_name(index=0):
        return ""


class backends:
    class mps:
        @staticmethod
        def is_available():
            return False
'''


def make_wheel(folder, name: str, version: str, files: dict[str, bytes]) -> pathlib.Path:
    """A pure-Python wheel `name-version-py3-none-any.whl` holding `files` (path -> bytes)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    meta = {
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: echomask-tests\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n",
    }
    everything = {**files, **meta}
    record = []
    for path, data in everything.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name_in_zip, data in everything.items():
            z.writestr(name_in_zip, data)
        z.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path


def fake_torch_wheel(folder, version: str, payload_mb: float = 0.0) -> pathlib.Path:
    """A wheel named torch whose module reports `version`; `payload_mb` of incompressible bytes make its
    download and install take measurable time."""
    files = {"torch/__init__.py": FAKE_TORCH.format(version=version).encode()}
    if payload_mb:
        files["torch/_payload.bin"] = os.urandom(int(payload_mb * 1e6))
    return make_wheel(folder, "torch", version, files)


def pins(path, *lines: str) -> str:
    pathlib.Path(path).write_text("# test pins\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def isolate_pip(monkeypatch) -> None:
    """pip in the installer's subprocesses sees no machine-wide configuration (indexes, constraints)."""
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    bytes_per_second: float | None = None
    stall_after: int | None = None   # stop sending after this many bytes (a download that never ends)

    def log_message(self, *args):
        pass

    def copyfile(self, source, outputfile):
        sent = 0
        chunk = 32 * 1024
        while True:
            if self.stall_after is not None and sent >= self.stall_after:
                time.sleep(60)   # the client gives up (cancel) long before
                return
            data = source.read(chunk)
            if not data:
                return
            try:
                outputfile.write(data)
                outputfile.flush()
            except OSError:
                return
            sent += len(data)
            if self.bytes_per_second:
                time.sleep(len(data) / self.bytes_per_second)


@contextlib.contextmanager
def serve(folder, bytes_per_second: float | None = None, stall_after: int | None = None):
    """Serve `folder` on 127.0.0.1 (its listing is a find-links page); yields the base URL."""
    handler = type("Handler", (_QuietHandler,), {"bytes_per_second": bytes_per_second, "stall_after": stall_after})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def fake_installed_runtime(runtime_dir, torch_version: str = "1.0.0", folder: str = "rt-old",
                           legacy: bool = False) -> str:
    """A working installed runtime made without pip: a venv holding the fake torch module, and its stamp
    (the layout before this version when `legacy`). Returns its Python."""
    from echomask.echomask_blender.run import runtime

    runtime_dir = pathlib.Path(runtime_dir)
    venv = runtime_dir / "venv" if legacy else runtime_dir / folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = runtime.venv_python(str(venv))
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (pathlib.Path(site) / "torch").mkdir(parents=True)
    (pathlib.Path(site) / "torch" / "__init__.py").write_text(FAKE_TORCH.format(version=torch_version))
    stamp = {"variant": "CPU", "installed_at": "earlier"}
    if not legacy:
        stamp.update(folder=folder, python=runtime.python_tag(sys.version_info), pins_sha256="x")
    (runtime_dir / runtime.STAMP_NAME).write_text(json.dumps(stamp))
    return python


def torch_version_of(python: str) -> str:
    return subprocess.run([python, "-c", "import torch; print(torch.__version__)"], check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()
