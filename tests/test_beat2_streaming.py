"""BEAT2's layout as a data set (official split, speakers), the on-disk feature store and the streamed
windows: same windows and batches as the in-memory path, bad files reported one by one while training
goes on, nothing half-written, torchrun ranks sharing the preparation. Synthetic BEAT2-layout folders
only (BEAT2 itself is never copied into the repository)."""
import os
import pathlib
import threading

import numpy as np
import pytest

from conftest import requires_torch
from model_helpers import fake_feature_fn_path, one_thread, tiny_bundle

pytestmark = requires_torch

_threads = pytest.fixture(scope="module", autouse=True)(one_thread)


def _take(frames, seed, fps=30):
    from echomask.core.motion.take import Take

    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 30.0
    poses = (0.15 * np.sin(2 * np.pi * rng.uniform(0.2, 1.5, (1, 165)) * t + rng.uniform(0, 6, (1, 165))))
    trans = np.zeros((frames, 3), np.float32)
    trans[:, 1] = 1.3
    trans[:, 0] = 0.1 * np.sin(t[:, 0])
    expr = 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2, (1, 100)) * t)
    return Take(poses=poses.astype(np.float32), trans=trans, expressions=expr.astype(np.float32), fps=float(fps))


def _wav(path, seconds, seed):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * np.arange(n) / 16000)
    sf.write(path, (0.1 * env * rng.standard_normal(n)).astype(np.float32), 16000)


def beat2_folder(root, takes, split_rows, wav=True):
    """root/beat_english_v2.0.0 with smplxflame_30/, wave16k/ and train_test_split.csv.
    takes: {id: frames}; split_rows: [(id, type)]."""
    from echomask.core.motion.take import save_take

    base = pathlib.Path(root) / "beat_english_v2.0.0"
    (base / "smplxflame_30").mkdir(parents=True)
    (base / "wave16k").mkdir()
    for k, (cid, frames) in enumerate(sorted(takes.items())):
        save_take(_take(frames, k), base / "smplxflame_30" / f"{cid}.npz")
        if wav:
            _wav(base / "wave16k" / f"{cid}.wav", frames / 30.0, k)
    (base / "train_test_split.csv").write_text("id,type\n" + "".join(f"{c},{t}\n" for c, t in split_rows))
    return base


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from echomask.core.model.checkpoint import load_model

    root = tmp_path_factory.mktemp("tok")
    path = root / "tok.safetensors"
    load_model(tiny_bundle(root / "bundle.safetensors")).tokenizers.save(path)
    return str(path)


def _no_partials(folder):
    return [p for p in pathlib.Path(folder).rglob("*") if p.name.startswith(".tmp-") or ".partial" in p.name]


