"""Stage 1 training: the four motion tokenizers (RVQ-VAEs) on every window of every take in a manifest.

    python -m core train-tokenizers --manifest shared --config small --out weights/tokenizers_small.safetensors \
        --steps 1500 --seed 0

Repeatable (--seed fixes initialisation, batch order, augmentation choice and quantiser dropout), resumable
(--resume continues from `<out>.resume.pt`, a weights-only torch file holding model, EMA codebook state,
optimiser, step and random states), logs losses as JSON lines (`<out>.log.jsonl`) and shows a progress bar
with ETA. Validation = reconstruction of the held-out ground-truth windows: joint position error (mm) of the
reassembled body and expression MSE.

Under `torchrun --nproc_per_node N -m core train-tokenizers ...` every process trains its contiguous share
of each global batch (the same seeded draw on every rank; core.training.distributed): losses are this rank's share
of the global loss (weights normalised by the global sum), gradients are summed over the ranks, and the
RVQ codebooks are updated from the global batch's statistics with rank 0 making the random choices
(quantiser dropout, initial and dead-code rows), so every rank holds the same tokenizers and N processes
train as one would. Rank 0 validates, logs and writes the files; a run resumes with another N.
--precision chooses fp32 or mixed precision (core.precision).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np
import torch

from .data import MotionWindows, TakeEntry
from ..jobs.devices import resolve_device
from ..errors import EchoMaskError
from ..model.config import ModelConfig, get_config
from ..model.tokenizer import TokenizerSet
from ..motion.motion_repr import FACE_EXPR, LOWER_CONTACTS, LOWER_TRANS, PART_ROT_JOINTS, parts_to_motion337
from ..motion.skeleton import PARENTS, PARTS, REST_JOINTS_YUP
from ..motion import rotations as R


@dataclasses.dataclass
class TokenizerTrainOptions:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 5e-4
    lr_min_ratio: float = 0.1      # cosine decay to lr * this
    warmup: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    val_every: int = 250
    save_every: int = 250          # resumable checkpoint period (steps)
    device: str = "auto"
    mirror: bool = True
    stretch_factors: tuple[float, ...] = (0.9, 1.1)
    precision: str = "auto"        # core.precision: auto = bf16/fp16 on CUDA, fp32 elsewhere


def _lr_at(step: int, opts: TokenizerTrainOptions) -> float:
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    progress = (step - opts.warmup) / max(1, opts.steps - opts.warmup)
    return opts.lr * (opts.lr_min_ratio + (1 - opts.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# Quantiser statistics that every rank computes from the global batch (logged once, not summed over ranks).
_GLOBAL_STATS = ("levels", "reset_share", "perplexity0")


def _to_tensor(x, device):
    return torch.as_tensor(np.ascontiguousarray(x), device=device)


# ----------------------------------------------------------------------------------------------------------
# Validation

_BODY_JOINTS = [j for j in range(55) if j not in (23, 24)]  # eyes are not modelled


@torch.no_grad()
def validate(tokset: TokenizerSet, val: MotionWindows, device, batch_size: int = 32) -> dict:
    """Reconstruct the validation windows (encode -> all levels -> decode) and measure, in physical units:
    mpjpe_mm (53 joints, root-relative, pelvis at rest), per-part mpjpe, expression MSE, jaw angle error,
    height / root-velocity error, foot-contact accuracy, and the normalised reconstruction loss per part."""
    if len(val) == 0:
        return {}
    tokset.eval()
    errs: dict[str, list] = {k: [] for k in ("mpjpe", *[f"mpjpe_{p}" for p in ("upper", "hands", "lower")],
                                             "expr_mse", "jaw_deg", "height_mm", "root_vel_mm_s", "contact_acc")}
    rec_loss = {p: [] for p in PARTS}
    for lo in range(0, len(val), batch_size):
        b = val.batch(range(lo, min(len(val), lo + batch_size)))
        gt = {p: _to_tensor(b["parts"][p], device) for p in PARTS}
        rec = {}
        for p in PARTS:
            x = tokset.normalize(p, gt[p])
            y = tokset[p].decode(tokset[p].encode(x))
            rec_loss[p].append(float(torch.nn.functional.smooth_l1_loss(y, x, beta=0.1)))
            rec[p] = tokset.denormalize(p, y)
        pos_r = _fk(parts_to_motion337(rec))
        pos_t = _fk(parts_to_motion337(gt))
        dist = (pos_r - pos_t).norm(dim=-1) * 1000.0                      # (B, T, 55) mm
        errs["mpjpe"].append(dist[..., _BODY_JOINTS].mean().item())
        for p in ("upper", "hands", "lower"):
            errs[f"mpjpe_{p}"].append(dist[..., list(PART_ROT_JOINTS[p])].mean().item())
        errs["expr_mse"].append(((rec["face"][..., FACE_EXPR] - gt["face"][..., FACE_EXPR]) ** 2).mean().item())
        jaw_r, jaw_t = R.rot6d_to_matrix(rec["face"][..., :6]), R.rot6d_to_matrix(gt["face"][..., :6])
        cos = ((jaw_r.transpose(-1, -2) @ jaw_t).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
        errs["jaw_deg"].append(torch.rad2deg(torch.acos(cos.clamp(-1, 1))).mean().item())
        tr_r, tr_t = rec["lower"][..., LOWER_TRANS], gt["lower"][..., LOWER_TRANS]
        errs["height_mm"].append(((tr_r[..., 1] - tr_t[..., 1]).abs() * 1000).mean().item())
        errs["root_vel_mm_s"].append(((tr_r[..., [0, 2]] - tr_t[..., [0, 2]]).norm(dim=-1) * 1000).mean().item())
        c_r, c_t = rec["lower"][..., LOWER_CONTACTS] > 0.5, gt["lower"][..., LOWER_CONTACTS] > 0.5
        errs["contact_acc"].append((c_r == c_t).float().mean().item())
    out = {k: float(np.mean(v)) for k, v in errs.items()}
    out.update({f"rec_{p}": float(np.mean(v)) for p, v in rec_loss.items()})
    out["windows"] = len(val)
    return out


def _fk(motion337: torch.Tensor) -> torch.Tensor:
    """(B, T, 337) -> (B, T, 55, 3) joint positions without translation (root at its rest position)."""
    b, t = motion337.shape[:2]
    mats = R.rot6d_to_matrix(motion337[..., :330].reshape(b, t, 55, 6))
    pos, _ = R.forward_kinematics(mats, REST_JOINTS_YUP, PARENTS)
    return pos


# ----------------------------------------------------------------------------------------------------------
# Training

def _resume_path(out: str) -> str:
    return out + ".resume.pt"


def _training_state(tokset: TokenizerSet) -> dict:
    """Model + EMA codebook state (non-persistent buffers) as plain tensors."""
    state = {}
    for p in PARTS:
        for name, t in tokset[p].state_dict().items():
            state[f"{p}.{name}"] = t.detach().cpu()
        for k, layer in enumerate(tokset[p].quantizer.layers):
            for buf in ("ema_count", "ema_sum", "initialized"):
                state[f"{p}.quantizer.layers.{k}.{buf}"] = getattr(layer, buf).detach().cpu()
    return state


def _load_training_state(tokset: TokenizerSet, state: dict) -> None:
    for p in PARTS:
        sd = {k[len(p) + 1:]: v for k, v in state.items() if k.startswith(p + ".")}
        extra = {}
        for k, layer in enumerate(tokset[p].quantizer.layers):
            for buf in ("ema_count", "ema_sum", "initialized"):
                extra[(layer, buf)] = sd.pop(f"quantizer.layers.{k}.{buf}")
        tokset[p].load_state_dict(sd, strict=True)
        for (layer, buf), v in extra.items():
            getattr(layer, buf).copy_(v)


def train_tokenizers(entries: list[TakeEntry], config: ModelConfig | str, out: str,
                     opts: TokenizerTrainOptions | None = None, resume: bool = False,
                     log_path: str | None = None, progress: bool = True, command: str = "",
                     data_options=None, log=print) -> dict:
    """Train the four tokenizers; writes `out` (safetensors), `<out>.resume.pt` and the JSON-lines log.
    Returns the final validation metrics (and timing)."""
    from .distributed import DistContext
    from .. import precision as amp

    opts = opts or TokenizerTrainOptions()
    config = get_config(config) if isinstance(config, str) else config
    dist = DistContext.from_env(resolve_device(opts.device))
    device = dist.device(resolve_device(opts.device))
    precision = amp.resolve_precision(opts.precision, device)
    main = dist.is_main
    if not main:
        log, progress = (lambda *a, **k: None), False
    ddp = dist if dist.active else None   # passed to the model: global codebook statistics
    local_rows = dist.shard(opts.batch_size)
    if opts.steps < 1:
        raise EchoMaskError("--steps must be at least 1.")
    out = os.fspath(out)
    log_path = log_path or out + ".log.jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)  # only for libraries that use the global state; we use our own generator

    from .streaming import tokenizer_windows

    # In memory (MotionWindows), or streamed from the on-disk store for split data sets / --stream. Rank 0
    # prepares first (it may fill the store); the others then read what it wrote.
    if not main:
        dist.barrier()
    train, val = tokenizer_windows(entries, config, opts.mirror, opts.stretch_factors, data_options, log=log,
                                   progress=progress)
    if main:
        dist.barrier()
    if len(train) == 0:
        raise EchoMaskError(f"The takes are too short for training: each needs at least {config.window} "
                            f"frames ({config.window / config.fps:.1f} s) outside its held-out tail.")
    stats = train.compute_stats()
    tokset = TokenizerSet(config, stats).to(device)
    optim = torch.optim.AdamW(tokset.parameters(), lr=opts.lr, betas=(0.9, 0.99), weight_decay=opts.weight_decay)
    rng = np.random.Generator(np.random.PCG64(opts.seed))
    start_step, elapsed_before = 0, 0.0

    if resume:
        path = _resume_path(out)
        if not os.path.isfile(path):
            raise EchoMaskError(f"Nothing to resume: {path} does not exist (start without --resume).")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("config") != json.dumps(config.to_dict()):
            raise EchoMaskError(f"{path} was made with a different config than '{config.name}'; "
                                f"resume with the same --config or start a new run.")
        _load_training_state(tokset, ckpt["model"])
        tokset.to(device)
        optim.load_state_dict(ckpt["optim"])
        rng.bit_generator.state = json.loads(ckpt["numpy_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        start_step, elapsed_before = int(ckpt["step"]), float(ckpt["elapsed"])
    elif os.path.exists(log_path) and main:
        os.remove(log_path)  # a fresh run starts a fresh log
    # Every rank starts from rank 0's weights and codebook state (identical by seeding; made certain).
    dist.broadcast_tensors([*tokset.parameters(), *tokset.buffers()])
    scaler = amp.grad_scaler(precision, device)
    autocast = amp.autocast(precision, device)

    def rank_difference() -> float:
        """Largest difference of any rank's weights and codebook state from rank 0's (0: in step)."""
        return dist.max_difference_from_main([*tokset.parameters(), *tokset.buffers()])

    def save_resume(step: int, elapsed: float) -> None:
        if not main:
            return
        tmp = _resume_path(out) + ".partial"
        torch.save({"model": _training_state(tokset), "optim": optim.state_dict(), "step": step,
                    "elapsed": elapsed, "numpy_rng": json.dumps(rng.bit_generator.state),
                    "torch_rng": torch.get_rng_state(), "config": json.dumps(config.to_dict())}, tmp)
        os.replace(tmp, _resume_path(out))

    log(f"tokenizers ({config.name}) on {device}"
        + (f" x {dist.world} processes ({dist.backend})" if dist.active else "") + f", precision {precision}")
    log = open(log_path, "a", encoding="utf-8") if main else open(os.devnull, "w")
    log.write(json.dumps({"event": "start", "step": start_step, "config": config.name, "device": str(device),
                          "processes": dist.world, "precision": precision,
                          "train": train.summary(), "val": val.summary(), "options": dataclasses.asdict(opts),
                          "command": command}) + "\n")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=opts.steps, initial=start_step, desc=f"tokenizers ({config.name})", unit="step",
                   dynamic_ncols=True)
    t0 = time.time()
    val_metrics: dict = {}
    tokset.train()
    for step in range(start_step, opts.steps):
        for group in optim.param_groups:
            group["lr"] = _lr_at(step, opts)
        idx = rng.integers(0, len(train), opts.batch_size)   # the global batch, drawn alike on every rank
        batch = train.batch(idx[local_rows])
        weight = torch.as_tensor(batch["weight"], device=device)
        record = {"step": step + 1, "lr": optim.param_groups[0]["lr"]}
        part_logs: dict[str, float] = {}
        trained_parts = []   # parts some window of the global batch teaches (the same list on every rank)
        total = 0.0
        for p in PARTS:
            w = weight * torch.as_tensor(batch["part_mask"][p], dtype=weight.dtype, device=device)
            weight_total = dist.sum(w.sum()) if dist.active else None
            if float(w.sum() if weight_total is None else weight_total) == 0.0:
                continue
            trained_parts.append(p)
            keep = w > 0
            if not bool(keep.any()):  # none of this rank's windows teach the part: join the codebook update
                tokset[p].quantizer.forward_train(torch.zeros(0, tokset[p].cfg.code_dim, device=device), ddp)
                continue
            x = tokset.normalize(p, _to_tensor(batch["parts"][p], device)[keep])
            _, losses = tokset[p](x, w[keep], dist=ddp, weight_total=weight_total, autocast=autocast)
            total = total + losses["total"]
            part_logs.update({f"{p}/{k}": float(v.detach()) for k, v in losses.items()})
        optim.zero_grad(set_to_none=True)
        if torch.is_tensor(total):
            (scaler.scale(total) if scaler is not None else total).backward()
        # The ranks' shares add up to the global gradient. Parts no window taught keep no gradient, so the
        # optimiser leaves them alone as it does in one process.
        dist.sum_gradients([prm for p in trained_parts for prm in tokset[p].parameters()])
        if scaler is not None:
            scaler.unscale_(optim)
        if opts.grad_clip:
            torch.nn.utils.clip_grad_norm_(tokset.parameters(), opts.grad_clip)
        if scaler is not None:
            scaler.step(optim)
            scaler.update()
        else:
            optim.step()
        part_logs["loss"] = float(total.detach()) if torch.is_tensor(total) else 0.0
        if dist.active:   # losses are shares of the global loss (add up); codebook stats are global already
            merged: dict[str, float] = {}
            for rank_logs in dist.gather_objects(part_logs):
                for k, v in rank_logs.items():
                    if k.split("/")[-1] in _GLOBAL_STATS:
                        merged.setdefault(k, v)
                    else:
                        merged[k] = merged.get(k, 0.0) + v
            part_logs = {k: merged[k] for k in sorted(merged, key=lambda k: k == "loss")}  # stable: first seen
        record.update({k: round(v, 6) for k, v in part_logs.items()})
        done = step + 1
        elapsed = elapsed_before + time.time() - t0
        record["elapsed_s"] = round(elapsed, 1)
        if main and (done % opts.val_every == 0 or done == opts.steps):
            val_metrics = validate(tokset, val, device)
            tokset.train()
            record["val"] = {k: round(v, 5) for k, v in val_metrics.items()}
        log.write(json.dumps(record) + "\n")
        log.flush()
        if bar is not None:
            bar.update(1)
            post = {"loss": f"{record['loss']:.3f}"}
            if val_metrics:
                post["val_mm"] = f"{val_metrics.get('mpjpe', float('nan')):.1f}"
            bar.set_postfix(post)
        if done % opts.save_every == 0 or done == opts.steps:
            if dist.active:
                rank_diff = rank_difference()
                if rank_diff > 0:
                    log.write(json.dumps({"event": "ranks_differ", "step": done, "max_diff": rank_diff}) + "\n")
            save_resume(done, elapsed)
    if bar is not None:
        bar.close()
    elapsed = elapsed_before + time.time() - t0
    max_rank_diff = rank_difference()
    if not val_metrics and main:  # resumed at the end: measure anyway
        val_metrics = validate(tokset, val, device)
    meta = {"steps": opts.steps, "seed": opts.seed, "train_seconds": round(elapsed, 1), "device": str(device),
            "batch_size": opts.batch_size, "lr": opts.lr, "command": command, "precision": precision,
            "processes": dist.world,
            "data": [{"take": e.name, "kind": e.kind, "weight": e.weight, "masked_parts": list(e.masked_parts),
                      "holdout": e.holdout, "note": e.note} for e in train.entries],
            "train_windows": len(train), "val_windows": len(val),
            "validation": {k: round(v, 5) for k, v in val_metrics.items()}}
    if main:
        tokset.save(out, meta)
    done_event = {"event": "done", "seconds": round(elapsed, 1), "val": meta["validation"]}
    if dist.active:
        done_event["rank_max_diff"] = max_rank_diff
    log.write(json.dumps(done_event) + "\n")
    log.close()
    dist.barrier()
    return {"seconds": elapsed, **val_metrics}


def run_cli(args) -> int:
    """`python -m core train-tokenizers ...` (see core/jobs/cli.py for the options)."""
    import sys

    from .streaming import DataOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    data_options = DataOptions.from_args(args)
    entries = data_options.manifest(args.manifest)
    opts = TokenizerTrainOptions(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                 device=args.device, val_every=args.val_every, precision=getattr(args, "precision", "auto"),
                                 save_every=min(args.val_every, 250))
    command = "python -m core " + " ".join(sys.argv[1:])
    result = train_tokenizers(entries, args.config, args.out, opts, resume=args.resume,
                              progress=not args.no_progress, command=command, data_options=data_options,
                              log=lambda msg: print(msg, file=sys.stderr))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"Saved {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB) after {result['seconds'] / 60:.1f} min.")
    print("Validation (held-out ground truth): " + ", ".join(
        f"{k} {result[k]:.4g}" for k in ("mpjpe", "mpjpe_upper", "mpjpe_hands", "mpjpe_lower", "expr_mse",
                                         "jaw_deg", "height_mm", "contact_acc") if k in result))
    return 0
