"""Distributed training with torch.distributed (DDP under torchrun, gloo on the CPU): one step on 2
processes equals one step of a single process on the same global batch, and a run resumes with another
number of processes."""
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import ROOT, requires_torch
from model_helpers import data_fitted_tiny_bundle, synthetic_takes

pytestmark = requires_torch


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from echomask.core.checkpoint import load_model

    root = tmp_path_factory.mktemp("ddp")
    data = root / "data"
    data.mkdir()
    synthetic_takes(data, n_takes=2, frames=450)
    load_model(data_fitted_tiny_bundle(root / "bundle.safetensors", data)).tokenizers.save(root / "tok.safetensors")
    return root


def _train(root, out, nproc, steps, resume=False, stop_after=0, extra=()):
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(29500 + os.getpid() % 1000 + nproc)] if nproc > 1 else [sys.executable])
    cmd += ["-m", "core", "train", "--manifest", str(root / "data"), "--config", "tiny", "--tokenizers",
            str(root / "tok.safetensors"), "--out", str(out), "--steps", str(steps), "--batch-size", "4",
            "--val-every", "1000", "--no-progress", "--threads", "1", "--device", "cpu", "--stop-after", str(stop_after)]
    cmd += (["--resume"] if resume else []) + list(extra)
    env = {**os.environ, "ECHOMASK_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _params(path):
    from echomask.core.checkpoint import load_model

    return {k: v for k, v in load_model(path).generator.state_dict().items() if v.dtype.is_floating_point}


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_processes_step_like_one(setup):
    root = setup
    aug = ("--speech-aug", "0.2")   # random speech augmentation: drawn for the global batch, so ranks agree
    _train(root, root / "single", 1, 1, extra=aug)
    proc = _train(root, root / "ddp", 2, 1, extra=aug)
    assert "x 2 processes (gloo)" in proc.stdout + proc.stderr
    single, ddp = _params(root / "single" / "model.safetensors"), _params(root / "ddp" / "model.safetensors")
    start = _params(root / "bundle.safetensors")
    moved = _max_diff(single, {k: start[k] for k in single})
    assert moved > 1e-4  # the step changed the weights
    assert _max_diff(single, ddp) <= 1e-6


def test_resume_with_another_number_of_processes(setup):
    root = setup
    _train(root, root / "straight", 1, 3)
    _train(root, root / "switch", 2, 3, stop_after=2)
    _train(root, root / "switch", 1, 3, resume=True)
    a, b = _params(root / "straight" / "model.safetensors"), _params(root / "switch" / "model.safetensors")
    assert _max_diff(a, b) <= 1e-5
