"""Training the project's FGD evaluator (`python -m core train-fgd-evaluator`).

Data: ground-truth takes (weighted up) with their last `holdout_tail` share held out for validation and
evaluation, plus secondary takes (published models' outputs) used whole except the tails of clips that are
also ground-truth clips; every take also mirrored left/right. Random 64-frame windows, Adam, cosine decay,
loss = MSE of the normalised rot6d + MSE of its frame-to-frame velocity. Seeded: the same command on the
same data and torch version gives the same weights on CPU.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from ..motion.skeleton import MIRROR_INDEX, NUM_JOINTS
from ..motion.take import Take, load_take
from .takeset import TAKE_EXTENSIONS, collect, tail_start


@dataclasses.dataclass(frozen=True)
class FGDTrainingConfig:
    steps: int = 1500
    batch: int = 32
    window: int = 64
    lr: float = 2e-3
    velocity_weight: float = 1.0
    gt_weight: float = 3.0          # ground-truth windows are drawn this much more often per frame
    holdout_tail: float = 0.15      # last share of each ground-truth clip kept out of training
    seed: int = 0
    log_every: int = 250


def mirror_poses(poses: np.ndarray) -> np.ndarray:
    """Left/right mirror of (N, 165) axis-angle (x -> -x): swap joints, (x, y, z) -> (x, -y, -z).
    Same convention as core.motion.motion_repr.mirror_take."""
    aa = poses.reshape(-1, NUM_JOINTS, 3)[:, list(MIRROR_INDEX)].copy()
    aa[..., 1:] *= -1.0
    return aa.reshape(poses.shape)


@dataclasses.dataclass
class _Clip:
    rot6d: np.ndarray   # (N, 55, 6)
    weight: float
    name: str


def build_clips(gt_paths: list[str], extra_paths: list[str], cfg: FGDTrainingConfig
                ) -> tuple[list[_Clip], list[_Clip], list[str]]:
    """(training clips incl. mirrors, validation clips = ground-truth tails, description lines)."""
    from .fgd_evaluator import take_rot6d

    gt = collect(gt_paths, TAKE_EXTENSIONS, "ground-truth take")
    extra = collect(extra_paths, TAKE_EXTENSIONS, "secondary take")
    train, val, lines = [], [], []
    for group, files, weight in (("ground truth", gt, cfg.gt_weight), ("secondary", extra, 1.0)):
        for cid, path in sorted(files.items()):
            take = load_take(path)
            cut = tail_start(take.num_frames, cfg.holdout_tail) if (cid in gt) else take.num_frames
            head = take.slice(0, cut)
            for mirrored in (False, True):
                t = head if not mirrored else Take(poses=mirror_poses(head.poses), trans=head.trans,
                                                   expressions=head.expressions, fps=head.fps)
                if t.num_frames >= cfg.window:
                    train.append(_Clip(take_rot6d(t), weight, f"{cid}{' (mirrored)' if mirrored else ''}"))
            if group == "ground truth" and cut < take.num_frames:
                val.append(_Clip(take_rot6d(take.slice(cut, take.num_frames)), 1.0, f"{cid} tail"))
            used = f"frames 0-{cut} of {take.num_frames}" if cut < take.num_frames else f"all {take.num_frames} frames"
            lines.append(f"{group}: {os.path.relpath(path)} ({used})")
    if not train:
        raise ValueError("no take is long enough to train the FGD evaluator on")
    return train, val, lines


def train_fgd_evaluator(gt_paths: list[str], extra_paths: list[str], out_path: str,
                        cfg: FGDTrainingConfig = FGDTrainingConfig(), command: str = "",
                        log=print) -> dict:
    import torch

    from .fgd_evaluator import FGDEvaluator, FGDEvaluatorConfig, save_evaluator

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train, val, lines = build_clips(gt_paths, extra_paths, cfg)
    for line in lines:
        log("  " + line)
    model = FGDEvaluator(FGDEvaluatorConfig())
    frames = np.concatenate([c.rot6d.reshape(len(c.rot6d), -1) for c in train], axis=0).astype(np.float64)
    model.mean.copy_(torch.as_tensor(frames.mean(0), dtype=torch.float32))
    model.std.copy_(torch.as_tensor(np.maximum(frames.std(0), 0.02), dtype=torch.float32))  # eyes are constant

    starts = [len(c.rot6d) - cfg.window + 1 for c in train]
    probs = np.array([s * c.weight for s, c in zip(starts, train)], np.float64)
    probs /= probs.sum()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr * 0.05)

    def loss_of(batch):
        rec, target = model(batch)
        vel = torch.nn.functional.mse_loss(rec[:, 1:] - rec[:, :-1], target[:, 1:] - target[:, :-1])
        return torch.nn.functional.mse_loss(rec, target) + cfg.velocity_weight * vel

    @torch.no_grad()
    def validate():
        model.eval()
        losses = []
        for clip in val:
            n = len(clip.rot6d) - len(clip.rot6d) % 4
            losses.append(float(loss_of(torch.as_tensor(clip.rot6d[:n])[None])))
        model.train()
        return float(np.mean(losses)) if losses else float("nan")

    log(f"training {sum(p.numel() for p in model.parameters())} parameters on {len(train)} clips "
        f"({len(frames)} frames incl. mirrors), {cfg.steps} steps of {cfg.batch} x {cfg.window} frames, "
        f"seed {cfg.seed}, {torch.get_num_threads()} CPU threads")
    t0 = time.time()
    history = []
    model.train()
    running, since = 0.0, 0
    for step in range(1, cfg.steps + 1):
        picks = rng.choice(len(train), size=cfg.batch, p=probs)
        batch = np.stack([train[i].rot6d[s:s + cfg.window] for i in picks
                          for s in [rng.integers(0, starts[i])]])
        loss = loss_of(torch.as_tensor(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        since += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            elapsed = time.time() - t0
            eta = elapsed / step * (cfg.steps - step)
            val_loss = validate()
            history.append({"step": step, "train": running / since, "val": val_loss})
            log(f"step {step}/{cfg.steps}  train {running / since:.4f}  held-out GT tails {val_loss:.4f}  "
                f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s")
            running, since = 0.0, 0
            sys.stdout.flush()
    info = {
        "training_command": command,
        "training_config": dataclasses.asdict(cfg),
        "training_data": lines,
        "training_frames": int(len(frames)),
        "validation_loss": history[-1]["val"] if history else None,
        "training_seconds": round(time.time() - t0, 1),
        "torch_version": torch.__version__,
    }
    save_evaluator(model, out_path, info)
    log(f"wrote {out_path} ({os.path.getsize(out_path) / 1e6:.2f} MB)")
    return {"history": history, **info}
