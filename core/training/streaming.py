"""Training data read from the on-disk store (core.training.datastore) instead of memory.

`StreamingWindows` has the interface of core.training.data.MotionWindows and `StreamingGeneratorData` that of
core.training.train.GeneratorData, with the same windows in the same order (so the same seed draws the same
batches), but every take's augmented features, speech features and tokens live in memory-mapped files
of the store; a batch reads only its own 64-frame windows. Memory then holds the window index (8 bytes a
window) and what the operating system caches, not the data set.

Preparation (`prepare`) reads every take once: bad input (an unreadable or corrupt .npz, NaNs, a frame
rate other than the model's, a take shorter than a window, speech that is missing, unreadable or much
shorter than its motion) becomes one message per file naming it, and training goes on with the rest;
with nothing usable it stops with the list. Under torchrun every rank prepares its share of the takes
(round robin) and waits for the others' files; ranks never write the same file at once.

The in-memory path stays the default for `--manifest shared` and plain folders; a folder with a split
file (BEAT2's layout, core.training.beat2) streams, and `--stream` streams any manifest.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile

import numpy as np

from .beat2 import DataProblem
from .data import TakeEntry, Variant, WindowRef, variant_plan
from .datastore import PART_SLICES, FeatureStore, combine, mean_std, wait_for
from ..errors import EchoMaskError
from ..motion.skeleton import PARTS

SPEECH_SHORTFALL_S = 1.0   # speech may end at most this much before its motion


def default_store_dir() -> str:
    base = os.environ.get("ECHOMASK_CACHE") or os.path.join(tempfile.gettempdir(), "echomask_cache")
    return os.path.join(base, "windows")


@dataclasses.dataclass
class DataOptions:
    """How the command line chose the training data (core.jobs.cli: --speakers, --split-file, --additional,
    --stream, --data-cache)."""
    speakers: str | None = None
    split_file: str | None = None
    additional: bool = False
    stream: bool = False
    cache_dir: str | None = None
    model_output_weight: float | None = None   # 'shared': loss weight of published models' outputs (None = 0.3)

    @classmethod
    def from_args(cls, args) -> "DataOptions":
        return cls(getattr(args, "speakers", None), getattr(args, "split_file", None),
                   bool(getattr(args, "additional", False)), bool(getattr(args, "stream", False)),
                   getattr(args, "data_cache", None), getattr(args, "model_output_weight", None))

    def manifest(self, spec: str):
        from .beat2 import resolve_manifest

        return resolve_manifest(spec, self.speakers, self.split_file, self.additional, self.stream,
                                model_output_weight=self.model_output_weight)

    def store_dir(self) -> str:
        return self.cache_dir or default_store_dir()


def uses_store(entries, options: DataOptions | None) -> bool:
    return bool((options is not None and options.stream) or getattr(entries, "stream", False))


# ----------------------------------------------------------------------------------------------------------
# Preparation

@dataclasses.dataclass
class Prepared:
    entries: list[TakeEntry]         # the usable takes
    records: list[dict]              # their motion records (frames, fps, key)
    speech: list[str | None]         # their speech keys (None: no speech needed)
    problems: list[DataProblem]


def _variants_for(entry: TakeEntry, fps: float, window: int, mirror: bool, stretch):
    def needed(rec: dict):
        if rec.get("status") != "ok" or abs(float(rec["fps"]) - fps) > 1e-6:
            return []
        return sorted({(m, s) for split in ("train", "val")
                       for m, s, _, _ in variant_plan(entry, rec["frames"], split, window, mirror, stretch)})
    return needed


def prepare(entries, store: FeatureStore, window: int = 64, fps: float = 30.0, mirror: bool = True,
            stretch: tuple[float, ...] = (0.9, 1.1), speech_fn=None, speech_tag: str = "", rank: int = 0,
            world: int = 1, log=print, progress: bool = False, wait: bool = True) -> Prepared:
    """Store every take's variants (and, with speech_fn, its speech features); sort out the unusable ones.
    speech_fn(wav, fps) -> (low, high); speech_tag names it in the store's keys. With several processes
    (rank of world) each builds every world-th take, then waits for the others' (wait=False: only its own
    takes are built and judged)."""
    need_speech = speech_fn is not None
    problems = [p for p in getattr(entries, "problems", []) if need_speech or p.stage != "speech"]
    reported = {p.path for p in problems}
    cands = []
    for e in entries:
        if need_speech and not e.wav:
            if e.npz not in reported:
                problems.append(DataProblem(e.npz, "no speech file (.wav) next to it or in wave16k/; the generator "
                                            "learns speech -> motion and needs it", stage="speech"))
            continue
        gone = [p for p in (e.npz, *([e.wav] if need_speech else [])) if not os.path.isfile(p)]
        if gone:
            problems.append(DataProblem(gone[0], "the file does not exist (moved or deleted after the listing?)"))
            continue
        cands.append(e)

    def speech_wanted(e, rec):
        return need_speech and bool(_variants_for(e, fps, window, mirror, stretch)(rec))

    done = {}
    mine = [i for i in range(len(cands)) if i % world == rank]
    bar = None
    if progress and rank == 0 and len(mine) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), desc="preparing data", unit="take", dynamic_ncols=True)
    for i in mine:
        e = cands[i]
        rec = store.ensure_motion(e.npz, _variants_for(e, fps, window, mirror, stretch))
        srec = store.ensure_speech(e.wav, fps, speech_fn, speech_tag) if speech_wanted(e, rec) else None
        done[i] = (rec, srec)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    store.hashes.save()

    def built_elsewhere(e):
        """Another rank's result for take e, once its files are all there (None until then)."""
        def check():
            keys = [store.take_key(e.npz, lookup_only=True)]
            if keys[0] is None:
                store.hashes.refresh()
                keys = [store.take_key(e.npz, lookup_only=True)]
            rec = None if keys[0] is None else store.motion_ready(keys[0], _variants_for(e, fps, window, mirror, stretch))
            if rec is None:
                return None
            if not speech_wanted(e, rec):
                return rec, None
            skey = store.speech_key(e.wav, fps, speech_tag, lookup_only=True)
            if skey is None:
                store.hashes.refresh()
                skey = store.speech_key(e.wav, fps, speech_tag, lookup_only=True)
            srec = None if skey is None else store.speech_record(skey)
            return None if srec is None else (rec, dict(srec, key=skey))
        return check

    usable, records, speech = [], [], []
    for i, e in enumerate(cands):
        if i not in done and not wait:
            continue
        rec, srec = done[i] if i in done else wait_for(built_elsewhere(e), e.npz, log)
        if rec["status"] != "ok":
            problems.append(DataProblem(e.npz, _strip_name(rec["reason"], e.npz)))
            continue
        if abs(float(rec["fps"]) - fps) > 1e-6:
            problems.append(DataProblem(e.npz, f"the motion is at {rec['fps']:g} fps; the model works at {fps:g} fps: "
                                        f"resample the take (core.motion.take.resample_take) or leave it out"))
            continue
        if not _variants_for(e, fps, window, mirror, stretch)(rec):
            problems.append(DataProblem(e.npz, f"only {rec['frames']} frames ({rec['frames'] / fps:.1f} s): shorter "
                                        f"than one {window}-frame window" + (" outside its held-out tail"
                                                                              if not e.split and e.holdout else "")))
            continue
        if need_speech:
            if srec["status"] != "ok":
                problems.append(DataProblem(e.wav, f"{srec['reason']} (its take {os.path.basename(e.npz)} is left out)",
                                            stage="speech"))
                continue
            short = (rec["frames"] - srec["frames"]) / fps
            if short > SPEECH_SHORTFALL_S:
                problems.append(DataProblem(e.wav, f"the speech lasts {srec['frames'] / fps:.1f} s but its motion "
                                            f"{rec['frames'] / fps:.1f} s: not the take's speech? (left out)",
                                            stage="speech"))
                continue
        usable.append(e)
        records.append(rec)
        speech.append(srec["key"] if srec else None)
    return Prepared(usable, records, speech, problems)


