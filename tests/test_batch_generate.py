"""Batch generation (core.jobs.batch_generate): shards equal one run byte for byte, per-file seeds from the
file's content, a killed batch resumes without redoing finished files, one bad file never stops the
batch, the cancel hook, Blender outputs only when asked. Tiny random-weight bundle + fake features."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, requires_torch
from model_helpers import fake_features, one_thread, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return str(tiny_bundle(tmp_path_factory.mktemp("w") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """20 short speech-like files of different lengths, and a list file naming them."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(3)
    names = []
    for k in range(20):
        n = int(rng.uniform(1.0, 2.6) * 16000)
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 3) * np.arange(n) / 16000)
        name = f"clip_{k:02d}.wav"
        sf.write(folder / name, (0.1 * env * rng.standard_normal(n)).astype(np.float32), 16000)
        names.append(name)
    (folder / "list.txt").write_text("# speech to animate\n" + "\n".join(names) + "\n")
    return folder


def _run(inputs, out, bundle, **kw):
    from echomask.core.jobs.batch_generate import generate_batch

    kw.setdefault("temperature", 0.8)   # sampling: the per-file seeds matter
    return generate_batch(inputs, out, model=bundle, device="cpu", feature_fn=fake_features, progress=False,
                          log=lambda *a: None, steps=1, **kw)


def _outputs(folder):
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(folder).iterdir())
            if p.suffix in (".npz", ".json") and not p.name.startswith("batch_report")}


def test_two_shards_equal_one_run_byte_for_byte(speech, bundle, tmp_path, monkeypatch):
    from echomask.core.generation import inference
    from echomask.core.model import checkpoint
    from echomask.core.jobs.batch_generate import file_hash, file_seed
    from echomask.core.motion.take import load_take

    loads = []
    real_load = checkpoint.load_model
    monkeypatch.setattr(checkpoint, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(inference, "_MODEL_CACHE", {})
    one = _run([str(speech / "list.txt")], tmp_path / "one", bundle, seed=5)
    assert len(one.generated) == 20 and not one.failed and not one.skipped
    assert len(loads) == 1   # the model is loaded once for the whole batch
    s0 = _run([str(speech / "list.txt")], tmp_path / "shards", bundle, seed=5, shard="0/2")
    s1 = _run([str(speech / "list.txt")], tmp_path / "shards", bundle, seed=5, shard=(1, 2))
    assert len(s0.generated) == len(s1.generated) == 10 and not set(s0.generated) & set(s1.generated)
    a, b = _outputs(tmp_path / "one"), _outputs(tmp_path / "shards")
    assert len(a) == 40 and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    # Seeds come from the file's content, not its position: a reversed list of the folder gives the same.
    (tmp_path / "rev.txt").write_text("\n".join(str(speech / f"clip_{k:02d}.wav") for k in reversed(range(20))))
    rev = _run([str(tmp_path / "rev.txt")], tmp_path / "rev", bundle, seed=5, shard="1/3")
    for clip in rev.generated:
        assert a[f"{clip}.npz"] == (tmp_path / "rev" / f"{clip}.npz").read_bytes()
    rec = json.loads(a["clip_03.json"])
    assert rec["seed"] == file_seed(5, file_hash(str(speech / "clip_03.wav"))) and rec["frames"] > 0
    seeds = {json.loads(v)["seed"] for k, v in a.items() if k.endswith(".json")}
    assert len(seeds) == 20
    take = load_take(tmp_path / "one" / "clip_03.npz")
    assert take.num_frames == rec["frames"]
    # another base seed changes sampled takes; the old outputs are not "done" for it
    other = _run([str(speech / "clip_03.wav")], tmp_path / "one", bundle, seed=6)
    assert other.generated == ["clip_03"] and (tmp_path / "one" / "clip_03.npz").read_bytes() != a["clip_03.npz"]
    report = json.loads((tmp_path / "shards" / "batch_report.shard-1-of-2.json").read_text())
    assert report["generated"] == s1.generated and report["failed"] == []


_CHILD = r"""
import sys, time
sys.path.insert(0, {tests!r})
import conftest
from model_helpers import fake_features
from echomask.core.jobs.batch_generate import generate_batch

def slow(audio, fps):
    time.sleep(0.4)
    return fake_features(audio, fps)

generate_batch([{inputs!r}], {out!r}, model={bundle!r}, device="cpu", feature_fn=slow, progress=False,
               temperature=0.8, seed=5, steps=1)
"""


def test_killed_batch_resumes_without_redoing_finished_files(speech, bundle, tmp_path):
    out = tmp_path / "out"
    code = _CHILD.format(tests=str(ROOT / "tests"), inputs=str(speech / "list.txt"), out=str(out), bundle=bundle)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", code], cwd=str(ROOT), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("clip_*.json"))) < 4:
        if child.poll() is not None:
            pytest.fail("the batch ended before it was killed: " + child.stdout.read().decode()[-2000:])
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    done = sorted(p.stem for p in out.glob("clip_*.json"))
    assert 4 <= len(done) < 20
    # Only complete files under final names: every finished clip has its take, no take lacks its record
    # except possibly the one being moved into place; nothing partial under a final name.
    from echomask.core.motion.take import load_take

    for clip in done:
        assert load_take(out / f"{clip}.npz").num_frames > 0
    assert not [p for p in out.iterdir() if ".partial" in p.name or p.name.startswith(".tmp-")]
    stamps = {c: (out / f"{c}.npz").stat().st_mtime_ns for c in done}
    res = _run([str(speech / "list.txt")], out, bundle, seed=5)
    assert sorted(res.skipped) == done and len(res.generated) == 20 - len(done) and not res.failed
    assert all((out / f"{c}.npz").stat().st_mtime_ns == t for c, t in stamps.items())
    assert not [p for p in out.iterdir() if p.name.startswith(".batch-")]   # the killed run's temp folder is gone
    # and the result equals an uninterrupted run
    ref = _run([str(speech / "list.txt")], tmp_path / "ref", bundle, seed=5)
    assert len(ref.generated) == 20
    a, b = _outputs(tmp_path / "ref"), _outputs(out)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_bad_files_are_reported_and_the_batch_goes_on(speech, bundle, tmp_path):
    import soundfile as sf

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    (bad / "empty.wav").write_bytes(b"")
    sf.write(bad / "tiny.wav", np.zeros(800, np.float32), 16000)           # 50 ms: too short
    sf.write(bad / "clip_01.flac", np.zeros(16000, np.float32), 16000)      # same clip id as a good file
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join([str(speech / "clip_01.wav"), str(speech / "clip_02.wav"), "missing.wav",
                              str(bad / "corrupt.wav"), str(bad / "empty.wav"), str(bad / "tiny.wav"),
                              str(bad / "clip_01.flac"), str(lst)]))
    res = _run([str(lst)], tmp_path / "out", bundle)
    assert sorted(res.generated) == ["clip_01", "clip_02"]
    why = {os.path.basename(p): r for _, p, r in res.failed}
    assert "not found" in why["missing.wav"]
    assert "damaged" in why["corrupt.wav"] or "Cannot read" in why["corrupt.wav"]
    assert "empty" in why["empty.wav"]
    assert "ms long" in why["tiny.wav"]
    assert "same clip id" in why["clip_01.flac"]
    assert "not a speech file" in why["list.txt"]
    report = json.loads((tmp_path / "out" / "batch_report.json").read_text())
    assert len(report["failed"]) == 6 and report["generated"] == res.generated
    assert not list((tmp_path / "out").glob("corrupt*")) and not list((tmp_path / "out").glob(".batch-*"))


