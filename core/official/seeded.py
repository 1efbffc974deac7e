"""Seeded parameters: the public recipe of ../shared/data/official_parity/README.md §2, re-created from an
`init_<model>.tsv` manifest alone (numpy + hashlib; no official code).

Every tensor that is not "stored" is drawn from a PCG64 generator seeded by the first 8 bytes (little
endian) of sha256("<model>/<tensor name>"), in float64, scaled (rule `normal_0.02`: z * 0.02;
`one_plus_normal_0.02`: 1 + z * 0.02) and cast to float32 once. "stored" tensors come from a given dict
(the generator's buffers, `echomask_buffers.npz`).

Used by the parity tests (to build release-shaped files without storing 1.2 GB) and by the benchmark
(a paper-sized model with well-defined weights when the real release is absent).
"""
from __future__ import annotations

import ast
import hashlib
import os
from typing import Iterator

import numpy as np

RULES = ("normal_0.02", "one_plus_normal_0.02", "stored")


def tensor_seed(model: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{model}/{name}".encode()).digest()[:8], "little")


def rule_for(name: str, shape: tuple) -> str:
    """The rule the README derives from a tensor's name and shape (for a check of the manifest)."""
    if len(shape) >= 2 or name.endswith("bias"):
        return "normal_0.02"
    return "one_plus_normal_0.02"


def seeded_value(model: str, name: str, shape: tuple, rule: str) -> np.ndarray:
    z = np.random.Generator(np.random.PCG64(tensor_seed(model, name))).standard_normal(shape)
    if rule == "normal_0.02":
        return (z * 0.02).astype(np.float32)
    if rule == "one_plus_normal_0.02":
        return (1.0 + z * 0.02).astype(np.float32)
    raise ValueError(f"unknown init rule {rule!r} for {model}/{name}")


def read_init_manifest(path: str | os.PathLike) -> list[tuple[str, tuple, str, str, int | None]]:
    """Rows (name, shape, dtype, rule, seed or None) of an init_<model>.tsv, in file order."""
    rows = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:4] != ["name", "shape", "dtype", "init"]:
            raise ValueError(f"{path}: unexpected header {header}")
        for line in f:
            if not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            seed = int(cols[4]) if len(cols) > 4 and cols[4] else None
            rows.append((cols[0], tuple(ast.literal_eval(cols[1])), cols[2], cols[3], seed))
    return rows


def iter_seeded(model: str, manifest: str | os.PathLike, stored: dict | None = None,
                only: set | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) for every row of the manifest in order (or only the names in `only`)."""
    for name, shape, dtype, rule, seed in read_init_manifest(manifest):
        if only is not None and name not in only:
            continue
        if rule == "stored":
            if stored is None or name not in stored:
                raise KeyError(f"{model}/{name} is 'stored' but no stored value was given")
            value = np.asarray(stored[name])
            if value.shape != shape or str(value.dtype) != dtype:
                raise ValueError(f"stored {name}: {value.shape} {value.dtype}, manifest says {shape} {dtype}")
        else:
            if seed is not None and seed != tensor_seed(model, name):
                raise ValueError(f"{model}/{name}: manifest seed {seed} != recipe seed {tensor_seed(model, name)}")
            value = seeded_value(model, name, shape, rule)
        yield name, value


def seeded_state_dict(model: str, manifest: str | os.PathLike, stored: dict | None = None,
                      only: set | None = None, digest: bool = False):
    """{name: torch tensor} for a manifest; with digest=True also the sha256 hex of all tensors' raw
    bytes concatenated in manifest order (README §2 table; meaningful only with only=None)."""
    import torch

    h = hashlib.sha256() if digest else None
    out = {}
    for name, value in iter_seeded(model, manifest, stored, only):
        value = np.ascontiguousarray(value)
        if h is not None:
            h.update(value.tobytes())
        out[name] = torch.from_numpy(value)
    return (out, h.hexdigest()) if digest else out
