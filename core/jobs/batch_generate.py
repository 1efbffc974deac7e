"""Batch generation: many speech files -> one take each, resumable and shardable over machines.

    python -m core generate-batch LIST_OR_FOLDER... -o OUT/ [--shard I/N] [--blend] [--fbx]

* Inputs: speech files, folders (their audio files; not recursive) and list files (one path a line,
  relative paths relative to the list, blank lines and `#` comments ignored). A file's clip id (its name
  without extension, core.metrics.takeset.clip_id) names its outputs: OUT/<id>.npz (BEAT2 format), with
  OUT/<id>.blend / OUT/<id>.fbx when asked, and OUT/<id>.json (the settings, the speech file's content
  hash, its seed and frame count), written last: a file is done when its .json matches the run.
* Resumable: every output is written under a temporary name in OUT and renamed into place, so a killed
  batch leaves complete files or none; the next run skips the files that are done.
* Sharding: the ids are sorted and shard I of N takes every N-th from the I-th (0 <= I < N). Machines of a
  farm, under any scheduler, run the same command with their own I on the same list, without talking to
  each other, into one shared OUT or separate ones.
* Seeds: a file's seed derives from --seed and the file's *content*, never from its position, so all
  shards' outputs equal one unsharded run's, byte for byte (core.motion.take writes reproducible .npz files).
* Failures: a file that cannot be generated is reported with its reason and the batch goes on; the end
  prints a summary and writes OUT/batch_report[.shard-I-of-N].json. The model is loaded once per process.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import signal
import socket
import sys
import tempfile
import time

from ..errors import EchoMaskError

REPORT_VERSION = 1
_TMP_PREFIX = ".batch-"


@dataclasses.dataclass(frozen=True)
class BatchItem:
    clip: str
    path: str
    problem: str = ""          # known before generating (e.g. listed but missing, duplicate id)


@dataclasses.dataclass
class BatchResult:
    generated: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)      # done before this run
    failed: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)   # (clip, path, reason)
    cancelled: bool = False
    shard: tuple[int, int] = (0, 1)
    report: str = ""


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise EchoMaskError(f"--shard '{text}' is not understood: give I/N, e.g. 0/4 for the first of 4 shards.") from None
    if n < 1 or not 0 <= i < n:
        raise EchoMaskError(f"--shard {text}: shards are numbered 0 to N-1 (e.g. 0/{max(n, 2)} ... "
                            f"{max(n, 2) - 1}/{max(n, 2)}).")
    return i, n


def _audio_exts():
    from ..metrics.takeset import AUDIO_EXTENSIONS

    return AUDIO_EXTENSIONS


def collect_inputs(inputs) -> list[BatchItem]:
    """Speech files / folders / list files -> BatchItems sorted by clip id. Only a path given on the
    command line that does not exist stops here; files named inside lists that are missing become
    failed items, so one bad line never stops the batch."""
    from ..metrics.takeset import clip_id

    exts = _audio_exts()
    paths: list[tuple[str, str]] = []   # (path, problem)
    for given in inputs:
        if os.path.isdir(given):
            files = sorted(os.path.join(given, f) for f in os.listdir(given) if f.lower().endswith(exts))
            if not files:
                raise EchoMaskError(f"No speech files ({', '.join(exts)}) in the folder {given}.")
            paths += [(f, "") for f in files]
        elif os.path.isfile(given) and given.lower().endswith(exts):
            paths.append((given, ""))
        elif os.path.isfile(given):
            base = os.path.dirname(os.path.abspath(given))
            try:
                lines = pathlib.Path(given).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise EchoMaskError(f"Cannot read the list {given}: {exc}") from None
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                path = line if os.path.isabs(line) else os.path.join(base, line)
                problem = ("" if os.path.isfile(path) else f"listed in {os.path.basename(given)} but not found")
                if not problem and not path.lower().endswith(exts):
                    problem = f"not a speech file (expected {', '.join(exts)})"
                paths.append((path, problem))
        else:
            raise EchoMaskError(f"Speech input not found: {given} (give speech files, folders or list files).")
    by_id: dict[str, BatchItem] = {}
    dups = []
    for path, problem in sorted(paths, key=lambda x: (clip_id(x[0]), os.path.abspath(x[0]))):
        cid = clip_id(path)
        if cid in by_id:
            if os.path.abspath(by_id[cid].path) != os.path.abspath(path):
                dups.append(BatchItem(cid, path, f"has the same clip id '{cid}' as {by_id[cid].path}; "
                                                 f"rename one (outputs are named by clip id)"))
            continue
        by_id[cid] = BatchItem(cid, path, problem)
    items = sorted(by_id.values(), key=lambda it: it.clip)
    return items + dups


def shard_items(items: list[BatchItem], shard: tuple[int, int]) -> list[BatchItem]:
    i, n = shard
    return [it for k, it in enumerate(sorted(items, key=lambda it: (it.clip, it.path))) if k % n == i]


def file_hash(path: str) -> str:
    from ..training.datastore import content_hash

    return content_hash(path)


def file_seed(base_seed: int, content: str) -> int:
    digest = hashlib.blake2b(f"echomask-batch|{int(base_seed)}|{content}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def _outputs(clip: str, blend: bool, fbx: bool) -> list[str]:
    return [f"{clip}.npz"] + ([f"{clip}.blend"] if blend else []) + ([f"{clip}.fbx"] if fbx else [])


def _is_done(out: pathlib.Path, clip: str, expected: dict) -> bool:
    from ..training.datastore import read_json

    rec = read_json(out / f"{clip}.json")
    if not isinstance(rec, dict):
        return False
    keys = ("source_sha256", "settings", "outputs")
    return (all(rec.get(k) == expected[k] for k in keys)
            and all((out / name).is_file() for name in expected["outputs"]))


def _clean_stale(out: pathlib.Path) -> None:
    """Remove temporary folders that killed runs of this machine left behind (never another live process's)."""
    if os.name != "posix":  # os.kill(pid, 0) probes a process only on POSIX (on Windows it would signal it)
        return
    host = socket.gethostname()
    for d in out.glob(f"{_TMP_PREFIX}{host}-*"):
        try:
            pid = int(d.name[len(_TMP_PREFIX) + len(host) + 1:].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def generate_batch(inputs, out_dir, shard=(0, 1), options=None, model=None, blend: bool = False, fbx: bool = False,
                   feature_fn=None, progress: bool = True, cancel=None, log=print, **overrides) -> BatchResult:
    """Generate one take per speech file (see the module docstring). options: GenerationOptions (+ keyword
    overrides of its fields); options.seed is the base seed each file's seed derives from. cancel() -> True
    stops between and inside files (nothing half-written; the next run resumes). feature_fn: as
    core.generation.inference.generate."""
    from ..speech.audio import load_speech
    from ..model.checkpoint import EchoMaskModel
    from ..training.datastore import content_hash, save_json
    from ..generation.options import GenerationOptions
    from ..generation.inference import GenerationCancelled, generate, resolve_model
    from ..motion.take import save_take

    shard = parse_shard(shard) if isinstance(shard, str) or shard is None else tuple(shard)
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EchoMaskError(f"{out} exists and is not a folder; choose an output folder.")
    items = shard_items(collect_inputs(inputs), shard)
    out.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    options = (options or GenerationOptions()).replace(**{k: v for k, v in overrides.items() if v is not None})
    mdl = model if isinstance(model, EchoMaskModel) else resolve_model(model, options.device)   # once per process
    model_id = content_hash(mdl.path) if getattr(mdl, "path", None) and os.path.isfile(mdl.path) else "in-memory"
    # What makes a take what it is (a finished file with other settings is made again); device and threads
    # do not change the result.
    settings = {k: v for k, v in options.to_dict().items() if k not in ("seed", "device", "threads")}
    settings.update(base_seed=options.seed, model=model_id, model_config=getattr(mdl.config, "name", "?"))
    res = BatchResult(shard=shard)

    todo = []
    for it in items:
        if it.problem:
            res.failed.append((it.clip, it.path, it.problem))
            continue
        try:
            sha = content_hash(it.path)
        except OSError as exc:
            res.failed.append((it.clip, it.path, f"cannot read the file: {exc}"))
            continue
        expected = {"source_sha256": sha, "settings": settings, "outputs": _outputs(it.clip, blend, fbx)}
        if _is_done(out, it.clip, expected):
            res.skipped.append(it.clip)
        else:
            todo.append((it, expected))
    if res.skipped:
        log(f"{len(res.skipped)} of {len(items)} file(s) already done in {out}; {len(todo)} to generate")

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="generate-batch" + (f" {shard[0]}/{shard[1]}" if shard[1] > 1 else ""),
                   unit="file", dynamic_ncols=True)
    say = bar.write if bar is not None else log
    try:
        for it, expected in todo:
            if cancel is not None and cancel():
                res.cancelled = True
                break
            tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-",
                                                dir=out))
            try:
                audio = load_speech(it.path)
                file_seed_ = file_seed(options.seed, expected["source_sha256"])
                take = generate(audio, options.replace(seed=file_seed_), model=mdl, feature_fn=feature_fn,
                                cancel=cancel)
                files = {"npz": tmp / f"{it.clip}.npz"}
                save_take(take, files["npz"])
                if blend or fbx:
                    from .blender_bridge import run_blender_task

                    if blend:
                        files["blend"] = tmp / f"{it.clip}.blend"
                    if fbx:
                        files["fbx"] = tmp / f"{it.clip}.fbx"
                    run_blender_task("import_take", take=str(files["npz"]), audio=os.path.abspath(it.path),
                                     blend=str(files["blend"]) if blend else None,
                                     fbx=str(files["fbx"]) if fbx else None)
                    missing = [p.name for p in files.values() if not p.is_file()]
                    if missing:
                        raise EchoMaskError(f"Blender did not write {', '.join(missing)}")
                for path in files.values():
                    os.replace(path, out / path.name)
                record = dict(expected, clip=it.clip, source_name=os.path.basename(it.path), seed=file_seed_,
                              frames=take.num_frames, fps=take.fps, format=REPORT_VERSION)
                save_json(out / f"{it.clip}.json", record)   # last: the file is done
                res.generated.append(it.clip)
            except GenerationCancelled:
                res.cancelled = True
                break
            except EchoMaskError as exc:
                res.failed.append((it.clip, it.path, str(exc)))
                say(f"failed {it.path}: {exc}")
            except Exception as exc:  # a bug or the machine: still never stop the batch for one file
                res.failed.append((it.clip, it.path, f"{type(exc).__name__}: {exc} (unexpected; please report it)"))
                say(f"failed {it.path}: {type(exc).__name__}: {exc}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if bar is not None:
                bar.update(1)
                if res.failed:
                    bar.set_postfix(failed=len(res.failed))
    finally:
        if bar is not None:
            bar.close()
        name = "batch_report.json" if shard[1] == 1 else f"batch_report.shard-{shard[0]}-of-{shard[1]}.json"
        report = {"shard": list(shard), "files": len(items), "generated": res.generated, "skipped": res.skipped,
                  "failed": [{"clip": c, "path": p, "reason": r} for c, p, r in res.failed],
                  "cancelled": res.cancelled, "settings": settings, "format": REPORT_VERSION}
        save_json(out / name, report)
        res.report = str(out / name)
    return res


def run_cli(args) -> int:
    """`python -m core generate-batch ...`: exit status 0 when every file is done, 1 when some failed."""
    started = time.perf_counter()

    def on_term(signum, frame):   # schedulers stop jobs with SIGTERM: leave through the clean-up path
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        from ..generation.options import generation_options

        res = generate_batch(args.inputs, args.out, shard=parse_shard(args.shard),
                             options=generation_options(args).replace(threads=args.threads), model=args.weights,
                             blend=args.blend, fbx=args.fbx, progress=not args.no_progress,
                             log=lambda m: print(m, file=sys.stderr))
    finally:
        signal.signal(signal.SIGTERM, previous)
    minutes = (time.perf_counter() - started) / 60
    shard = f" (shard {res.shard[0]}/{res.shard[1]})" if res.shard[1] > 1 else ""
    print(f"generate-batch{shard}: {len(res.generated)} generated, {len(res.skipped)} already done, "
          f"{len(res.failed)} failed in {minutes:.1f} min -> {args.out}" + ("; cancelled" if res.cancelled else ""))
    for clip, path, reason in res.failed:
        print(f"  failed {path}: {reason}")
    if res.failed:
        print(f"  (report: {res.report})")
    return 1 if res.failed else 0