def _strip_name(reason: str, path: str) -> str:
    """core.motion.take's messages start with the file name, which DataProblem already shows."""
    head = os.path.basename(path) + ": "
    return reason[len(head):] if reason.startswith(head) else reason


def report(prep: Prepared, log=print, what: str = "training") -> None:
    """One line per problem, then a summary; EchoMaskError with the list when no take is usable."""
    for p in prep.problems:
        log(f"skipped {p}")
    if not any(e.split != "val" for e in prep.entries):
        listing = "\n  ".join(str(p) for p in prep.problems[:100]) or "(no takes were given)"
        more = f"\n  ... and {len(prep.problems) - 100} more" if len(prep.problems) > 100 else ""
        raise EchoMaskError(f"No usable take for {what}:\n  {listing}{more}")
    if prep.problems:
        log(f"{len(prep.entries)} take(s) used for {what}; {len(prep.problems)} file(s) skipped (listed above)")


# ----------------------------------------------------------------------------------------------------------
# Windows

class _WindowList:
    """windows[i] -> WindowRef, over the two index arrays (no Python object per window held)."""

    def __init__(self, var: np.ndarray, start: np.ndarray):
        self.var, self.start = var, start

    def __len__(self):
        return len(self.var)

    def __getitem__(self, i):
        return WindowRef(int(self.var[i]), int(self.start[i]))


