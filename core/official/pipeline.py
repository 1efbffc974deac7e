"""The official release's inference loop on this project's models (docs/OFFICIAL_RELEASE_FORMAT.md §6); the
product runs it through core.generation.official (options, post-processing) from core.generation.inference.generate.

Loop over windows i = 0..R-1 (window i reads feature rows [60 i, 60 i + 64)):
  * generator input: 64 frames in the release's 337-d layout (55 x rot6d, ABSOLUTE translation, 4
    contacts); frames 0-3 are the seed, 4-63 masked;
  * tokens: arg-max over codes per token and level (or sampled with a temperature, a product option);
  * window 0 keeps 16 tokens, later windows drop their first (the seed) and keep 15;
  * the next seed = the last 4 frames of a 337-d sequence rebuilt from this window's own upper, lower and
    hands tokens: rotations Gram-Schmidt-normalised, jaw and eyes identity, x/z translation INTEGRATED
    from the lower decoder's translation channels as if they were velocities (start = the seed clip's
    frame-0 translation, 1/30 s steps), y as decoded, contacts as decoded (the release's quirk, kept).
Then each part's stitched tokens are decoded in one pass; poses = upper/lower/hands/jaw rotations
(eyes zero), expressions = face channels 6-105, translation = the global-motion net on the decoded
lower body (rot6d normalised, translation zeroed), x/z velocities integrated from the start, y absolute.

The release seeds window 0 with the first BEAT2 test clip; the product uses this project's neutral
standing pose instead (core.generation.post.neutral_standing), so outputs differ from the release's own
script only through that seed (core.generation.post.neutral_standing).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..motion import rotations as R
from ..motion.motion_repr import MOTION_CONTACTS, MOTION_TRANS, PART_ROT_DIMS, PART_ROT_JOINTS
from ..motion.skeleton import JAW, NUM_JOINTS, PARTS

WINDOW, SEED, HOP = 64, 4, 60
FPS = 30.0
BODY = ("upper", "lower", "hands")          # parts the seed rebuild decodes (not face)
SPEAKER = 1                                 # BEAT2 speaker 2: the only row the paper checkpoint trained


def num_windows_release(n_feature_frames: int) -> int:
    """R = floor((T - 4) / 60): the release generates 60 R + 4 frames (and fails for R = 0)."""
    return (n_feature_frames - SEED) // HOP


def normalise_rot6d(x6):
    """(..., 6) -> (..., 6) Gram-Schmidt-normalised (rot6d -> matrix -> rot6d, rows convention)."""
    return R.matrix_to_rot6d(R.rot6d_to_matrix(x6))


def integrate_xz(vel_x, vel_z, start, fps: float = FPS):
    """position[0] = start, position[t] = position[t-1] + v[t-1] / fps (torch, (T,) each) -> (T,), (T,)."""
    import torch

    def one(v, s):
        steps = torch.cat([v.new_zeros(1), torch.cumsum(v[:-1] / fps, 0)])
        return s + steps
    return one(vel_x, start[0]), one(vel_z, start[2])


def rebuild_motion337(decoded: dict, start_trans):
    """{upper, lower, hands: (T, D) torch raw decodes} -> (T, 337) in the release's layout (see module doc)."""
    import torch

    lower = decoded["lower"]
    t = lower.shape[0]
    rot6d = torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=lower.dtype).repeat(t, NUM_JOINTS, 1)
    for part in BODY:
        joints = list(PART_ROT_JOINTS[part])
        x = decoded[part][:, :PART_ROT_DIMS[part]].reshape(t, len(joints), 6)
        rot6d[:, joints] = normalise_rot6d(x)
    start = torch.as_tensor(np.asarray(start_trans), dtype=lower.dtype)
    x, z = integrate_xz(lower[:, 54], lower[:, 56], start)
    trans = torch.stack([x, lower[:, 55], z], -1)
    return torch.cat([rot6d.reshape(t, -1), trans, lower[:, 57:61]], -1)