def test_split_manifest_speakers_types_and_absent_takes(tmp_path):
    from echomask.core.training.beat2 import parse_speakers
    from echomask.core.training.beat2 import resolve_manifest
    from echomask.core.errors import EchoMaskError

    base = beat2_folder(tmp_path, {"2_scott_0_1_1": 100, "2_scott_0_2_2": 100, "2_scott_0_3_3": 100,
                                   "2_scott_0_4_4": 100, "4_lawrence_0_1_1": 100, "2_scott_0_7_7": 100},
                        [("2_scott_0_1_1", "train"), ("2_scott_0_2_2", "additional"), ("2_scott_0_3_3", "val"),
                         ("2_scott_0_4_4", "test"), ("4_lawrence_0_1_1", "train"), ("2_scott_0_9_9", "train"),
                         ("2_scott_0_5_5", "holdout")])
    os.unlink(base / "wave16k" / "2_scott_0_1_1.wav")
    man = resolve_manifest(str(base), speakers="2")
    names = {pathlib.Path(e.npz).stem: e.split for e in man}
    assert names == {"2_scott_0_1_1": "train", "2_scott_0_3_3": "val"}   # no speaker 4, no additional, no test
    assert [pathlib.Path(e.npz).stem for e in man.test] == ["2_scott_0_4_4"]
    assert man.stream and all(e.holdout == 0.0 for e in man)
    text = "\n".join(str(p) for p in man.problems)
    assert str(base / "smplxflame_30" / "2_scott_0_9_9.npz") in text and "does not exist" in text
    assert "train_test_split.csv:8" in text and "holdout" in text     # the unknown split type, by line
    assert any(p.stage == "speech" and p.path.endswith("2_scott_0_1_1.npz") for p in man.problems)
    assert any("not in train_test_split.csv" in n for n in man.notes)  # 2_scott_0_7_7 is unlisted
    both = resolve_manifest(str(base), speakers="all", additional=True)
    assert {pathlib.Path(e.npz).stem for e in both} == {"2_scott_0_1_1", "2_scott_0_2_2", "2_scott_0_3_3",
                                                          "4_lawrence_0_1_1"}
    assert parse_speakers("1-3,7") == {1, 2, 3, 7} and parse_speakers("all") is None
    with pytest.raises(EchoMaskError, match="speaker"):
        resolve_manifest(str(base), speakers="9")
    with pytest.raises(EchoMaskError, match="not understood"):
        parse_speakers("scott")
    # any folder of takes + a split file given on the command line
    plain = tmp_path / "mine"
    plain.mkdir()
    for f in ("2_scott_0_1_1", "2_scott_0_3_3"):
        os.link(base / "smplxflame_30" / f"{f}.npz", plain / f"{f}.npz")
    (tmp_path / "split.csv").write_text("type,id,extra\ntrain,2_scott_0_1_1,x\nval,2_scott_0_3_3,y\n")
    own = resolve_manifest(str(plain), split_file=str(tmp_path / "split.csv"))
    assert [e.split for e in own] == ["train", "val"]


def test_streamed_windows_equal_memory_and_are_built_once(tmp_path, monkeypatch):
    from echomask.core.training import datastore
    from echomask.core.training.data import MotionWindows, folder_manifest
    from echomask.core.model.config import get_config
    from echomask.core.training.streaming import DataOptions, tokenizer_windows

    data = tmp_path / "data"
    data.mkdir()
    from echomask.core.motion.take import save_take

    for k, n in enumerate((450, 520)):
        save_take(_take(n, k), data / f"take{k}.npz")
    entries = folder_manifest(data)
    cfg = get_config("tiny")
    mem_train = MotionWindows(entries, "train", cfg.window, cfg.stride)
    mem_val = MotionWindows(entries, "val", cfg.window, cfg.stride, takes=mem_train.takes)
    opts = DataOptions(stream=True, cache_dir=str(tmp_path / "cache"))
    train, val = tokenizer_windows(entries, cfg, options=opts, log=lambda *a: None)
    assert len(train) == len(mem_train) > 0 and len(val) == len(mem_val) > 0
    assert not hasattr(train, "features") and not hasattr(train, "takes")   # nothing held in memory
    idx = np.random.default_rng(0).permutation(len(train))[:20]
    a, b = mem_train.batch(idx), train.batch(idx)
    for p in a["parts"]:
        assert np.array_equal(a["parts"][p], b["parts"][p]), p
    for k in ("weight", "take_id", "start"):
        assert np.array_equal(a[k], b[k])
    assert np.array_equal(mem_val.batch(range(len(val)))["parts"]["lower"], val.batch(range(len(val)))["parts"]["lower"])
    for i in (0, len(train) - 1):
        assert np.allclose(mem_train.source_frames(i), train.source_frames(i))
    sa, sb = mem_train.compute_stats(), train.compute_stats()
    for p in sa.mean:
        assert np.allclose(sa.mean[p], sb.mean[p], atol=1e-5) and np.allclose(sa.std[p], sb.std[p], atol=1e-5)
    # a second run reads the store: nothing is recomputed
    monkeypatch.setattr("echomask.core.motion.motion_repr.take_to_parts", lambda *a: pytest.fail("recomputed"))
    again, _ = tokenizer_windows(entries, cfg, options=opts, log=lambda *a: None)
    assert np.array_equal(again.batch(idx)["parts"]["hands"], b["parts"]["hands"])
    assert isinstance(datastore.FeatureStore(opts.cache_dir).motion(train.keys[0]), np.memmap)
    assert not _no_partials(opts.cache_dir)
    with pytest.raises(Exception, match="inside the data folder"):
        tokenizer_windows(_manifest(entries, str(data)), cfg,
                          options=DataOptions(stream=True, cache_dir=str(data / "cache")), log=lambda *a: None)