class StreamingWindows:
    """MotionWindows over the store: the same windows, in the same order, read on demand."""

    def __init__(self, store: FeatureStore, prep: Prepared, split: str = "train", window: int = 64,
                 stride: int = 20, mirror: bool = True, stretch_factors: tuple[float, ...] = (0.9, 1.1)):
        if split not in ("train", "val"):
            raise ValueError("split must be 'train' or 'val'")
        self.store, self.split, self.window, self.stride = store, split, window, stride
        self.entries, self.records = list(prep.entries), list(prep.records)
        self.variants: list[Variant] = []
        self.keys: list[str] = []
        self.ranges: list[tuple[int, int]] = []
        self.starts: list[np.ndarray] = []
        for tid, (entry, rec) in enumerate(zip(self.entries, self.records)):
            for m, s, lo, hi in variant_plan(entry, rec["frames"], split, window, mirror, stretch_factors):
                starts = np.arange(lo, hi - window + 1, stride, dtype=np.int32)
                self.variants.append(Variant(tid, m, s))
                self.keys.append(store.variant_key(rec["key"], m, s))
                self.ranges.append((int(starts[0]), int(starts[-1]) + window))
                self.starts.append(starts)
        n_var = len(self.variants)
        var = [np.full(len(s), v, np.int32) for v, s in enumerate(self.starts)]
        self._var = np.concatenate(var) if var else np.zeros(0, np.int32)
        self._start = np.concatenate(self.starts) if n_var else np.zeros(0, np.int32)
        self.windows = _WindowList(self._var, self._start)

    def __len__(self) -> int:
        return len(self._var)

    def part_mask(self, variant: int) -> dict[str, bool]:
        masked = self.entries[self.variants[variant].take_id].masked_parts
        return {p: p not in masked for p in PARTS}

    def source_frames(self, i: int) -> np.ndarray:
        v, start = int(self._var[i]), int(self._start[i])
        return (start + np.arange(self.window)) / self.variants[v].stretch

    def window_features(self, i: int) -> np.ndarray:
        v, start = int(self._var[i]), int(self._start[i])
        return np.asarray(self.store.motion(self.keys[v])[start:start + self.window], np.float32)

    def __getitem__(self, i: int) -> dict:
        v, start = int(self._var[i]), int(self._start[i])
        var = self.variants[v]
        x = self.window_features(i)
        return {
            "parts": {p: np.ascontiguousarray(x[:, PART_SLICES[p]]) for p in PARTS},
            "part_mask": self.part_mask(v),
            "weight": np.float32(self.entries[var.take_id].weight),
            "take_id": var.take_id,
            "start": start,
            "source_start": np.float32(start / var.stretch),
            "mirrored": var.mirrored,
            "stretch": np.float32(var.stretch),
        }

    def batch(self, indices) -> dict:
        idx = np.asarray(indices, np.int64).reshape(-1)
        x = np.stack([self.window_features(int(i)) for i in idx]) if len(idx) else np.zeros((0, self.window, 425), np.float32)
        var = self._var[idx]
        masks = [self.part_mask(int(v)) for v in var]
        return {
            "parts": {p: np.ascontiguousarray(x[..., PART_SLICES[p]]) for p in PARTS},
            "part_mask": {p: np.array([m[p] for m in masks], bool) for p in PARTS},
            "weight": np.array([self.entries[self.variants[int(v)].take_id].weight for v in var], np.float32),
            "take_id": np.array([self.variants[int(v)].take_id for v in var]),
            "start": self._start[idx].astype(np.int64),
        }

    def compute_stats(self):
        """Per-part mean/std over the frames the windows cover (as MotionWindows.compute_stats), combined
        from per-variant moments (cached in the store); masked parts of a take are left out."""
        from ..motion.motion_repr import LOWER_CONTACTS, NormStats
        from ..motion.skeleton import PART_DIMS

        acc = {p: (0, np.zeros(PART_DIMS[p]), np.zeros(PART_DIMS[p])) for p in PARTS}
        for v, (key, (lo, hi)) in enumerate(zip(self.keys, self.ranges)):
            mask = self.part_mask(v)
            m = self.store.part_moments(key, lo, hi)
            for p in PARTS:
                if mask[p]:
                    acc[p] = combine(acc[p], m[p])
        stats = NormStats.identity()
        for p in PARTS:
            if acc[p][0] == 0:
                continue
            mean, std = mean_std(acc[p])
            std = np.maximum(std, NormStats.STD_FLOOR)
            if p == "lower":
                mean[LOWER_CONTACTS], std[LOWER_CONTACTS] = 0.0, 1.0
            stats.mean[p], stats.std[p] = mean.astype(np.float32), std.astype(np.float32)
        return stats

    def summary(self) -> str:
        frames = sum(self.records[v.take_id]["frames"] for v in self.variants if v.stretch == 1.0 and not v.mirrored)
        return (f"{self.split}: {len(self)} windows of {self.window} frames from {len(self.variants)} take "
                f"variants ({len({v.take_id for v in self.variants})} takes, {frames} source frames; streamed from "
                f"{self.store.root})")


