"""On-disk feature store: the training data's per-take features, built once into a cache folder outside
the data and memory-mapped while training, so hours of motion never sit in memory at once.

    <root>/hashes/<writer>.json          (path, size, mtime) -> content hash: unchanged files are not re-read
    <root>/takes/<key>.json              a take's record: frames and fps, or why it cannot be used
    <root>/motion/<key>.npy              (frames, 425) float32 part features of one augmented variant
    <root>/motion/<key>.stats.npz        count / mean / M2 of its 337-d generator input frames
    <root>/speech/<key>.json             a speech file's record (frames), or why it cannot be used
    <root>/speech/<key>.low.npy|.high.npy  its features at the take's frame rate; .stats.npz their moments
    <root>/tokens/<key>.npy              (parts, windows, tokens, levels) int16 codes of a set of windows
    <root>/stats/<key>.npz               per-part count / mean / M2 of a frame range (normalisation)

Keys hash the file *contents* (not names or paths), the augmentation and STORE_VERSION: an unchanged file
is never recomputed, whatever its path, and a changed one gets new entries. Every file is written under a
temporary name and renamed into place, records last, so a killed run leaves nothing half-written and
several processes (torchrun ranks, machines sharing the folder) may build at once.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import tempfile
import time

import numpy as np

from ..errors import EchoMaskError
from ..motion.skeleton import PART_DIMS, PARTS

STORE_VERSION = 1          # bump when take_to_parts / the stored layout changes
MOTION_DIM = sum(PART_DIMS[p] for p in PARTS)   # 425
PART_SLICES = {}
_o = 0
for _p in PARTS:
    PART_SLICES[_p] = slice(_o, _o + PART_DIMS[_p])
    _o += PART_DIMS[_p]


def content_key(*fields) -> str:
    return hashlib.blake2b("|".join(str(f) for f in (STORE_VERSION, *fields)).encode(), digest_size=16).hexdigest()


def token_key(vkey: str, starts, window: int, tok_hash: str) -> str:
    starts = np.asarray(starts, np.int64)
    return content_key("tokens", vkey, window, tok_hash, hashlib.blake2b(starts.tobytes(), digest_size=12).hexdigest())


def content_hash(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _atomic(path: pathlib.Path, write) -> None:
    """write(file object) into a temporary file next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_npy(path: pathlib.Path, array: np.ndarray) -> None:
    _atomic(path, lambda f: np.save(f, np.ascontiguousarray(array)))


def save_npz(path: pathlib.Path, **arrays) -> None:
    _atomic(path, lambda f: np.savez(f, **arrays))


def save_json(path: pathlib.Path, obj) -> None:
    _atomic(path, lambda f: f.write(json.dumps(obj, sort_keys=True).encode()))


def read_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------------
# Moments (count, mean, M2) and their combination (Chan et al.), for statistics over data never held at once

def moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    mean = x.mean(0) if len(x) else np.zeros(x.shape[1])
    return len(x), mean, ((x - mean) ** 2).sum(0)


def combine(a, b):
    na, ma, qa = a
    nb, mb, qb = b
    if na == 0:
        return b
    if nb == 0:
        return a
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), qa + qb + delta ** 2 * (na * nb / n)


def mean_std(m) -> tuple[np.ndarray, np.ndarray]:
    n, mean, q = m
    return mean, np.sqrt(q / max(n, 1))


# ----------------------------------------------------------------------------------------------------------