def _manifest(entries, source):
    from echomask.core.training.beat2 import Manifest

    return Manifest(entries, source=source, stream=True)


def test_generator_data_streams_like_memory(tmp_path, tok):
    import torch

    from echomask.core.training.data import folder_manifest
    from echomask.core.model.config import get_config
    from echomask.core.model.tokenizer import TokenizerSet
    from echomask.core.training.streaming import DataOptions, StreamingGeneratorData, generator_data
    from model_helpers import synthetic_takes

    data = tmp_path / "data"
    data.mkdir()
    synthetic_takes(data, n_takes=2, frames=450)
    entries = folder_manifest(data)
    cfg = get_config("tiny")
    tokenizers = TokenizerSet.load(tok, expected_config=cfg).eval()
    quiet = lambda *a: None
    mem = generator_data(entries, tokenizers, tok, cfg, fake_feature_fn_path, None, log=quiet)
    opts = DataOptions(stream=True, cache_dir=str(tmp_path / "cache"))
    st = generator_data(entries, tokenizers, tok, cfg, fake_feature_fn_path, opts, log=quiet)
    assert isinstance(st[0], StreamingGeneratorData)
    for m, s in zip(mem, st):
        assert len(m) == len(s) > 0
        idx = np.arange(len(m))[::3]
        bm, bs = m.batch(idx, "cpu"), s.batch(idx, "cpu")
        for k in ("motion", "low", "high", "weight"):
            assert torch.equal(bm[k], bs[k]), k
        for p in bm["codes"]:
            assert bs["codes"][p].dtype == torch.long
            assert (bm["codes"][p] == bs["codes"][p]).float().mean() > 0.99, p
            assert torch.equal(bm["part_mask"][p], bs["part_mask"][p])
    for a, b in zip(mem[0].motion_stats(), st[0].motion_stats()):
        assert np.allclose(a, b, atol=1e-4)
    for a, b in zip(mem[0].speech_stats(), st[0].speech_stats()):
        assert np.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert np.asarray(st[0].codes["face"][..., 0]).shape == (len(st[0]), cfg.tokens_per_window)


def _bad_folder(root):
    """Good takes + one of each kind of bad input."""
    base = beat2_folder(root, {"2_a_0_1_1": 200, "2_a_0_2_2": 150, "2_a_0_3_3": 130, "2_a_0_4_4": 40,
                               "2_a_0_5_5": 200, "2_a_0_6_6": 200, "2_a_0_7_7": 200, "2_a_0_8_8": 200},
                        [("2_a_0_1_1", "train"), ("2_a_0_2_2", "train"), ("2_a_0_3_3", "val"), ("2_a_0_4_4", "train"),
                         ("2_a_0_5_5", "train"), ("2_a_0_6_6", "train"), ("2_a_0_7_7", "train"),
                         ("2_a_0_8_8", "train"), ("2_a_0_9_9", "train"), ("2_a_0_10_10", "train")])
    from echomask.core.motion.take import save_take

    m, w = base / "smplxflame_30", base / "wave16k"
    (m / "2_a_0_5_5.npz").write_bytes(b"PK\x03\x04 this is not a zip file")           # corrupt npz
    take = _take(200, 6)
    with np.load(m / "2_a_0_6_6.npz") as z:
        arrays = dict(z)
    arrays["poses"][17, 3] = np.nan                                                    # NaNs
    np.savez(m / "2_a_0_6_6.npz", **arrays)
    save_take(_take(400, 7, fps=60), m / "2_a_0_7_7.npz")                             # 60 fps
    (w / "2_a_0_8_8.wav").write_bytes(b"RIFF1234WAVEjunk")                             # unreadable speech
    save_take(take, m / "2_a_0_10_10.npz")                                             # no speech at all
    return base