class StreamingGeneratorData:
    """GeneratorData over the store: windows, their tokens (encoded once per variant by the frozen
    tokenizers, stored as int16 and memory-mapped) and speech features sampled per window."""

    def __init__(self, store: FeatureStore, prep: Prepared, split: str, tokenizers, tok_hash: str, config,
                 rank: int = 0, world: int = 1, log=print, mirror: bool = True, stretch=(0.9, 1.1)):
        import torch

        self.store = store
        self.ds = StreamingWindows(store, prep, split, config.window, config.stride, mirror, stretch)
        self.entries = self.ds.entries
        self.speech_keys = list(prep.speech)
        dev = next(iter(tokenizers.parameters())).device

        def encode(x):
            with torch.no_grad():
                out = []
                for p in PARTS:
                    t = torch.from_numpy(np.ascontiguousarray(x[..., PART_SLICES[p]])).to(dev)
                    out.append(tokenizers[p].encode(tokenizers.normalize(p, t)).cpu().numpy())
            return np.stack(out)

        self.codes = {}
        if len(self.ds):
            from .datastore import content_key, token_key

            paths = []
            for v, key in enumerate(self.ds.keys):
                if v % world == rank:
                    paths.append(store.ensure_tokens(key, self.ds.starts[v], config.window, tok_hash, encode))
                else:
                    paths.append(None)
            for v, key in enumerate(self.ds.keys):
                if paths[v] is None:
                    want = store.tokens_path(token_key(key, self.ds.starts[v], config.window, tok_hash))
                    paths[v] = wait_for(lambda w=want: w if w.is_file() else None, f"the tokens of {key}", log)
            want = store.tokens_path(content_key("tokenset", *[p.stem for p in paths]))
            if rank == 0:
                store.combine_tokens(paths)
            combined = wait_for(lambda: want if want.is_file() else None, "the token index", log)
            mm = store.tokens(combined)
            self.codes = {p: torch.from_numpy(mm[k]) for k, p in enumerate(PARTS)}
        log(self.ds.summary())

    def __len__(self):
        return len(self.ds)

    def batch(self, idx, device):
        import torch

        from ..motion.motion_repr import parts_to_motion337
        from .generator_data import sample_rows

        idx = np.asarray(idx, np.int64).reshape(-1)
        raw = self.ds.batch(idx)
        motion = parts_to_motion337(raw["parts"])
        lows, highs = [], []
        for i in idx:
            tid = self.ds.variants[int(self.ds._var[i])].take_id
            low, high = self.store.speech(self.speech_keys[tid])
            pos = self.ds.source_frames(int(i))
            lows.append(sample_rows(low, pos))
            highs.append(sample_rows(high, pos, nearest=True))
        t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt, device=device)
        sel = torch.as_tensor(idx)
        return {
            "motion": t(motion), "low": t(np.stack(lows)), "high": t(np.stack(highs)),
            "codes": {p: self.codes[p][sel].long().to(device) for p in PARTS},
            "part_mask": {p: t(raw["part_mask"][p], torch.bool) for p in PARTS},
            "weight": t(raw["weight"]),
        }

    def motion_stats(self):
        """Mean and std of the generator's 337-d input frames over every frame of this split's variants."""
        acc = None
        for key in self.ds.keys:
            m = self.store.motion337_moments(key)
            acc = m if acc is None else combine(acc, m)
        mean, std = mean_std(acc)
        return mean.astype(np.float32), std.astype(np.float32)

    def speech_stats(self):
        lo = hi = None
        for tid in sorted({v.take_id for v in self.ds.variants}):
            ml, mh = self.store.speech_moments(self.speech_keys[tid])
            lo = ml if lo is None else combine(lo, ml)
            hi = mh if hi is None else combine(hi, mh)
        (lm, ls), (hm, hs) = mean_std(lo), mean_std(hi)
        return lm.astype(np.float32), ls.astype(np.float32), hm.astype(np.float32), hs.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Entry points used by the training code