def test_cancel_stops_cleanly_and_the_next_run_resumes(speech, bundle, tmp_path):
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return len(list((tmp_path / "out").glob("clip_*.json"))) >= 3

    res = _run([str(speech)], tmp_path / "out", bundle, cancel=cancel)
    assert res.cancelled and len(res.generated) == 3 and calls["n"] > 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("batch_report")) == sorted(
        [f"{c}.npz" for c in res.generated] + [f"{c}.json" for c in res.generated])
    again = _run([str(speech)], tmp_path / "out", bundle)
    assert sorted(again.skipped) == sorted(res.generated) and len(again.generated) == 17


def test_blend_and_fbx_only_when_asked(speech, bundle, tmp_path, monkeypatch):
    from echomask.core.jobs import blender_bridge

    asked = []

    def fake_blender(task, **kw):
        asked.append(kw)
        for key in ("blend", "fbx"):
            if kw.get(key):
                pathlib.Path(kw[key]).write_bytes(b"scene")
        return {}

    monkeypatch.setattr(blender_bridge, "run_blender_task", fake_blender)
    files = [str(speech / "clip_04.wav"), str(speech / "clip_05.wav")]
    res = _run(files, tmp_path / "out", bundle, fbx=True)
    assert len(res.generated) == 2 and all(a["blend"] is None for a in asked)
    assert sorted(p.name for p in (tmp_path / "out").glob("clip_04.*")) == ["clip_04.fbx", "clip_04.json", "clip_04.npz"]
    # asking for .blend too: not done yet; a Blender that writes nothing fails the file, leaves no output
    monkeypatch.setattr(blender_bridge, "run_blender_task", lambda task, **kw: {})
    res = _run(files, tmp_path / "out", bundle, fbx=True, blend=True)
    assert not res.generated and len(res.failed) == 2 and "did not write" in res.failed[0][2]
    assert not list((tmp_path / "out").glob("*.blend"))


def test_command_line(speech, bundle, tmp_path):
    """The CLI with the built-in speech features: summary, exit status 1 with a failure, shard errors."""
    out = tmp_path / "out"
    (tmp_path / "list.txt").write_text(f"{speech / 'clip_07.wav'}\nnot_there.wav\n")
    cmd = [sys.executable, "-m", "core", "generate-batch", str(tmp_path / "list.txt"), "-o", str(out),
           "--weights", bundle, "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 generated, 0 already done, 1 failed" in proc.stdout and "not_there.wav" in proc.stdout
    assert (out / "clip_07.npz").is_file()
    proc = subprocess.run(cmd + ["--shard", "2/2"], cwd=str(ROOT), capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "numbered 0 to N-1" in proc.stderr


def test_builtin_speech_features_depend_on_the_clip_alone(speech):
    """Shards see different clips before a given one: the built-in features (phone recogniser included)
    of a clip must not depend on what the process computed earlier."""
    from echomask.core.speech.audio import load_speech
    from echomask.core.speech import compute_speech_features

    a, b = load_speech(speech / "clip_08.wav"), load_speech(speech / "clip_09.wav")
    first = compute_speech_features(b)
    compute_speech_features(a)
    again = compute_speech_features(b)
    assert np.array_equal(first.high, again.high) and np.array_equal(first.low, again.low)
    assert first.phones == again.phones