def test_bad_inputs_named_one_by_one_and_training_goes_on(tmp_path):
    from echomask.core.training.beat2 import resolve_manifest
    from echomask.core.training.datastore import FeatureStore
    from echomask.core.errors import EchoMaskError
    from echomask.core.training.streaming import prepare, report

    base = _bad_folder(tmp_path)
    man = resolve_manifest(str(base))
    store = FeatureStore(tmp_path / "cache")

    def speech_fn(wav, fps):
        from echomask.core.speech.audio import load_speech
        from model_helpers import fake_features

        return fake_features(load_speech(wav), fps)

    lines = []
    prep = prepare(man, store, 64, 30.0, speech_fn=speech_fn, speech_tag="fake", log=lines.append)
    report(prep, lines.append, "the generator")
    used = sorted(pathlib.Path(e.npz).stem for e in prep.entries)
    assert used == ["2_a_0_1_1", "2_a_0_2_2", "2_a_0_3_3"]
    text = "\n".join(lines)
    expect = {"2_a_0_4_4.npz": "shorter than one 64-frame window", "2_a_0_5_5.npz": "cannot be read",
              "2_a_0_6_6.npz": "NaN", "2_a_0_7_7.npz": "60 fps", "2_a_0_8_8.wav": "Cannot read speech",
              "2_a_0_9_9.npz": "does not exist", "2_a_0_10_10.npz": "no speech file"}
    for name, why in expect.items():
        line = [x for x in lines if name in x]
        assert line and why in line[0], (name, line)
    assert "3 take(s) used for the generator; 7 file(s) skipped" in text
    assert not _no_partials(store.root)
    # The tokenizers do not need speech: the takes without usable speech are used there.
    prep_t = prepare(man, store, 64, 30.0)
    assert sorted(pathlib.Path(e.npz).stem for e in prep_t.entries) == ["2_a_0_10_10", "2_a_0_1_1", "2_a_0_2_2",
                                                                        "2_a_0_3_3", "2_a_0_8_8"]
    # Nothing usable: one error listing every file.
    from echomask.core.training.beat2 import Manifest

    bad = Manifest([e for e in man if pathlib.Path(e.npz).stem in ("2_a_0_5_5", "2_a_0_6_6", "2_a_0_4_4")],
                   man.problems, stream=True)
    with pytest.raises(EchoMaskError) as err:
        report(prepare(bad, store, 64, 30.0), lambda *a: None, "the tokenizers")
    for name in ("2_a_0_4_4.npz", "2_a_0_5_5.npz", "2_a_0_6_6.npz", "2_a_0_9_9.npz"):
        assert name in str(err.value)


def test_ranks_share_the_preparation(tmp_path):
    """Two 'ranks' (threads) prepare one store together: each builds its share, both see the same result."""
    from echomask.core.training.beat2 import resolve_manifest
    from echomask.core.training.datastore import FeatureStore
    from echomask.core.training.streaming import prepare

    base = beat2_folder(tmp_path, {f"2_a_0_{k}_{k}": 100 + 10 * k for k in range(1, 6)},
                        [(f"2_a_0_{k}_{k}", "val" if k == 5 else "train") for k in range(1, 6)])
    man = resolve_manifest(str(base))
    built = {0: [], 1: []}
    results = {}

    def run(rank):
        store = FeatureStore(tmp_path / "cache", writer=f"rank{rank}")
        real = store.ensure_motion

        def spy(npz, variants_for):
            built[rank].append(pathlib.Path(npz).stem)
            return real(npz, variants_for)

        store.ensure_motion = spy
        results[rank] = prepare(man, store, 64, 30.0, speech_fn=fake_feature_fn_path, speech_tag="fake",
                                rank=rank, world=2, log=lambda *a: None)

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(built[0] + built[1]) == sorted(pathlib.Path(e.npz).stem for e in man)
    assert not set(built[0]) & set(built[1]) and built[0] and built[1]
    a, b = results[0], results[1]
    assert [e.npz for e in a.entries] == [e.npz for e in b.entries] and len(a.entries) == 5
    assert [r["key"] for r in a.records] == [r["key"] for r in b.records] and a.speech == b.speech