class FileHashes:
    """Content hashes of data files, remembered by (absolute path, size, modification time). Each writer
    keeps its own index file (no lost updates between processes); all of them are read."""

    def __init__(self, root: pathlib.Path, writer: str = "rank0"):
        self.folder = root / "hashes"
        self.own = self.folder / f"{writer}.json"
        self.known: dict[str, list] = {}
        self.dirty = False
        self.refresh()

    def refresh(self) -> None:
        for f in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            data = read_json(f)
            if isinstance(data, dict):
                for k, v in data.items():
                    self.known.setdefault(k, v)

    def lookup(self, path) -> str | None:
        """The remembered hash when the file is unchanged, else None (nothing is read)."""
        st = os.stat(path)
        rec = self.known.get(os.path.abspath(path))
        if rec and rec[0] == st.st_size and rec[1] == st.st_mtime_ns:
            return rec[2]
        return None

    def __call__(self, path) -> str:
        h = self.lookup(path)
        if h is None:
            st = os.stat(path)
            h = content_hash(path)
            self.known[os.path.abspath(path)] = [st.st_size, st.st_mtime_ns, h]
            self.dirty = True
        return h

    def save(self) -> None:
        if self.dirty:
            save_json(self.own, self.known)
            self.dirty = False


class FeatureStore:
    """The store in one folder (see the module docstring). `max_open` bounds the memory maps kept open."""

    def __init__(self, root: str | os.PathLike, writer: str = "rank0", max_open: int = 256):
        from ..speech.cache import _SHARED

        self.root = pathlib.Path(root).expanduser().resolve()
        if self.root == _SHARED or _SHARED in self.root.parents:
            raise EchoMaskError(f"The data cache cannot go inside the read-only shared data folder ({self.root}); "
                                "choose another folder with --data-cache.")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EchoMaskError(f"Cannot create the data cache folder {self.root}: {exc}") from None
        self.hashes = FileHashes(self.root, writer)
        self._open: collections.OrderedDict = collections.OrderedDict()
        self.max_open = max_open

    # --- memory maps ------------------------------------------------------------------------------------
    def _map(self, path: pathlib.Path, mode: str = "r") -> np.ndarray:
        key = (str(path), mode)
        arr = self._open.get(key)
        if arr is None:
            arr = np.load(path, mmap_mode=mode)
            self._open[key] = arr
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(key)
        return arr

    # --- motion -----------------------------------------------------------------------------------------
    def take_key(self, npz, lookup_only: bool = False) -> str | None:
        h = self.hashes.lookup(npz) if lookup_only else self.hashes(npz)
        return None if h is None else content_key("take", h)

    def variant_key(self, take_key: str, mirrored: bool, stretch: float) -> str:
        return content_key("variant", take_key, int(bool(mirrored)), repr(float(stretch)))

    def motion_path(self, vkey: str) -> pathlib.Path:
        return self.root / "motion" / f"{vkey}.npy"

    def take_record(self, tkey: str) -> dict | None:
        return read_json(self.root / "takes" / f"{tkey}.json")

    def ensure_motion(self, npz: str, variants_for) -> dict:
        """The take's record {"status", "frames", "fps" | "reason", "key"}, building what is missing:
        `variants_for(record)` -> [(mirrored, stretch)] the run needs, each stored as one feature file."""
        from ..errors import TakeFormatError
        from ..motion.motion_repr import mirror_take, parts_to_motion337, take_to_parts, time_stretch_take
        from ..motion.take import load_take

        tkey = self.take_key(npz)
        rec_path = self.root / "takes" / f"{tkey}.json"
        rec = read_json(rec_path)
        take = None
        if rec is None:
            try:
                take = load_take(npz)
                rec = {"status": "ok", "frames": take.num_frames, "fps": float(take.fps)}
            except TakeFormatError as exc:
                rec = {"status": "error", "reason": str(exc)}
        if rec["status"] == "ok":
            for mirrored, stretch in variants_for(rec):
                vkey = self.variant_key(tkey, mirrored, stretch)
                path = self.motion_path(vkey)
                if path.is_file() and path.with_suffix(".stats.npz").is_file():
                    continue
                if take is None:
                    take = load_take(npz)
                aug = mirror_take(take) if mirrored else take
                aug = time_stretch_take(aug, stretch) if stretch != 1.0 else aug
                parts = take_to_parts(aug)
                n, mean, q = moments(parts_to_motion337(parts))
                save_npz(path.with_suffix(".stats.npz"), count=np.int64(n), mean=mean, m2=q)
                save_npy(path, np.concatenate([parts[p] for p in PARTS], axis=1).astype(np.float32))
        if not rec_path.is_file():
            save_json(rec_path, rec)
        return dict(rec, key=tkey)

    def motion_ready(self, tkey: str, variants_for) -> dict | None:
        """The record when the take and every variant the run needs are stored (another process built
        them), else None."""
        rec = self.take_record(tkey)
        if rec is None:
            return None
        if rec["status"] == "ok":
            for mirrored, stretch in variants_for(rec):
                path = self.motion_path(self.variant_key(tkey, mirrored, stretch))
                if not (path.is_file() and path.with_suffix(".stats.npz").is_file()):
                    return None
        return dict(rec, key=tkey)

    def motion(self, vkey: str) -> np.ndarray:
        """(frames, 425) float32 memory map of one variant (columns: PART_SLICES)."""
        return self._map(self.motion_path(vkey))

    def motion337_moments(self, vkey: str):
        with np.load(self.motion_path(vkey).with_suffix(".stats.npz")) as z:
            return int(z["count"]), z["mean"], z["m2"]

    def part_moments(self, vkey: str, lo: int, hi: int, chunk: int = 8192) -> dict:
        """{part: (count, mean, M2)} over frames lo..hi-1 of a variant (cached)."""
        path = self.root / "stats" / f"{content_key('parts', vkey, lo, hi)}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    return {p: (int(z[f"{p}.n"]), z[f"{p}.mean"], z[f"{p}.m2"]) for p in PARTS}
            except Exception:
                pass  # damaged: recompute
        mm = self.motion(vkey)
        acc = {p: (0, np.zeros(PART_DIMS[p]), np.zeros(PART_DIMS[p])) for p in PARTS}
        for a in range(lo, hi, chunk):
            block = np.asarray(mm[a:min(hi, a + chunk)])
            for p in PARTS:
                acc[p] = combine(acc[p], moments(block[:, PART_SLICES[p]]))
        save_npz(path, **{f"{p}.{k}": v for p in PARTS for k, v in zip(("n", "mean", "m2"), acc[p])})
        return acc

    # --- speech -----------------------------------------------------------------------------------------
    def speech_key(self, wav, fps: float, tag: str, lookup_only: bool = False) -> str | None:
        h = self.hashes.lookup(wav) if lookup_only else self.hashes(wav)
        return None if h is None else content_key("speech", h, repr(float(fps)), tag)

    def speech_record(self, skey: str) -> dict | None:
        return read_json(self.root / "speech" / f"{skey}.json")

    def ensure_speech(self, wav: str, fps: float, feature_fn, tag: str) -> dict:
        """The speech file's record {"status", "frames" | "reason", "key"}, computing the features with
        feature_fn(wav, fps) -> (low (T, A), high (T, B)) when missing."""
        skey = self.speech_key(wav, fps, tag)
        rec_path = self.root / "speech" / f"{skey}.json"
        rec = read_json(rec_path)
        if rec is not None:
            return dict(rec, key=skey)
        persist = True
        try:
            low, high = feature_fn(wav, fps)
            low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
            if low.ndim != 2 or high.ndim != 2 or len(low) != len(high) or len(low) == 0:
                raise EchoMaskError(f"the speech features have the shapes {low.shape} and {high.shape}")
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise EchoMaskError("the speech features contain NaN or infinite values")
            base = self.root / "speech" / skey
            ml, mh = moments(low), moments(high)
            save_npz(pathlib.Path(f"{base}.stats.npz"), low_n=np.int64(ml[0]), low_mean=ml[1], low_m2=ml[2],
                     high_n=np.int64(mh[0]), high_mean=mh[1], high_m2=mh[2])
            save_npy(pathlib.Path(f"{base}.low.npy"), low)
            save_npy(pathlib.Path(f"{base}.high.npy"), high)
            rec = {"status": "ok", "frames": int(len(low)), "dims": [int(low.shape[1]), int(high.shape[1])]}
        except EchoMaskError as exc:   # unreadable / empty audio: a property of the file, remembered
            rec = {"status": "error", "reason": str(exc)}
        except Exception as exc:       # anything else may be this machine's trouble: report, do not remember
            rec, persist = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}, False
        if persist:
            save_json(rec_path, rec)
        return dict(rec, key=skey)

    def speech(self, skey: str) -> tuple[np.ndarray, np.ndarray]:
        base = self.root / "speech" / skey
        return self._map(pathlib.Path(f"{base}.low.npy")), self._map(pathlib.Path(f"{base}.high.npy"))

    def speech_moments(self, skey: str):
        with np.load(self.root / "speech" / f"{skey}.stats.npz") as z:
            return ((int(z["low_n"]), z["low_mean"], z["low_m2"]), (int(z["high_n"]), z["high_mean"], z["high_m2"]))

    # --- tokens -----------------------------------------------------------------------------------------
    def tokens_path(self, key: str) -> pathlib.Path:
        return self.root / "tokens" / f"{key}.npy"

    def ensure_tokens(self, vkey: str, starts: np.ndarray, window: int, tok_hash: str, encode,
                      chunk: int = 256) -> pathlib.Path:
        """Codes of the windows of one variant starting at `starts`: encode((B, window, 425) float32) ->
        (parts, B, tokens, levels) integer array; stored as int16."""
        starts = np.asarray(starts, np.int64)
        path = self.tokens_path(token_key(vkey, starts, window, tok_hash))
        if path.is_file():
            return path
        mm = self.motion(vkey)
        pieces = []
        for lo in range(0, len(starts), chunk):
            x = np.stack([mm[s:s + window] for s in starts[lo:lo + chunk]]).astype(np.float32)
            pieces.append(np.asarray(encode(x)))
        codes = np.concatenate(pieces, axis=1)
        if codes.max(initial=0) > np.iinfo(np.int16).max:
            raise EchoMaskError("The tokenizers have more codes than the token store holds (32767).")
        save_npy(path, codes.astype(np.int16))
        return path

    def combine_tokens(self, paths: list[pathlib.Path]) -> pathlib.Path:
        """One (parts, windows, tokens, levels) file of the windows of several token files, in order."""
        key = content_key("tokenset", *[p.stem for p in paths])
        out = self.tokens_path(key)
        if out.is_file():
            return out
        shapes = [np.load(p, mmap_mode="r").shape for p in paths]
        total = sum(s[1] for s in shapes)
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=".npy")
        os.close(handle)
        try:
            dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16,
                                            shape=(shapes[0][0], total, *shapes[0][2:]))
            at = 0
            for p, s in zip(paths, shapes):
                dst[:, at:at + s[1]] = np.load(p, mmap_mode="r")
                at += s[1]
            dst.flush()
            del dst
            os.replace(tmp, out)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return out

    def tokens(self, path: pathlib.Path) -> np.ndarray:
        # copy-on-write map: writable for torch.from_numpy, never written back
        return self._map(path, mode="c")


def wait_for(ready, what: str, log=print, timeout_s: float = 24 * 3600, poll_s: float = 1.0):
    """Poll ready() -> value (not None) while other processes build; a note every minute."""
    started = last = time.time()
    while True:
        value = ready()
        if value is not None:
            return value
        now = time.time()
        if now - started > timeout_s:
            raise EchoMaskError(f"Gave up waiting for {what} after {timeout_s / 3600:.1f} h: did another "
                                f"process preparing the data stop?")
        if now - last > 60:
            log(f"waiting for another process to prepare {what} ...")
            last = now
        time.sleep(poll_s)
