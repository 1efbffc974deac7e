"""Training throughput per process (windows/s) and peak memory, for 1 process and for N processes under
torchrun (DDP; gloo on the CPU, NCCL on CUDA), for the generator (stage 2) and the tokenizers (stage 1).

Data: a synthetic BEAT2-layout folder made here (smooth random motion, noise "speech", official-split
CSV), so no data set is needed; it goes through the same streamed data path as BEAT2 (core.training.streaming).
Speech features are random arrays of the config's sizes (feature extraction is not part of a training
step: it runs once, before training, and is cached). Weights are random (speed does not depend on them).
Only the training steps are timed: each step is the time between consecutive calls of the step function
(forward, three passes, backward, optimiser, EMA, and the batch read), the first `--warmup` steps left out;
validation and checkpoint writing are switched off in the timed runs.

    python bench/bench_train_throughput.py                                # tiny, generator, 1 and 2 processes
    python bench/bench_train_throughput.py --config small --batch 8 16 --stage both
    python bench/bench_train_throughput.py --config paper --batch 2 4 --procs 1 --steps 4 --warmup 1
    python bench/bench_train_throughput.py --config small --device cuda --procs 1 8 --batch 64

Prints one row per (stage, processes, global batch): median wall seconds a step, global and per-process
windows/s, the CPU seconds a step costs each process (on a machine shared with other jobs the wall time
grows with the contention, the CPU time hardly), and the peak resident memory (RSS) of the busiest process.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _import_package():
    sys.path.insert(0, str(ROOT.parent))
    import importlib.util

    if "echomask" not in sys.modules:
        spec = importlib.util.spec_from_file_location("echomask", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["echomask"] = mod
        spec.loader.exec_module(mod)


def make_data(folder: pathlib.Path, takes: int = 4, seconds: float = 24.0, seed: int = 0) -> pathlib.Path:
    """A BEAT2-layout folder: `takes` training takes + one short validation take of speaker 2."""
    import numpy as np
    import soundfile as sf

    from echomask.core.motion.take import Take, save_take

    base = folder / "beat_english_v2.0.0"
    (base / "smplxflame_30").mkdir(parents=True)
    (base / "wave16k").mkdir()
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(takes + 1):
        cid = f"2_synthetic_0_{k + 1}_{k + 1}"
        frames = int((seconds if k < takes else 4.0) * 30)
        t = np.arange(frames)[:, None] / 30.0
        poses = 0.15 * np.sin(2 * np.pi * rng.uniform(0.2, 1.5, (1, 165)) * t + rng.uniform(0, 6, (1, 165)))
        trans = np.zeros((frames, 3), np.float32)
        trans[:, 1] = 1.3
        expr = 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2, (1, 100)) * t)
        save_take(Take(poses=poses.astype(np.float32), trans=trans, expressions=expr.astype(np.float32)),
                  base / "smplxflame_30" / f"{cid}.npz")
        n = int(frames / 30 * 16000)
        sf.write(base / "wave16k" / f"{cid}.wav", (0.05 * rng.standard_normal(n)).astype(np.float32), 16000)
        rows.append(f"{cid},{'train' if k < takes else 'val'}")
    (base / "train_test_split.csv").write_text("id,type\n" + "\n".join(rows) + "\n")
    return base


def make_tokenizers(path: pathlib.Path, config: str) -> None:
    import torch

    from echomask.core.model.config import get_config
    from echomask.core.model.tokenizer import TokenizerSet
    from echomask.core.motion.skeleton import PARTS

    torch.manual_seed(0)
    tok = TokenizerSet(get_config(config))
    for p in PARTS:
        for layer in tok[p].quantizer.layers:
            layer.codebook.copy_(torch.randn_like(layer.codebook))
            layer.initialized.fill_(True)
    tok.save(str(path), {"note": "random weights for bench_train_throughput"})


def random_features(dims):
    import numpy as np

    def features(wav_path, fps):
        import soundfile as sf

        n = int(round(sf.info(wav_path).frames * fps / 16000))
        rng = np.random.default_rng(n)
        return rng.standard_normal((n, dims[0])).astype(np.float32), rng.standard_normal((n, dims[1])).astype(np.float32)
    features.cache_tag = f"bench-random-{dims[0]}x{dims[1]}"
    return features


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _write(a, stamps) -> None:
    """Per step: wall seconds and CPU seconds of this process (all its threads). On a machine shared with
    other jobs the wall time grows with the contention; the CPU time is what the step itself costs."""
    rank = int(os.environ.get("RANK", "0"))
    wall = [b[0] - c[0] for b, c in zip(stamps[1:], stamps[:-1])]
    cpu = [b[1] - c[1] for b, c in zip(stamps[1:], stamps[:-1])]
    pathlib.Path(a.result, f"rank{rank}.json").write_text(json.dumps({"steps": wall, "cpu": cpu,
                                                                       "rss_mb": _peak_rss_mb()}))


# ----------------------------------------------------------------------------------------------------------
# Workers (one per process; under torchrun for N > 1)

def worker_generator(a) -> None:
    import torch

    _import_package()
    from echomask.core.model import checkpoint
    from echomask.core.training import train as T
    from echomask.core.model.config import get_config
    from echomask.core.model.generator import speech_dims
    from echomask.core.training.streaming import DataOptions

    torch.set_num_threads(a.threads)
    stamps = []
    real_step = T.training_step

    def timed(*args, **kw):
        stamps.append((time.perf_counter(), time.process_time()))
        return real_step(*args, **kw)

    T.training_step = timed
    T.evaluate = lambda *args, **kw: {}          # timing only: no validation, no probes, no files
    T.probe_sets = lambda *args, **kw: {}
    checkpoint.save_model = lambda *args, **kw: None
    torch.save = lambda obj, f, *args, **kw: open(f, "wb").close()   # an empty resume state
    cfg = get_config(a.config)
    tcfg = T.TrainConfig(steps=a.steps + 1, batch_size=a.batch, val_every=10 ** 9, ckpt_every=10 ** 9,
                         log_every=10 ** 9, warmup=1)
    T.train_generator(a.data, a.config, a.tokenizers, a.out, tcfg, device=a.device, log=lambda *x: None,
                      progress_bar=False, feature_fn=random_features(speech_dims(cfg.generator)),
                      data_options=DataOptions(cache_dir=a.cache))
    _write(a, stamps)


def worker_tokenizers(a) -> None:
    import torch

    _import_package()
    from echomask.core.training.streaming import DataOptions
    from echomask.core.training.train_tokenizers import TokenizerTrainOptions, train_tokenizers

    torch.set_num_threads(a.threads)
    stamps = []

    class TimedAdamW(torch.optim.AdamW):
        def step(self, *args, **kw):
            out = super().step(*args, **kw)
            stamps.append((time.perf_counter(), time.process_time()))
            return out

    torch.optim.AdamW = TimedAdamW
    opts = DataOptions(cache_dir=a.cache)
    train_tokenizers(opts.manifest(a.data), a.config, os.path.join(a.out, "tok.safetensors"),
                     TokenizerTrainOptions(steps=a.steps + 1, batch_size=a.batch, val_every=10 ** 9,
                                           save_every=10 ** 9, device=a.device),
                     progress=False, data_options=opts, log=lambda *x: None)
    _write(a, stamps)


# ----------------------------------------------------------------------------------------------------------

def _run(stage, procs, batch, args, work, data, tok) -> dict:
    result = pathlib.Path(tempfile.mkdtemp(dir=work, prefix=f"res-{stage}-{procs}-{batch}-"))
    out = result / "out"
    out.mkdir()
    worker = ["--worker", stage, "--data", str(data), "--tokenizers", str(tok), "--out", str(out), "--result",
              str(result), "--cache", str(work / "cache"), "--config", args.config, "--device", args.device,
              "--threads", str(args.threads), "--steps", str(args.steps + args.warmup)]
    worker += ["--batch", str(batch)]
    script = str(pathlib.Path(__file__).resolve())
    if procs > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port",
               str(29400 + os.getpid() % 500), script, *worker]
    else:
        cmd = [sys.executable, script, *worker]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} run ({procs} processes, batch {batch}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    ranks = [json.loads(p.read_text()) for p in sorted(result.glob("rank*.json"))]
    per_rank = [statistics.median(r["steps"][args.warmup:]) for r in ranks]
    step = max(per_rank)    # the global step waits for the slowest rank
    cpu = max(statistics.median(r["cpu"][args.warmup:]) for r in ranks)
    return {"stage": stage, "config": args.config, "device": args.device, "processes": procs, "global_batch": batch,
            "threads_per_process": args.threads, "step_s": step, "windows_per_s": batch / step,
            "windows_per_s_per_process": batch / step / procs, "cpu_s_per_step_per_process": cpu,
            "windows_per_cpu_s_per_process": batch / procs / cpu, "peak_rss_mb": max(r["rss_mb"] for r in ranks),
            "timed_steps": len(ranks[0]["steps"]) - args.warmup, "wall_s": round(time.time() - t0, 1)}


def parameter_counts(config: str) -> dict:
    from echomask.core.model.config import get_config
    from echomask.core.model.generator import EchoMaskGenerator
    from echomask.core.model.tokenizer import TokenizerSet

    cfg = get_config(config)
    count = lambda m: sum(p.numel() for p in m.parameters())
    return {"generator": count(EchoMaskGenerator(cfg)), "tokenizers": count(TokenizerSet(cfg))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny", help="tiny, small or paper")
    ap.add_argument("--stage", default="generator", choices=("generator", "tokenizers", "both"))
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts (generator; tokenizer "
                    "training runs in one process)")
    ap.add_argument("--batch", type=int, nargs="+", default=[8], help="global batch sizes")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    # worker mode (internal)
    for name in ("--worker", "--data", "--tokenizers", "--out", "--result", "--cache"):
        ap.add_argument(name, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.batch = args.batch[0]
        (worker_generator if args.worker == "generator" else worker_tokenizers)(args)
        return 0

    _import_package()
    work = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="echomask_bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = work / "data" / "beat_english_v2.0.0"
        if not data.is_dir():
            data = make_data(work / "data")
        tok = work / f"tok_{args.config}.safetensors"
        if not tok.is_file():
            make_tokenizers(tok, args.config)
        params = parameter_counts(args.config)
        print(f"config {args.config}: generator {params['generator'] / 1e6:.2f} M parameters, tokenizers (4 parts) "
              f"{params['tokenizers'] / 1e6:.2f} M", flush=True)
        rows = []
        stages = ("tokenizers", "generator") if args.stage == "both" else (args.stage,)
        for stage in stages:
            for procs in (args.procs if stage == "generator" else [1]):
                for batch in args.batch:
                    if batch % procs:
                        print(f"skip: batch {batch} does not split over {procs} processes")
                        continue
                    row = _run(stage, procs, batch, args, work, data, tok)
                    row["parameters"] = params["generator" if stage == "generator" else "tokenizers"]
                    rows.append(row)
                    print(f"{row['stage']:<10} {row['config']:<6} {row['device']:<5} procs {procs} x {args.threads} "
                          f"thread(s)  batch {batch:>3}: step {row['step_s']:.3f} s  {row['windows_per_s']:.1f} windows/s "
                          f"({row['windows_per_s_per_process']:.1f} per process; CPU {row['cpu_s_per_step_per_process']:.3f} s "
                          f"a step per process = {row['windows_per_cpu_s_per_process']:.1f} windows per CPU-second)  "
                          f"peak RSS {row['peak_rss_mb']:.0f} MB"
                          f"  ({row['timed_steps']} steps timed)", flush=True)
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
