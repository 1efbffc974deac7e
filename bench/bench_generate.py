"""Generation speed and memory: seconds of compute per second of speech, per stage (speech features, model,
decoding) and end to end, for 10 s, 60 s and 600 s of speech, plus peak memory (RSS) of each run.

Each length runs in a fresh subprocess so its peak RSS is its own (memory must stay flat in the audio's
length). The speech is synthetic (harmonic voice-like tones with pauses, made here), so no data is needed.

    python bench/bench_generate.py                      # bundled small weights, 10/60/600 s, CPU
    python bench/bench_generate.py --lengths 10 60 --weights path.safetensors --threads 2 --device cpu
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def synthetic_speech(seconds: float, seed: int = 0):
    """Voice-like signal: syllable-rate amplitude bursts of a pitch-varying harmonic tone, with pauses.
    Made in 10 s pieces (float32) so making it does not itself dominate the memory being measured."""
    import numpy as np

    sr = 16000
    n = int(seconds * sr)
    rng = np.random.default_rng(seed)
    offset = rng.uniform(0, 6)
    out = np.empty(n, np.float32)
    phase0 = 0.0
    for lo in range(0, n, 10 * sr):
        t = np.arange(lo, min(n, lo + 10 * sr)) / sr
        f0 = 120 + 30 * np.sin(2 * np.pi * 0.3 * t) + 10 * np.sin(2 * np.pi * 2.1 * t)
        phase = phase0 + 2 * np.pi * np.cumsum(f0) / sr
        phase0 = float(phase[-1])
        voice = sum(np.sin(k * phase) / k for k in range(1, 8))
        syll = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
        pauses = (np.sin(2 * np.pi * 0.17 * t + offset) > -0.6)
        out[lo:lo + len(t)] = 0.2 * voice * syll * pauses + 0.005 * rng.standard_normal(len(t))
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class PeakRSS:
    """Polls this process's resident memory every 20 ms while generation runs (Linux /proc)."""

    def __init__(self):
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            self._stop.wait(0.02)

    def __enter__(self):
        self.peak = _rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def run_one(seconds: float, weights: str | None, device: str, threads: int, lipsync: float | None = None,
            steps: int | None = None) -> dict:
    sys.path.insert(0, str(ROOT.parent))
    import importlib.util

    spec = importlib.util.spec_from_file_location("echomask", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["echomask"] = mod
    spec.loader.exec_module(mod)
    import torch

    from echomask.core.generation.inference import generate, resolve_model

    if threads > 0:
        torch.set_num_threads(threads)
    audio = synthetic_speech(seconds)
    resolve_model(weights, device)                    # load once, outside the timing (the worker keeps it)
    generate(synthetic_speech(3.0, seed=1), model=weights, device=device, threads=threads)   # warm-up
    rss0 = _rss_mb()
    timings = {}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        take = generate(audio, model=weights, device=device, timings=timings, threads=threads, lipsync=lipsync,
                        steps=steps)
        total = time.perf_counter() - t0
    return {"seconds": seconds, "frames": take.num_frames, "total_s": total,
            "per_speech_second": {k: v / seconds for k, v in timings.items()} | {"end_to_end": total / seconds},
            "realtime_factor": seconds / total, "peak_rss_mb": mem.peak, "rss_before_mb": rss0,
            "audio_mb": audio.nbytes / 2 ** 20, "threads": threads}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 600])
    ap.add_argument("--weights", default=None, help="model bundle (default: weights/echomask_small.safetensors)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads while generating (1 = the default)")
    ap.add_argument("--lipsync", type=float, default=None,
                    help="phone-mouth strength passed to generate (default: generate's; 0 = model face only)")
    ap.add_argument("--steps", type=int, default=None, help="decoding passes per window (default: generate's)")
    ap.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)  # child process mode
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.weights, args.device, args.threads, args.lipsync, args.steps)))
        return 0
    results = []
    for sec in args.lengths:
        cmd = [sys.executable, __file__, "--one", str(sec), "--device", args.device, "--threads", str(args.threads)]
        if args.weights:
            cmd += ["--weights", args.weights]
        if args.lipsync is not None:
            cmd += ["--lipsync", str(args.lipsync)]
        if args.steps is not None:
            cmd += ["--steps", str(args.steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'speech':>8} {'features':>9} {'model':>7} {'decode':>7} {'total':>7} {'x real time':>11} "
          f"{'RSS before':>10} {'peak RSS':>9}")
    print(f"{'(s)':>8} {'(s per s of speech)':>25} {'':>7} {'':>7} {'':>11} {'(MB)':>10} {'(MB)':>9}")
    for r in results:
        p = r["per_speech_second"]
        print(f"{r['seconds']:8.0f} {p.get('features', 0):9.4f} {p.get('model', 0):7.4f} {p.get('decode', 0):7.4f} "
              f"{p['end_to_end']:7.4f} {r['realtime_factor']:11.1f} {r['rss_before_mb']:10.0f} {r['peak_rss_mb']:9.0f}")
    print(f"(torch threads: {results[0]['threads']}, device {args.device}; peak RSS = highest resident memory "
          f"while generating, sampled every 20 ms; it includes the input audio, {results[-1]['audio_mb']:.0f} MB "
          f"at {results[-1]['seconds']:.0f} s, and the output take)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
