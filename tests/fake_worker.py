"""A stand-in for `python -m core.jobs.worker` that speaks the same JSON-lines protocol, fast and without torch.

    python tests/fake_worker.py --request REQUEST.json
    python tests/fake_worker.py --serve [--idle-timeout S]    (the warm worker: core.jobs.worker.serve's loop)
    python tests/fake_worker.py --probe

The take it writes is plausible, not learned: smooth per-joint sways whose size follows `intensity`, a
jaw and a few expressions that follow the speech loudness (so lip sync can be eyeballed), root sway when
`travel` is set. Same seed -> same take. Parts not in `parts` stay at rest; `known_take`/`known_mask` are
honoured the way the masked model does (known frames are copied, see core/motion/take_parts.py), with the real
worker's rule for their length (core.motion.take_parts.fit_known_to_speech).

Behaviour for tests, from the environment:
    ECHOMASK_FAKE_MODE   ok (default) | fail | hang | die | stubborn | notorch | garbage
      fail: an 'error' event (AudioError); hang: 'started' then silence forever; die: SIGKILLs itself after
      the first progress; stubborn: ignores SIGTERM while working; notorch: the ImportError a runtime
      without torch prints; garbage: non-JSON output then exit 1.
      In serve mode the same modes apply per request (hang: the job never ends; stubborn: ignores cancel).
    ECHOMASK_FAKE_ONCE   a file path: the mode applies to one job only (the first, which creates the file); later
                         jobs, in this process or a fresh one, run as 'ok' (a warm worker that hung or died once)
    ECHOMASK_FAKE_STEPS  progress events (default 5);  ECHOMASK_FAKE_DELAY  seconds between them (0.02)
    ECHOMASK_FAKE_STARTUP seconds spent starting (the real worker's torch import and model load), once per
                         process: every --request job pays it, a --serve worker only before 'ready'
    ECHOMASK_FAKE_PROBE  JSON merged into the --probe answer (e.g. '{"cuda": true}')
    ECHOMASK_FAKE_WARNING a 'warning' event with this message is sent while generating (as core.jobs.worker sends
                         core's warnings, e.g. music instead of speech)
    ECHOMASK_FAKE_RECORD a folder: the request, its speech (as speech.<ext>) and known_take/known_mask when
                         given are copied there
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import sys
import time
import wave

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core.motion import skeleton  # noqa: E402
from core.speech.audio import check_has_speech  # noqa: E402
from core.errors import AudioError, EchoMaskError  # noqa: E402
from core.jobs.protocol import emit  # noqa: E402
from core.jobs.worker import JobCancelled, serve  # noqa: E402
from core.motion.take import Take, load_take, save_take  # noqa: E402
from core.motion.take_parts import ANIM_PARTS, PART_JOINT_INDICES, fit_known_to_speech, merge_known  # noqa: E402


def read_wav_mono(path: str) -> tuple[np.ndarray, int]:
    """Samples in [-1, 1] and the rate (WAV only: the fake worker needs no audio libraries)."""
    try:
        with wave.open(path, "rb") as w:
            rate, channels, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as exc:
        raise ValueError(f"cannot read {path} as WAV ({exc})") from None
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    x = np.frombuffer(raw, dtype).astype(np.float64)
    x = (x - 128.0) / 128.0 if width == 1 else x / float(np.iinfo(dtype).max)
    return x.reshape(-1, channels).mean(1), rate


def loudness_per_frame(samples: np.ndarray, rate: int, fps: float, frames: int) -> np.ndarray:
    hop = rate / fps
    out = np.zeros(frames)
    for k in range(frames):
        seg = samples[int(k * hop):int((k + 1) * hop)]
        out[k] = np.sqrt(np.mean(seg ** 2)) if seg.size else 0.0
    peak = out.max()
    return out / peak if peak > 0 else out


def fake_take(loud: np.ndarray, fps: float, seed: int, temperature: float, intensity: float, travel: bool,
              parts: tuple[str, ...]) -> Take:
    rng = np.random.default_rng(seed)
    n = len(loud)
    t = np.arange(n) / fps
    amp = 0.08 * intensity * (0.5 + temperature) * rng.uniform(0.3, 1.0, size=(skeleton.NUM_JOINTS, 3))
    freq = rng.uniform(0.15, 0.9, size=(skeleton.NUM_JOINTS, 3))
    phase = rng.uniform(0, 2 * np.pi, size=(skeleton.NUM_JOINTS, 3))
    poses = amp[None] * np.sin(2 * np.pi * freq[None] * t[:, None, None] + phase[None])
    poses[:, skeleton.JAW, 0] = 0.25 * loud * intensity            # mouth opens with loudness
    expressions = np.zeros((n, skeleton.NUM_EXPRESSIONS))
    expressions[:, :4] = loud[:, None] * rng.uniform(-1.5, 1.5, size=4)[None] * intensity
    trans = np.zeros((n, 3))
    if travel:
        trans[:, 0] = 0.05 * np.sin(2 * np.pi * 0.1 * t)
    for part in ANIM_PARTS:
        if part in parts:
            continue
        if part == "root":
            trans[:] = 0.0
            continue
        poses[:, list(PART_JOINT_INDICES[part])] = 0.0
        if part == "face":
            expressions[:] = 0.0
    return Take(poses=poses.reshape(n, -1).astype(np.float32), trans=trans.astype(np.float32),
                expressions=expressions.astype(np.float32), fps=float(fps), meta={"model": "fake"})


def run(request: dict, mode: str, steps: int, delay: float, stop: dict) -> dict:
    started = time.perf_counter()
    samples, rate = read_wav_mono(request["audio"])
    if samples.size == 0:
        raise ValueError("the speech file has no samples")
    check_has_speech(samples, request.get("audio_label") or os.path.basename(request["audio"]), rate)  # as core.jobs.worker
    fps = float(request.get("fps") or 30.0)
    frames = max(1, int(round(samples.size / rate * fps)))
    for i in range(steps):
        if stop["set"] and mode != "stubborn":
            return {}
        emit("progress", fraction=round(i / steps, 4), message=f"Generating gestures ({i + 1}/{steps})")
        if i == 0 and os.environ.get("ECHOMASK_FAKE_WARNING"):
            emit("warning", message=os.environ["ECHOMASK_FAKE_WARNING"])
        if mode == "die":
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
        time.sleep(delay)
    parts = tuple(request.get("parts") or ANIM_PARTS)
    take = fake_take(loudness_per_frame(samples, rate, fps, frames), fps, int(request.get("seed", 0)),
                     float(request.get("temperature", 1.0)), float(request.get("intensity", 1.0)),
                     bool(request.get("travel", False)), parts)
    if request.get("known_take"):  # the real worker's contract: a frame or two of rounding is padded
        known, mask = fit_known_to_speech(load_take(request["known_take"]), np.load(request["known_mask"]), frames)
        take = merge_known(take, known, mask)
    take.meta.update({"audio": request["audio"], "seed": request.get("seed", 0)})
    save_take(take, request["output"])
    emit("progress", fraction=1.0, message="Writing the take")
    return {"result": request["output"], "frames": take.num_frames, "fps": take.fps,
            "seconds": round(time.perf_counter() - started, 3)}


def record_request(request: dict) -> None:
    record = os.environ.get("ECHOMASK_FAKE_RECORD")
    if not record:
        return
    os.makedirs(record, exist_ok=True)
    for key in ("known_take", "known_mask"):
        if request.get(key):
            shutil.copy(request[key], os.path.join(record, os.path.basename(request[key])))
    shutil.copy(request["audio"], os.path.join(record, "speech" + os.path.splitext(request["audio"])[1]))
    with open(os.path.join(record, "request.json"), "w") as f:
        json.dump(request, f)


def serve_fake(mode: str, steps: int, delay: float, idle_timeout: float) -> int:
    """The warm worker: the real serve loop (core.jobs.worker.serve) around the fake generation."""
    loaded: list[str] = []
    once = os.environ.get("ECHOMASK_FAKE_ONCE")

    def job_mode() -> str:
        if not once:
            return mode
        if os.path.exists(once):
            return "ok"
        pathlib.Path(once).touch()
        return mode

    def note_model(weights, device):
        key = f"{weights or 'fake'} @ {device or 'auto'}"
        if key not in loaded:
            loaded[:] = [key]           # as core.generation.inference: one model cached at a time

    def run_job(request: dict, cancelled) -> dict:
        record_request(request)
        mode = job_mode()
        if mode == "hang":
            while True:                 # stuck: no events, ignores cancel
                time.sleep(0.05)
        if mode == "fail":
            raise AudioError("The speech file is silent: there is nothing to animate.")
        stop = {"set": False}
        if mode != "stubborn":
            stop = _Flag(cancelled)
        try:
            done = run(request, mode, steps, delay, stop)
        except (ValueError, KeyError) as exc:
            raise AudioError(f"Fake worker: {exc}") from None
        if not done:
            raise JobCancelled()
        note_model(request.get("weights"), request.get("device"))
        return done

    return serve(run_job, idle_timeout=idle_timeout, load=note_model, models=lambda: list(loaded))


class _Flag(dict):
    """run()'s stop flag, read from serve's cancelled()."""

    def __init__(self, cancelled):
        super().__init__()
        self._cancelled = cancelled

    def __getitem__(self, key):
        return self._cancelled()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--request")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--idle-timeout", type=float, default=900.0)
    parser.add_argument("--probe", action="store_true")
    args = parser.parse_args(argv)
    mode = os.environ.get("ECHOMASK_FAKE_MODE", "ok")
    if os.environ.get("ECHOMASK_FAKE_ONCE") and os.path.exists(os.environ["ECHOMASK_FAKE_ONCE"]):
        mode = "ok"
    if args.probe:
        info = {"python": sys.version.split()[0], "protocol": 1, "torch": "0.0-fake", "cuda": False,
                "cuda_name": None, "mps": False}
        info.update(json.loads(os.environ.get("ECHOMASK_FAKE_PROBE", "{}")))
        emit("probe", **info)
        return 0
    stop = {"set": False}

    def on_term(signum, frame):
        if mode != "stubborn":
            stop["set"] = True

    signal.signal(signal.SIGTERM, on_term)
    if mode == "notorch":
        sys.stderr.write("Traceback (most recent call last):\n  File \"core/generation/inference.py\", line 1\n"
                         "ModuleNotFoundError: No module named 'torch'\n")
        return 1
    if mode == "garbage":
        print("this is not json")
        sys.stderr.write("Segmentation fault in libsomething\n")
        return 1
    time.sleep(float(os.environ.get("ECHOMASK_FAKE_STARTUP", "0")))
    steps = int(os.environ.get("ECHOMASK_FAKE_STEPS", "5"))
    delay = float(os.environ.get("ECHOMASK_FAKE_DELAY", "0.02"))
    if args.serve:
        return serve_fake(mode, steps, delay, args.idle_timeout)
    with open(args.request) as f:
        request = json.load(f)
    record_request(request)
    emit("started", pid=os.getpid(), protocol=1)
    if mode == "hang":
        while True:
            time.sleep(0.05)
    if mode == "fail":
        emit("error", message="The speech file is silent: there is nothing to animate.", kind="AudioError")
        return 2
    try:
        done = run(request, mode, steps, delay, stop)
    except EchoMaskError as err:   # the real worker's refusals (silence, a known take that does not fit)
        emit("error", message=str(err), kind=type(err).__name__)
        return 2
    except (ValueError, KeyError) as exc:
        emit("error", message=f"Fake worker: {exc}", kind="AudioError")
        return 2
    if not done:
        emit("cancelled", message="Generation cancelled.")
        return 130
    emit("done", **done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