def test_train_both_stages_on_a_beat2_folder(tmp_path, tok):
    """train-tokenizers and train on a BEAT2 folder: official split used, bad file skipped, run completes."""
    import json

    from echomask.core.training.streaming import DataOptions
    from echomask.core.training.train import TrainConfig, train_generator
    from echomask.core.training.train_tokenizers import TokenizerTrainOptions, train_tokenizers

    base = beat2_folder(tmp_path, {"2_a_0_1_1": 260, "2_a_0_2_2": 200, "2_a_0_3_3": 150, "3_b_0_1_1": 200},
                        [("2_a_0_1_1", "train"), ("2_a_0_2_2", "train"), ("2_a_0_3_3", "val"),
                         ("3_b_0_1_1", "train"), ("2_a_0_4_4", "train")])
    opts = DataOptions(speakers="2", cache_dir=str(tmp_path / "cache"))
    lines = []
    res = train_tokenizers(opts.manifest(str(base)), "tiny", str(tmp_path / "tok.safetensors"),
                           TokenizerTrainOptions(steps=2, batch_size=4, val_every=2, device="cpu"), progress=False,
                           data_options=opts, log=lines.append)
    assert res["windows"] == 5                       # the whole 150-frame val take: (150 - 64) // 20 + 1
    assert any("2_a_0_4_4.npz" in x and "does not exist" in x for x in lines)
    tcfg = TrainConfig(steps=1, batch_size=4, val_every=1, ckpt_every=1, warmup=1)
    out = train_generator(str(base), "tiny", tok, str(tmp_path / "run"), tcfg, device="cpu",
                          feature_fn=fake_feature_fn_path, log=lines.append, progress_bar=False, data_options=opts)
    assert out["steps"] == 1
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    val = [x for x in log if x["split"] == "val"]
    assert val and val[-1]["val_windows"] == 5
    assert any("streamed from" in x and "train:" in x for x in lines)


def test_torchrun_two_ranks_prepare_and_train_like_one(tmp_path):
    """2 gloo processes on a fresh data cache (each rank prepares its share of the takes and tokens) take
    the same step as one process on its own fresh cache."""
    import subprocess
    import sys

    from conftest import ROOT
    from echomask.core.model.checkpoint import load_model
    from echomask.core.training.streaming import DataOptions
    from echomask.core.training.train import TrainConfig, train_generator
    from model_helpers import data_fitted_tiny_bundle, synthetic_takes

    base = beat2_folder(tmp_path, {"2_a_0_1_1": 300, "2_a_0_2_2": 260, "2_a_0_3_3": 150},
                        [("2_a_0_1_1", "train"), ("2_a_0_2_2", "train"), ("2_a_0_3_3", "val")])
    plain = tmp_path / "plain"
    plain.mkdir()
    synthetic_takes(plain, n_takes=1, frames=300)
    tok = tmp_path / "tok.safetensors"
    load_model(data_fitted_tiny_bundle(tmp_path / "b.safetensors", plain)).tokenizers.save(tok)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29700 + os.getpid() % 200), "-m", "core", "train", "--manifest", str(base), "--config", "tiny",
           "--tokenizers", str(tok), "--out", str(tmp_path / "two"), "--steps", "1", "--batch-size", "4",
           "--val-every", "1000", "--no-progress", "--threads", "1", "--device", "cpu",
           "--data-cache", str(tmp_path / "cache2")]
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes (gloo)" in proc.stdout + proc.stderr and "streamed from" in proc.stdout + proc.stderr
    assert len(list((tmp_path / "cache2" / "hashes").glob("rank*.json"))) == 2   # both ranks built a share
    train_generator(str(base), "tiny", str(tok), str(tmp_path / "one"), TrainConfig(steps=1, batch_size=4, val_every=1000),
                    device="cpu", log=lambda *a: None, progress_bar=False,
                    data_options=DataOptions(cache_dir=str(tmp_path / "cache1")))
    a = load_model(tmp_path / "one" / "model.safetensors").generator.state_dict()
    b = load_model(tmp_path / "two" / "model.safetensors").generator.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a if a[k].dtype.is_floating_point) <= 1e-6