def _check_outside_data(store: FeatureStore, entries) -> None:
    source = getattr(entries, "source", "")
    if source and source != "shared" and os.path.isdir(source):
        src = pathlib.Path(source).resolve()
        if store.root == src or src in store.root.parents:
            raise EchoMaskError(f"The data cache ({store.root}) is inside the data folder {src}; choose a "
                                f"folder outside the data with --data-cache.")


def builtin_store_feature_fn(backend: str):
    """The built-in speech features for the store (which is their cache: no second .npz cache)."""
    from ..speech import FEATURE_VERSION, get_backend

    engine = get_backend(backend)

    def compute(wav_path: str, fps: float):
        from ..speech.audio import load_speech
        from ..speech import compute_speech_features

        f = compute_speech_features(load_speech(wav_path), fps=fps, backend=backend)
        return np.asarray(f.low, np.float32), np.asarray(f.high, np.float32)
    return compute, f"{engine.name}-{FEATURE_VERSION}-{engine.version}"


def feature_tag(fn) -> str:
    return getattr(fn, "cache_tag", None) or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def tokenizer_windows(entries, config, mirror: bool = True, stretch_factors=(0.9, 1.1),
                      options: DataOptions | None = None, log=print, progress: bool = False):
    """(train, val) window sets for tokenizer training: MotionWindows in memory, or streamed from the store
    for split data sets and --stream."""
    from .data import MotionWindows

    if not uses_store(entries, options):
        train = MotionWindows(entries, "train", config.window, config.stride, mirror, stretch_factors)
        val = MotionWindows(entries, "val", config.window, config.stride, takes=train.takes)
        return train, val
    store = FeatureStore((options or DataOptions()).store_dir())
    _check_outside_data(store, entries)
    for note in getattr(entries, "notes", []):
        log(note)
    prep = prepare(entries, store, config.window, config.fps, mirror, stretch_factors, log=log, progress=progress)
    report(prep, log, "the tokenizers")
    return (StreamingWindows(store, prep, "train", config.window, config.stride, mirror, stretch_factors),
            StreamingWindows(store, prep, "val", config.window, config.stride, mirror, stretch_factors))


