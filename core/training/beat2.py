"""BEAT2's own layout as a training data set, with its official train/val/test split and a speaker choice.

    beat_english_v2.0.0/
        smplxflame_30/<id>.npz     motion, id = <speaker>_<name>_<session>_<start>_<end> (e.g. 2_scott_0_1_1)
        wave16k/<id>.wav           speech
        textgrid/<id>.TextGrid     word/phone alignment (not needed for training)
        train_test_split.csv       "id,type" per take, type = train | val | test | additional

`split_manifest(folder)` turns such a folder (or any folder of BEAT2-format takes plus a split file) into
the training manifest: takes of type "train" (and "additional" when asked, as EMAGE's `additional_data`)
are training data as a whole, "val" takes validation data, "test" takes are never trained on (listed in
`Manifest.test` for evaluation and batch generation). Speakers are the leading number of the id, as the
official loaders read it (`--speakers 2` = the paper's speaker-2 setting).

Nothing here stops at the first bad file: every take the split names but the folder lacks, every take
without its speech, every unreadable split row becomes a `DataProblem` naming the file, and training
goes on with the rest (core.training.streaming adds the problems found when the files are read).
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import os
import pathlib

from ..errors import EchoMaskError

SPLIT_FILE = "train_test_split.csv"
SPLIT_TYPES = ("train", "val", "test", "additional")
MOTION_DIR = "smplxflame_30"
SPEECH_DIR = "wave16k"


@dataclasses.dataclass(frozen=True)
class DataProblem:
    """One file that cannot be used, and why. `stage` "all": the take is left out of every training;
    "speech": only the generator (which needs speech) leaves it out."""
    path: str
    reason: str
    stage: str = "all"

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class Manifest(list):
    """A list of core.training.data.TakeEntry (what training reads) with what was found on the way:
    `problems` (DataProblem per unusable file), `test` (entries of the test split, never trained on),
    `source` (the folder or file it was read from) and `stream` (read windows from the on-disk store)."""

    def __init__(self, entries=(), problems=(), test=(), source: str = "", stream: bool = False, notes=()):
        super().__init__(entries)
        self.problems: list[DataProblem] = list(problems)
        self.test: list = list(test)
        self.source = source
        self.stream = stream
        self.notes: list[str] = list(notes)


def speaker_of(clip_id: str) -> int | None:
    """BEAT2's speaker number: the id's leading field (`2_scott_0_1_1` -> 2); None when there is none."""
    head = os.path.basename(clip_id).split("_", 1)[0]
    return int(head) if head.isdigit() else None


def parse_speakers(spec) -> frozenset[int] | None:
    """'all' / None -> None (every speaker); '2', '2,4', '1-4' or [2, 4] -> the set of speaker numbers."""
    if spec is None:
        return None
    if isinstance(spec, (list, tuple, set, frozenset)):
        return frozenset(int(s) for s in spec)
    text = str(spec).strip().lower()
    if text in ("", "all"):
        return None
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise EchoMaskError(f"--speakers '{spec}' is not understood: give 'all' or speaker numbers such as "
                                f"'2', '2,4' or '1-4' (the leading number of BEAT2 ids like 2_scott_0_1_1).") from None
    return frozenset(out)


def read_split_file(path: str | os.PathLike) -> tuple[dict[str, str], list[DataProblem]]:
    """A split file -> ({clip id: type}, problems). CSV with a header naming the columns `id` and `type`
    (BEAT2's train_test_split.csv; other columns are ignored); type one of SPLIT_TYPES. Rows with an
    unknown type or an id given twice with different types are problems (named by line), not errors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EchoMaskError(f"Split file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EchoMaskError(f"Cannot read the split file {path}: {exc}") from None
    if not rows:
        raise EchoMaskError(f"The split file {path} is empty; it needs a header 'id,type' and one row per take.")
    header = [h.strip().lower() for h in rows[0]]
    if "id" not in header or "type" not in header:
        raise EchoMaskError(f"The split file {path} needs a header row naming the columns 'id' and 'type' "
                            f"(as BEAT2's {SPLIT_FILE}); its first row is {rows[0]}.")
    ci, ct = header.index("id"), header.index("type")
    split: dict[str, str] = {}
    problems = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ci, ct):
            problems.append(DataProblem(f"{path}:{line}", f"the row {row} has no '{header[max(ci, ct)]}' column"))
            continue
        cid, kind = row[ci].strip(), row[ct].strip().lower()
        if kind not in SPLIT_TYPES:
            problems.append(DataProblem(f"{path}:{line}", f"take '{cid}' has the split type '{row[ct].strip()}'; "
                                        f"expected one of {', '.join(SPLIT_TYPES)}"))
            continue
        if cid in split and split[cid] != kind:
            problems.append(DataProblem(f"{path}:{line}", f"take '{cid}' is listed as '{split[cid]}' and as "
                                        f"'{kind}'; the first is used"))
            continue
        split[cid] = kind
    return split, problems


def find_split_file(folder: str | os.PathLike) -> pathlib.Path | None:
    cand = pathlib.Path(folder) / SPLIT_FILE
    return cand if cand.is_file() else None


def _motion_files(folder: pathlib.Path) -> tuple[dict[str, pathlib.Path], list[DataProblem]]:
    """{clip id: npz} under folder/smplxflame_30 (BEAT2) or, failing that, anywhere under folder."""
    base = folder / MOTION_DIR if (folder / MOTION_DIR).is_dir() else folder
    found: dict[str, pathlib.Path] = {}
    problems = []
    for p in sorted(pathlib.Path(x) for x in glob.glob(str(base / "**" / "*.npz"), recursive=True)):
        if p.stem in found:
            problems.append(DataProblem(str(p), f"a second motion file for the take '{p.stem}' (the first, "
                                        f"{found[p.stem]}, is used)"))
            continue
        found[p.stem] = p
    return found, problems


def _speech_file(npz: pathlib.Path, root: pathlib.Path) -> pathlib.Path | None:
    for folder in (npz.parent, npz.parent.parent / SPEECH_DIR, root / SPEECH_DIR):
        cand = folder / (npz.stem + ".wav")
        if cand.is_file():
            return cand
    return None


def split_manifest(folder: str | os.PathLike, split_file: str | os.PathLike | None = None, speakers=None,
                   additional: bool = False) -> Manifest:
    """The training manifest of a BEAT2 folder (or any folder of BEAT2-format takes) with a split file
    (default: folder/train_test_split.csv). See the module docstring. Raises EchoMaskError only when
    nothing at all is usable, listing why."""
    from .data import TakeEntry

    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise EchoMaskError(f"Training data folder not found: {folder}")
    split_path = pathlib.Path(split_file) if split_file else find_split_file(folder)
    if split_path is None:
        raise EchoMaskError(f"No split file in {folder}: expected {folder / SPLIT_FILE} (BEAT2's layout), or "
                            f"give one with --split-file (a CSV with the columns id,type).")
    split, problems = read_split_file(split_path)
    wanted = parse_speakers(speakers)
    motion, dup = _motion_files(folder)
    problems += dup
    motion_base = folder / MOTION_DIR if (folder / MOTION_DIR).is_dir() else folder
    entries, test, notes = [], [], []
    chosen = {cid: kind for cid, kind in sorted(split.items())
              if wanted is None or speaker_of(cid) in wanted}
    if wanted is not None and not chosen:
        have = sorted({s for s in (speaker_of(c) for c in split) if s is not None})
        raise EchoMaskError(f"The split file {split_path} names no take of speaker(s) {sorted(wanted)}; "
                            f"its speakers are {have}.")
    for cid, kind in chosen.items():
        if kind == "additional" and not additional:
            continue
        npz = motion.get(cid)
        if npz is None:
            problems.append(DataProblem(str(motion_base / f"{cid}.npz"),
                                        f"named in {split_path.name} ({kind}) but the motion file does not exist"))
            continue
        wav = _speech_file(npz, folder)
        role = "val" if kind == "val" else ("train" if kind in ("train", "additional") else "")
        entry = TakeEntry(str(npz), str(wav) if wav else None, 1.0, "gt", (), 0.0,
                          f"BEAT2 {kind}" + ("" if wav else " (no speech)"), split=role)
        if wav is None:
            problems.append(DataProblem(str(npz), f"no speech file ({npz.stem}.wav next to it or in "
                                        f"{SPEECH_DIR}/): used for the tokenizers, not for the generator",
                                        stage="speech"))
        (test if kind == "test" else entries).append(entry)
    unlisted = sorted(set(motion) - set(split))
    if unlisted:
        notes.append(f"{len(unlisted)} motion file(s) in {motion_base} are not in {split_path.name} and are not used "
                     f"(e.g. {unlisted[0]})")
    skipped_extra = sum(1 for k in chosen.values() if k == "additional") if not additional else 0
    if skipped_extra:
        notes.append(f"{skipped_extra} take(s) of type 'additional' left out (add them with --additional)")
    man = Manifest(entries, problems, test, source=str(folder), stream=True, notes=notes)
    if not any(e.split == "train" for e in entries):
        listing = "\n  ".join(str(p) for p in problems[:50]) or "(no problems: the split has no training takes)"
        raise EchoMaskError(f"No usable training take in {folder} (split {split_path}, speakers "
                            f"{'all' if wanted is None else sorted(wanted)}):\n  {listing}")
    return man


def filter_speakers(entries, speakers) -> list:
    """Entries whose file name starts with one of `speakers` (BEAT2 ids); all when speakers is 'all'/None."""
    wanted = parse_speakers(speakers)
    if wanted is None:
        return list(entries)
    kept = [e for e in entries if speaker_of(pathlib.Path(e.npz).stem) in wanted]
    if not kept:
        raise EchoMaskError(f"No take of speaker(s) {sorted(wanted)}: --speakers reads the leading number of "
                            f"BEAT2 file names (2_scott_0_1_1 is speaker 2).")
    return kept


def resolve_manifest(spec: str, speakers=None, split_file: str | None = None, additional: bool = False,
                     stream: bool = False, model_output_weight: float | None = None):
    """'shared' -> the shared data manifest; a folder with a split file (BEAT2's train_test_split.csv, or
    `split_file`) -> its official train/val split (core.training.beat2; read through the on-disk store, core.training.streaming);
    any other folder -> folder_manifest(folder) (split by time). speakers: 'all'/None or BEAT2 speaker numbers
    ('2', '2,4'). Returns a core.training.beat2.Manifest (a list of TakeEntry with the problems found)."""
    from .data import folder_manifest, shared_training_manifest

    if split_file or (spec != "shared" and os.path.isdir(spec) and find_split_file(spec)):
        if spec == "shared":
            raise EchoMaskError("--split-file needs a data folder (--manifest FOLDER), not 'shared'.")
        return split_manifest(spec, split_file, speakers, additional)
    entries = (shared_training_manifest(**({} if model_output_weight is None else {"model_weight": model_output_weight}))
               if spec == "shared" else folder_manifest(spec))
    return Manifest(filter_speakers(entries, speakers), source=spec, stream=stream)