def test_command_line_options_and_prepare_data(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    from echomask.core.jobs.cli import build_parser
    from echomask.core.training.streaming import DataOptions

    for cmd in ("train-tokenizers", "train"):
        argv = [cmd, "--manifest", "/d", "--out", "o", "--speakers", "2", "--split-file", "s.csv", "--additional",
                "--stream", "--data-cache", "/c"] + (["--tokenizers", "t"] if cmd == "train" else [])
        opts = DataOptions.from_args(build_parser().parse_args(argv))
        assert opts == DataOptions("2", "s.csv", True, True, "/c")
    base = beat2_folder(tmp_path, {"2_a_0_1_1": 200, "2_a_0_2_2": 150, "2_a_0_3_3": 100, "2_a_0_4_4": 30},
                        [("2_a_0_1_1", "train"), ("2_a_0_2_2", "val"), ("2_a_0_3_3", "test"), ("2_a_0_4_4", "train")])
    run = lambda *extra: subprocess.run([sys.executable, "-m", "core", "prepare-data", str(base), "--no-progress",
                                         "--config", "tiny", "--data-cache", str(tmp_path / "cache"), *extra],
                                        cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    listed = run("--list", "test")
    assert listed.returncode == 0 and listed.stdout.split() == [str(base / "wave16k" / "2_a_0_3_3.wav")]
    shard = run("--no-speech", "--shard", "1/2")
    assert shard.returncode == 0 and "(shard 1/2)" in shard.stdout
    full = run("--no-speech")
    assert full.returncode == 0, full.stderr
    assert "2 take(s) ready" in full.stdout and "1 training, 1 validation; 1 test takes" in full.stdout
    assert "train: 42 windows" in full.stdout and "val: 5 windows" in full.stdout
    assert "2_a_0_4_4.npz: only 30 frames" in full.stderr


def test_shared_data_streams_like_memory(tmp_path):
    """The real shared data (BEAT2 speaker-2 takes + model outputs): --stream gives the in-memory windows."""
    from conftest import shared_path

    shared_path("beat2_samples", "smplxflame_30")
    from echomask.core.training.data import MotionWindows
    from echomask.core.model.config import get_config
    from echomask.core.training.streaming import DataOptions, tokenizer_windows

    opts = DataOptions(stream=True, cache_dir=str(tmp_path / "cache"))
    entries = opts.manifest("shared")
    cfg = get_config("small")
    train, val = tokenizer_windows(entries, cfg, options=opts, log=lambda *a: None)
    mem = MotionWindows(entries, "train", cfg.window, cfg.stride)
    assert len(train) == len(mem) and len(val) == len(MotionWindows(entries, "val", takes=mem.takes))
    idx = np.random.default_rng(1).choice(len(train), 64, replace=False)
    a, b = mem.batch(idx), train.batch(idx)
    assert all(np.array_equal(a["parts"][p], b["parts"][p]) for p in a["parts"])
    assert all(np.array_equal(a["part_mask"][p], b["part_mask"][p]) for p in a["part_mask"])  # CHGS masks
    assert np.array_equal(a["weight"], b["weight"])