@dataclasses.dataclass
class ReleaseRun:
    """Everything one run computed (the parity tests compare these with the release's own numbers)."""
    in_motion: list = dataclasses.field(default_factory=list)   # per window (64, 337)
    logits: list = dataclasses.field(default_factory=list)      # per window {part: (16, L, K)}
    tokens: list = dataclasses.field(default_factory=list)      # per window {part: (16, L)}
    decoded: list = dataclasses.field(default_factory=list)     # per window {upper/lower/hands: (64, D)}
    tokens_all: dict = dataclasses.field(default_factory=dict)  # {part: (N_tok, L)} stitched
    decoded_all: dict = dataclasses.field(default_factory=dict)  # {part: (N, D)} one-pass decodes
    global_motion_in: object = None                             # (N, 61)
    global_motion_out: object = None                            # (N, 61)
    poses: np.ndarray | None = None                             # (N, 165) axis-angle
    rotmats: np.ndarray | None = None                           # (N, 55, 3, 3)
    expressions: np.ndarray | None = None                       # (N, 100)
    trans: np.ndarray | None = None                             # (N, 3)


def run_release(generator, tokenizers, global_motion, hubert, hubert_hid, seed_motion, start_trans,
                n_windows: int | None = None, speaker: int = SPEAKER, choose=None, known=None,
                record: bool = True, progress=None, cancel=None, timings=None) -> ReleaseRun:
    """The release's loop. hubert / hubert_hid: (T, 256) projected features (last layer / layer 11);
    seed_motion (4, 337) release layout; start_trans (3,). choose(logits (1, N, L, K)) -> codes (1, N, L)
    (default arg-max). known: optional (motion337 (T', 337), frames bool (T',)) given to the model
    unmasked. record=False keeps only what the output needs. Tensors stay on the generator's device."""
    import time

    import torch

    dev = next(generator.parameters()).device
    hubert = torch.as_tensor(hubert, dtype=torch.float32, device=dev)
    hubert_hid = torch.as_tensor(hubert_hid, dtype=torch.float32, device=dev)
    n_windows = num_windows_release(hubert.shape[0]) if n_windows is None else n_windows
    if n_windows < 1 or hubert.shape[0] < SEED + HOP * n_windows:
        raise ValueError(f"{hubert.shape[0]} feature frames are too few for {n_windows} window(s) of 64")
    choose = choose or (lambda logits: logits.argmax(-1))
    seed = torch.as_tensor(np.asarray(seed_motion), dtype=torch.float32, device=dev)
    start = torch.as_tensor(np.asarray(start_trans), dtype=torch.float32, device=dev)
    spk = torch.tensor([speaker], device=dev)
    run = ReleaseRun()
    kept = {p: [] for p in PARTS}
    times = {"model": 0.0, "decode": 0.0}
    for w in range(n_windows):
        if cancel is not None:
            cancel()
        t0 = time.perf_counter()
        lo = w * HOP
        motion = torch.zeros(WINDOW, seed.shape[-1], device=dev)
        motion[:SEED] = seed
        mask = torch.ones(WINDOW, dtype=torch.bool, device=dev)
        mask[:SEED] = False
        if known is not None:
            k_motion, k_frames = known
            hi = min(len(k_frames), lo + WINDOW)
            if hi > lo:
                sel = torch.as_tensor(np.asarray(k_frames[lo:hi]), device=dev)
                rows = torch.nonzero(sel).flatten()
                motion[rows] = torch.as_tensor(np.asarray(k_motion[lo:hi]), dtype=torch.float32, device=dev)[rows]
                mask[rows] = False
        with torch.no_grad():
            out = generator(motion[None], mask[None], hubert_hid[None, lo:lo + WINDOW],
                            hubert[None, lo:lo + WINDOW], spk)
            codes = {p: choose(out["logits"][p])[0] for p in PARTS}
            t1 = time.perf_counter()
            for p in PARTS:
                kept[p].append(codes[p] if w == 0 else codes[p][SEED // 4:])
            dec = {}
            if record or w + 1 < n_windows:
                dec = {p: tokenizers.decode_parts({p: codes[p][None]})[p][0] for p in BODY}
                seed = rebuild_motion337(dec, start)[-SEED:]
        t2 = time.perf_counter()
        times["model"] += t1 - t0
        times["decode"] += t2 - t1
        if record:
            run.in_motion.append(motion)
            run.logits.append({p: out["logits"][p][0] for p in PARTS})
            run.tokens.append(codes)
            run.decoded.append(dec)
        if progress is not None:
            progress(w + 1, n_windows)

    t0 = time.perf_counter()
    with torch.no_grad():
        run.tokens_all = {p: torch.cat(kept[p]) for p in PARTS}
        run.decoded_all = {p: tokenizers.decode_parts({p: run.tokens_all[p][None]})[p][0] for p in PARTS}
        lower = run.decoded_all["lower"]
        gm_in = lower.clone()
        gm_in[:, :54] = normalise_rot6d(lower[:, :54].reshape(-1, 9, 6)).reshape(-1, 54)
        gm_in[:, 54:57] = 0.0
        gm_out = global_motion(gm_in[None])[0]
        x, z = integrate_xz(gm_out[:, 54], gm_out[:, 56], start)
        trans = torch.stack([x, gm_out[:, 55], z], -1)
    run.global_motion_in, run.global_motion_out = gm_in, gm_out
    run.trans = trans.float().cpu().numpy()
    run.rotmats, run.poses, run.expressions = assemble_pose(
        {p: v.float().cpu().numpy() for p, v in run.decoded_all.items()})
    times["decode"] += time.perf_counter() - t0
    if timings is not None:
        for k, v in times.items():
            timings[k] = timings.get(k, 0.0) + v
    return run


def assemble_pose(decoded: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """{part: (N, D) raw decodes} -> (rotation matrices (N, 55, 3, 3), axis-angle poses (N, 165), expressions
    (N, 100)): upper/lower/hands joints and the jaw (face channels 0-5) from their rot6d, eyes identity."""
    n = len(decoded["face"])
    mats = np.broadcast_to(np.eye(3), (n, NUM_JOINTS, 3, 3)).copy()
    for part in ("upper", "lower", "hands", "face"):
        joints = list(PART_ROT_JOINTS[part])
        x = np.asarray(decoded[part], np.float64)[:, :PART_ROT_DIMS[part]].reshape(n, len(joints), 6)
        mats[:, joints] = R.rot6d_to_matrix(x)
    assert PART_ROT_JOINTS["face"] == (JAW,)
    poses = R.matrix_to_axis_angle(mats).reshape(n, -1).astype(np.float32)
    expressions = np.asarray(decoded["face"], np.float32)[:, 6:106].copy()
    return mats, poses, expressions


def neutral_seed() -> tuple[np.ndarray, np.ndarray]:
    """This project's neutral standing pose as the release's 4 seed frames (absolute translation) and the
    start translation (the release would take both from the first BEAT2 test clip)."""
    from ..generation.post import neutral_standing
    from ..motion.motion_repr import parts_to_motion337, take_to_parts

    take = neutral_standing(SEED)
    seed = parts_to_motion337(take_to_parts(take), trans=take.trans, trans_mode="absolute")
    seed[:, MOTION_CONTACTS] = 1.0  # standing still: feet planted
    assert np.allclose(seed[:, MOTION_TRANS], take.trans)
    return seed.astype(np.float32), take.trans[0].astype(np.float32)


_EXTRAS: dict = {}


def release_extras(model, loader):
    """The converted release's global-motion net and speech projection (cached per file and device)."""
    import os

    key = (os.path.abspath(model.path), os.path.getmtime(model.path), str(model.device))
    if key not in _EXTRAS:
        _EXTRAS.clear()
        _EXTRAS[key] = loader(model.path, device=model.device)
    return _EXTRAS[key]
