"""Speech-feature benchmark: compute time per second of speech (low-level, phones, end to end) for 10 s and
60 s clips (and 600 s with --long), Python-side peak memory, and phone-recognition agreement with the MFA
alignments in ../shared/data/beat2_samples/textgrid/.

    python bench/bench_speech_features.py                 # speed + phone agreement with the default settings
    python bench/bench_speech_features.py --long          # also 600 s (memory flatness)
    python bench/bench_speech_features.py --sweep         # speed/accuracy of the recogniser presets
    python bench/bench_speech_features.py --json out.json

Speech is real BEAT2 speech from ../shared when present (clips concatenated to the wanted length), else a
synthetic voiced/unvoiced signal (phone agreement then skipped). Times are wall and process-CPU seconds,
best of --repeat runs; the machine's load average is printed because other jobs distort wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import tracemalloc
from dataclasses import asdict

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere: `core` is the repository's package

from core.speech.audio import load_speech  # noqa: E402
from core.speech import compute_speech_features, num_frames  # noqa: E402
from core.speech.builtin import SPEECH_FLAG, BuiltinBackend, normalise_low  # noqa: E402
from core.speech.phone_eval import group_precision_recall, phone_agreement  # noqa: E402
from core.speech.phones import RECOGNISER_PRESETS, recognise_phones  # noqa: E402
from core.speech.textgrid import read_textgrid_phones  # noqa: E402

SR = 16000
SAMPLES = ROOT.parent / "shared" / "data" / "beat2_samples"
ALIGNED = ("2_scott_0_1_1", "2_scott_0_2_2", "2_scott_0_4_4")


def speech_of_length(seconds: float) -> tuple[np.ndarray, str]:
    wavs = sorted((SAMPLES / "wave16k").glob("*.wav")) if SAMPLES.is_dir() else []
    if wavs:
        pieces, total = [], 0
        while total < seconds * SR:
            for wav in wavs:
                pieces.append(load_speech(wav))
                total += len(pieces[-1])
                if total >= seconds * SR:
                    break
        return np.concatenate(pieces)[:int(seconds * SR)], "BEAT2 speech (shared data)"
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 12))
    gate = (np.sin(2 * np.pi * 3.1 * t) > -0.3).astype(float)
    audio = 0.1 * (voiced * gate + 0.3 * rng.standard_normal(len(t)) * (1 - gate))
    return audio.astype(np.float32), "synthetic (no shared data)"


def timed(fn, repeat: int):
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return result, best_wall, best_cpu


def bench_speed(lengths, repeat: int) -> list[dict]:
    backend = BuiltinBackend()
    recognise_phones(np.zeros(SR, np.float32))  # build the decoder once (model load), as a warm worker has it
    rows = []
    for seconds in lengths:
        audio, source = speech_of_length(seconds)
        n = num_frames(len(audio), 30.0)
        _, low_wall, low_cpu = timed(lambda: normalise_low(backend.lowlevel.compute(audio, n, 30.0), 30.0), repeat)
        _, ph_wall, ph_cpu = timed(lambda: recognise_phones(audio), repeat)
        _, e2e_wall, e2e_cpu = timed(lambda: compute_speech_features(audio, 30.0), repeat)
        tracemalloc.start()
        feats = compute_speech_features(audio, 30.0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out_mb = (feats.low.nbytes + feats.high.nbytes) / 2**20
        rows.append(dict(seconds=seconds, source=source,
                         lowlevel_cpu_per_s=low_cpu / seconds, phones_cpu_per_s=ph_cpu / seconds,
                         end_to_end_cpu_per_s=e2e_cpu / seconds, end_to_end_wall_per_s=e2e_wall / seconds,
                         lowlevel_wall_s=low_wall, phones_wall_s=ph_wall, end_to_end_wall_s=e2e_wall,
                         end_to_end_cpu_s=e2e_cpu, python_peak_mb=peak / 2**20, output_mb=out_mb))
        r = rows[-1]
        print(f"{seconds:6.0f} s speech: end to end {e2e_wall:6.2f} s wall / {e2e_cpu:6.2f} s CPU "
              f"({r['end_to_end_cpu_per_s']:.4f} CPU s per s of speech; low-level {r['lowlevel_cpu_per_s']:.4f}, "
              f"phones {r['phones_cpu_per_s']:.4f}); Python peak {r['python_peak_mb']:.1f} MB "
              f"(outputs {out_mb:.1f} MB)", flush=True)
    return rows


def bench_phones(preset: str = "fast") -> dict | None:
    if not (SAMPLES / "textgrid").is_dir():
        print("phone agreement: skipped (no ../shared/data/beat2_samples/textgrid)")
        return None
    config = RECOGNISER_PRESETS[preset]
    per_clip, cpu_total, seconds_total = {}, 0.0, 0.0
    for clip in ALIGNED:
        audio = load_speech(SAMPLES / "wave16k" / f"{clip}.wav")
        reference = read_textgrid_phones(SAMPLES / "textgrid" / f"{clip}.TextGrid")
        cpu = time.process_time()
        hypothesis = recognise_phones(audio, config)
        cpu_total += time.process_time() - cpu
        seconds_total += len(audio) / SR
        score = phone_agreement(reference, hypothesis, len(audio) / SR).as_dict()
        precision, recall = group_precision_recall(reference, hypothesis, len(audio) / SR)
        score["bilabial_precision"], score["bilabial_recall"] = round(precision, 4), round(recall, 4)
        if preset == "fast":  # the speech/pause flag of the full features, against the alignment's silences
            feats = compute_speech_features(audio, 30.0)
            from core.speech.phone_eval import _collapse
            from core.speech.phones import PHONE_INDEX, frame_labels

            ref_speech = _collapse(frame_labels(reference, feats.num_frames, 30.0)) != PHONE_INDEX["SIL"]
            score["speech_flag_agreement_30fps"] = round(float(np.mean((feats.high[:, SPEECH_FLAG] > 0.5) == ref_speech)), 4)
        per_clip[clip] = score
    keys = [k for k in next(iter(per_clip.values())) if k != "frames"]
    mean = {k: round(float(np.mean([c[k] for c in per_clip.values()])), 4) for k in keys}
    mean["phones_cpu_per_s"] = round(cpu_total / seconds_total, 4)
    return {"preset": preset, "settings": asdict(config), "mean": mean, "clips": per_clip}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="also time 600 s of speech")
    parser.add_argument("--sweep", action="store_true", help="phone agreement and speed for every recogniser preset")
    parser.add_argument("--repeat", type=int, default=2, help="timing runs per measurement (best is kept)")
    parser.add_argument("--json", help="write all figures to this JSON file")
    args = parser.parse_args(argv)

    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    report = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    report["speed"] = bench_speed([10.0, 60.0] + ([600.0] if args.long else []), args.repeat)
    presets = list(RECOGNISER_PRESETS) if args.sweep else ["fast"]
    report["phones"] = []
    for preset in presets:
        result = bench_phones(preset)
        if result is None:
            break
        report["phones"].append(result)
        m = result["mean"]
        print(f"phones [{preset}] {result['settings']}: frame agreement {m['accuracy']:.3f} "
              f"(speech frames {m['speech_accuracy']:.3f}; chance {m['chance']:.3f}), speech/pause "
              f"{m['pause_agreement']:.3f}, {m['phones_cpu_per_s']:.4f} CPU s per s", flush=True)
        print(f"  bilabial (P/B/M) frames: precision {m['bilabial_precision']:.3f}, recall {m['bilabial_recall']:.3f}")
        if "speech_flag_agreement_30fps" in m:
            print(f"  speech flag vs alignment at 30 fps: {m['speech_flag_agreement_30fps']:.3f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