def generator_data(entries, tokenizers, tokenizers_path, config, feature_fn=None, options: DataOptions | None = None,
                   log=print, dist=None, cache_dir: str | None = None, progress: bool = False):
    """(train, val) data for generator training: core.training.train.GeneratorData in memory, or
    StreamingGeneratorData for split data sets and --stream (every rank prepares its share)."""
    from .generator_data import GeneratorData, builtin_feature_fn, default_cache_dir

    backend = config.generator.speech_backend
    if not uses_store(entries, options):
        if feature_fn is None:
            feature_fn = builtin_feature_fn(backend, cache_dir or default_cache_dir())
        train = GeneratorData(entries, tokenizers, config, feature_fn, "train", log=log)
        val = GeneratorData(entries, tokenizers, config, feature_fn, "val", takes=train.ds.takes, log=log)
        return train, val
    if feature_fn is None:
        feature_fn, tag = builtin_store_feature_fn(backend)
    else:
        tag = feature_tag(feature_fn)
    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    store = FeatureStore((options or DataOptions()).store_dir(), writer=f"rank{rank}")
    _check_outside_data(store, entries)
    for note in getattr(entries, "notes", []):
        log(note)
    prep = prepare(entries, store, config.window, config.fps, speech_fn=feature_fn, speech_tag=tag, rank=rank,
                   world=world, log=log, progress=progress)
    report(prep, log, "the generator")
    tok_hash = store.hashes(tokenizers_path)
    store.hashes.save()
    train = StreamingGeneratorData(store, prep, "train", tokenizers, tok_hash, config, rank, world, log)
    val = StreamingGeneratorData(store, prep, "val", tokenizers, tok_hash, config, rank, world, log)
    return train, val


def run_prepare_cli(args) -> int:
    """`python -m core prepare-data DATA ...`: check a data set, build its cache, or list a split."""
    import sys

    from ..model.config import get_config

    say = lambda msg: print(msg, file=sys.stderr)
    opts = DataOptions.from_args(args)
    entries = opts.manifest(args.manifest)
    if args.list:
        chosen = {"train": [e for e in entries if e.split != "val"], "val": [e for e in entries if e.split == "val"],
                  "test": list(getattr(entries, "test", []))}[args.list]
        if args.list != "train" and not getattr(entries, "test", None) and not any(e.split for e in entries):
            say(f"note: {args.manifest} has no split file; its takes are split by time, so there is no '{args.list}' list")
        for e in chosen:
            if e.wav:
                print(e.wav)
            else:
                say(f"no speech file for {e.npz}")
        return 0
    rank, world = 0, 1
    if args.shard:
        from ..jobs.batch_generate import parse_shard

        rank, world = parse_shard(args.shard)
    config = get_config(args.config)
    store = FeatureStore(opts.store_dir(), writer=f"prepare{rank}of{world}")
    _check_outside_data(store, entries)
    for note in getattr(entries, "notes", []):
        say(note)
    fn, tag = (None, "") if args.no_speech else builtin_store_feature_fn(config.generator.speech_backend)
    prep = prepare(entries, store, config.window, config.fps, speech_fn=fn, speech_tag=tag, rank=rank, world=world,
                   log=say, progress=not args.no_progress, wait=world == 1)
    for p in prep.problems:
        say(f"skipped {p}")
    n_val = sum(1 for e in prep.entries if e.split == "val")
    n_time = sum(1 for e in prep.entries if not e.split)
    test = len(getattr(entries, "test", []))
    kinds = (f"{len(prep.entries) - n_val - n_time} training, {n_val} validation" if not n_time else
             "split by time: the last share of each ground-truth take validates")
    print(f"{len(prep.entries)} take(s) ready in {store.root} ({kinds}"
          + (f"; {test} test takes are never trained on" if test else "") + f"); {len(prep.problems)} file(s) skipped"
          + (f" (shard {rank}/{world})" if world > 1 else ""))
    if world == 1 and prep.entries:
        for split in ("train", "val"):
            ds = StreamingWindows(store, prep, split, config.window, config.stride)
            frames = sum(hi - lo for v, (lo, hi) in zip(ds.variants, ds.ranges) if v.stretch == 1.0 and not v.mirrored)
            print(f"  {split}: {len(ds)} windows of {config.window} frames (stride {config.stride}"
                  + (", mirrored and time-stretched x0.9 / x1.1" if split == "train" else "")
                  + f") covering {frames / config.fps / 3600:.3f} h of motion")
    return 0 if prep.entries else 2
