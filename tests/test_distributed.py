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
    from echomask.core.model.checkpoint import load_model

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
    from echomask.core.model.checkpoint import load_model

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


# ----------------------------------------------------------------------------------------------------------
# The tokenizers (train-tokenizers): the same design, plus RVQ codebooks updated from the global batch

@pytest.fixture(scope="module")
def takes(tmp_path_factory):
    data = tmp_path_factory.mktemp("ddp_tok") / "data"
    data.mkdir()
    synthetic_takes(data, n_takes=2, frames=450)
    return data


def _train_tokenizers(data, out, nproc, steps, resume=False, extra=(), check=True):
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(29700 + os.getpid() % 100 + nproc)] if nproc > 1 else [sys.executable])
    cmd += ["-m", "core", "train-tokenizers", "--manifest", str(data), "--config", "tiny", "--out", str(out),
            "--steps", str(steps), "--batch-size", "4", "--val-every", "1", "--no-progress", "--threads", "1",
            "--device", "cpu"]
    cmd += (["--resume"] if resume else []) + list(extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _tokenizer_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _log(path):
    import json

    return [json.loads(line) for line in open(str(path) + ".log.jsonl")]


def test_tokenizers_two_processes_step_like_one_and_stay_identical(takes, tmp_path):
    single, ddp = tmp_path / "single" / "tok.safetensors", tmp_path / "ddp" / "tok.safetensors"
    _train_tokenizers(takes, single, 1, 1)
    proc = _train_tokenizers(takes, ddp, 2, 1)
    assert "x 2 processes (gloo)" in proc.stdout + proc.stderr
    a, b = _tokenizer_tensors(single), _tokenizer_tensors(ddp)
    assert a.keys() == b.keys()
    assert _max_diff(a, b) <= 1e-6                       # weights and codebooks after one step
    assert abs(_log(single)[1]["loss"] - _log(ddp)[1]["loss"]) <= 1e-5
    assert _log(ddp)[-1]["rank_max_diff"] == 0.0         # both ranks hold the same weights and EMA state

    # Resume each with the other number of processes; more steps reset dead codes (drawn by rank 0 from the
    # global batch), and the ranks' parameters and codebook buffers must still be identical.
    _train_tokenizers(takes, single, 2, 3, resume=True)
    _train_tokenizers(takes, ddp, 1, 3, resume=True)
    log = _log(single)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert any(v > 0 for r in log for k, v in r.items() if k.endswith("reset_share"))
    assert log[-1]["rank_max_diff"] == 0.0
    assert _max_diff(_tokenizer_tensors(single), _tokenizer_tensors(ddp)) <= 1e-5


# ----------------------------------------------------------------------------------------------------------
# --precision on the CPU: fp32 is the default, bf16 runs with CPU autocast, fp16 is refused clearly

def test_tokenizer_precision_on_cpu(takes, tmp_path):
    from echomask.core.model.tokenizer import TokenizerSet

    default, fp32 = tmp_path / "default" / "tok.safetensors", tmp_path / "fp32" / "tok.safetensors"
    _train_tokenizers(takes, default, 1, 2)
    _train_tokenizers(takes, fp32, 1, 2, extra=("--precision", "fp32"))
    a, b = _tokenizer_tensors(default), _tokenizer_tensors(fp32)
    assert all(a[k].equal(b[k]) for k in a)               # auto on the CPU is fp32
    assert TokenizerSet.load(default).meta["precision"] == "fp32"

    bf16 = tmp_path / "bf16" / "tok.safetensors"
    proc = _train_tokenizers(takes, bf16, 1, 2, extra=("--precision", "bf16"))
    assert "precision bf16" in proc.stderr
    import math

    assert all(math.isfinite(r["loss"]) for r in _log(bf16) if "loss" in r)
    saved = _tokenizer_tensors(bf16)
    assert all(v.dtype == a[k].dtype for k, v in saved.items())   # weights stay float32
    assert TokenizerSet.load(bf16).meta["precision"] == "bf16"
    assert _max_diff(saved, a) > 0                        # autocast did change the arithmetic

    proc = _train_tokenizers(takes, tmp_path / "fp16" / "tok.safetensors", 1, 1, extra=("--precision", "fp16"),
                             check=False)
    assert proc.returncode != 0 and "fp16 needs a CUDA device" in proc.stderr and "Traceback" not in proc.stderr


def test_generator_precision_on_cpu(setup):
    root = setup
    proc = _train(root, root / "bf16", 1, 2, extra=("--precision", "bf16"))
    assert "precision bf16" in proc.stdout + proc.stderr
    from echomask.core.model.checkpoint import load_model

    model = load_model(root / "bf16" / "model.safetensors")
    assert model.meta["precision"] == "bf16"
    params = _params(root / "bf16" / "model.safetensors")
    assert all(v.dtype.is_floating_point and v.dtype == next(iter(params.values())).dtype for v in params.values())
    import json
    import math

    train_log = [json.loads(line) for line in open(root / "bf16" / "train_log.jsonl")]
    assert all(math.isfinite(r["loss"]) for r in train_log if r.get("split") == "train")
    cmd = [sys.executable, "-m", "core", "train", "--manifest", str(root / "data"), "--config", "tiny",
           "--tokenizers", str(root / "tok.safetensors"), "--out", str(root / "fp16"), "--steps", "1",
           "--device", "cpu", "--precision", "fp16", "--no-progress"]
    fail = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ECHOMASK_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"})
    assert fail.returncode != 0 and "fp16 needs a CUDA device" in fail.stderr and "Traceback" not in fail.stderr


def _codebook_worker(rank, world, init_file, rows_per_rank, out_dir):
    """One rank of test_codebooks_from_ranks_with_unequal_rows: its rows of a fixed latent batch through a
    few RVQ training passes; saves its codebooks and EMA statistics."""
    import torch
    import torch.distributed as tdist

    from echomask.core.training.distributed import DistContext
    from echomask.core.model.config import TokenizerConfig
    from echomask.core.model.tokenizer import ResidualVQ

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ctx = DistContext(rank, world, 0, "gloo")
    torch.manual_seed(0)
    rvq = ResidualVQ(TokenizerConfig(nb_code=16, code_dim=4, num_quantizers=3, ema_decay=0.5, dead_code_threshold=0.9))
    lo = sum(rows_per_rank[:rank])
    for step in range(4):
        z = torch.randn(sum(rows_per_rank), 4, generator=torch.Generator().manual_seed(step))
        rvq.forward_train(z[lo:lo + rows_per_rank[rank]], ctx)
    torch.save({k: v.clone() for k, v in rvq.state_dict(keep_vars=False).items()}
               | {f"ema_count{k}": layer.ema_count.clone() for k, layer in enumerate(rvq.layers)},
               f"{out_dir}/rank{rank}.pt")
    tdist.destroy_process_group()


def test_codebooks_from_ranks_with_unequal_rows(tmp_path):
    """RVQ codebook updates (initialisation, EMA, dead-code resets, quantiser dropout) on 3 ranks holding
    unequal shares of the batch, one of them none (a part that none of its windows teach), equal those of
    one process on the whole batch, and the ranks agree exactly."""
    import torch
    import torch.multiprocessing as mp

    from echomask.core.model.config import TokenizerConfig
    from echomask.core.model.tokenizer import ResidualVQ

    rows = [10, 14, 0]
    mp.spawn(_codebook_worker, args=(3, str(tmp_path / "init"), rows, str(tmp_path)), nprocs=3, join=True)
    r0, *others = [torch.load(tmp_path / f"rank{r}.pt") for r in range(3)]
    assert all(torch.equal(r0[k], other[k]) for other in others for k in r0)
    torch.manual_seed(0)
    single = ResidualVQ(TokenizerConfig(nb_code=16, code_dim=4, num_quantizers=3, ema_decay=0.5, dead_code_threshold=0.9))
    resets = 0.0
    for step in range(4):
        z = torch.randn(sum(rows), 4, generator=torch.Generator().manual_seed(step))
        resets += single.forward_train(z)[3]["reset_share"]
    assert resets > 0   # dead codes were refilled on the way
    expected = single.state_dict()
    assert max(float((r0[k] - expected[k]).abs().max()) for k in expected) <= 1e-6
    assert all(torch.allclose(r0[f"ema_count{k}"], layer.ema_count, atol=1e-6) for k, layer in enumerate(single.layers))
