"""Generator training (method §6, stage 2): MAM + masked generator, with frozen RVQ tokenizers.

Each step, on a batch of 64-frame windows (stride 20, mirrored and time-stretched variants):
  * the EMA teacher scores the unmasked motion with its SQA attention; `select_sqa_mask` masks 37.5 % of
    the frames (top share by attention + random share; soft->hard over the first `ramp` share of training),
    never the 4 seed frames;
  * three passes of the student, losses summed: (1) every frame but the seeds masked, speech injection on;
    (2) SQA mask, injection off; (3) SQA mask, injection on. Per pass: token cross-entropy (level weights
    1/(k+1)) + latent MSE of every level's feature against its code vector; plus the MAM losses
    (InfoNCE + MSE). The speech branch depends only on speech, so it runs once per step and its
    conditions feed all three passes;
  * the EMA teacher follows the student.

Speech features are computed once per clip (core.speech, cached by content in a cache folder outside the
data) and sampled at each window's source frames, so a time-stretched window hears its speech stretched
the same way. Ground truth weighs more than published models' outputs (core.data manifests).

Outputs in --out: model.safetensors (tokenizers + generator bundle, core.checkpoint), train_state.pt
(optimizer, EMA, step, RNG; tensors only, read with weights_only=True) + rng.json, train_log.jsonl.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import tempfile
import time

import numpy as np

from .errors import EchoMaskError
from .skeleton import PARTS


@dataclasses.dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 3e-4
    betas: tuple = (0.5, 0.999)     # the paper's Adam betas
    weight_decay: float = 0.0
    warmup: int = 100
    ramp: float = 0.5               # share of training over which masking goes from soft (random) to hard
    random_masking: bool = False    # the paper's key ablation: mask uniformly random frames, no SQA choice
    mse_weight: float = 1.0
    mam_weight: float = 1.0
    grad_clip: float = 1.0
    log_every: int = 10
    val_every: int = 250
    ckpt_every: int = 250
    seed: int = 0
    stop_after: int = 0             # > 0: pause after this step (resumable; the schedule still spans `steps`)
    max_minutes: float = 0.0        # > 0: training-loop time budget (after data preparation): stop and save
    #                                 when spent; the LR schedule and masking ramp then follow the clock


def default_cache_dir() -> str:
    """Speech-feature cache: $ECHOMASK_CACHE or the system temp folder (never inside the data folder)."""
    base = os.environ.get("ECHOMASK_CACHE") or os.path.join(tempfile.gettempdir(), "echomask_cache")
    return os.path.join(base, "speech")


def sample_rows(arr: np.ndarray, pos: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Rows of `arr` (T, C) at fractional frame positions `pos` (linear interpolation or nearest row)."""
    t = len(arr)
    pos = np.clip(np.asarray(pos, np.float64), 0, t - 1)
    if nearest:
        return arr[np.rint(pos).astype(np.int64)]
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, t - 1)
    w = (pos - i0)[:, None].astype(np.float32)
    return arr[i0] * (1 - w) + arr[i1] * w


def builtin_feature_fn(backend: str, cache_dir: str | None):
    def compute(wav_path: str, fps: float):
        from .audio import load_speech
        from .speech import compute_speech_features

        feats = compute_speech_features(load_speech(wav_path), fps=fps, backend=backend, cache_dir=cache_dir)
        return np.asarray(feats.low, np.float32), np.asarray(feats.high, np.float32)
    return compute


class GeneratorData:
    """Windows + their tokens (encoded once by the frozen tokenizers) + speech features per take."""

    def __init__(self, entries, tokenizers, config, feature_fn, split: str, takes=None, log=print,
                 mirror=True, stretch=(0.9, 1.1)):
        import torch

        from .data import MotionWindows

        entries = [e for e in entries if e.wav]
        if not entries:
            raise EchoMaskError("No take in the training data has its speech (.wav) next to it; the "
                                "generator learns speech -> motion and needs both.")
        self.ds = MotionWindows(entries, split, config.window, config.stride, mirror=mirror,
                                stretch_factors=stretch, takes=takes)
        self.entries = entries
        self.speech = {}
        for tid, e in enumerate(entries):
            if any(self.ds.variants[v].take_id == tid for v in range(len(self.ds.variants))):
                self.speech[tid] = feature_fn(e.wav, self.ds.takes[tid].fps)
        n = len(self.ds)
        self.codes = {}
        if n:
            with torch.no_grad():
                for p in PARTS:
                    chunks = []
                    for lo in range(0, n, 256):
                        idx = range(lo, min(n, lo + 256))
                        x = np.stack([self.ds.features[self.ds.windows[i].variant][p][
                            self.ds.windows[i].start:self.ds.windows[i].start + config.window] for i in idx])
                        x = tokenizers.normalize(p, torch.from_numpy(x))
                        chunks.append(tokenizers[p].encode(x).cpu())
                    self.codes[p] = torch.cat(chunks)
        log(f"{self.ds.summary()}")

    def __len__(self):
        return len(self.ds)

    def batch(self, idx, device):
        import torch

        from .motion_repr import parts_to_motion337

        raw = self.ds.batch(idx)
        parts = raw["parts"]
        motion = parts_to_motion337(parts)
        lows, highs = [], []
        for i in idx:
            tid = self.ds.variants[self.ds.windows[int(i)].variant].take_id
            low, high = self.speech[tid]
            pos = self.ds.source_frames(int(i))
            lows.append(sample_rows(low, pos))
            highs.append(sample_rows(high, pos, nearest=True))
        t = lambda a, dt=torch.float32: torch.as_tensor(np.asarray(a), dtype=dt, device=device)
        return {
            "motion": t(motion), "low": t(np.stack(lows)), "high": t(np.stack(highs)),
            "codes": {p: self.codes[p][torch.as_tensor(np.asarray(idx))].to(device) for p in PARTS},
            "part_mask": {p: t(raw["part_mask"][p], torch.bool) for p in PARTS},
            "weight": t(raw["weight"]),
        }

    def speech_stats(self):
        low = np.concatenate([v[0] for v in self.speech.values()])
        high = np.concatenate([v[1] for v in self.speech.values()])
        return low.mean(0), low.std(0), high.mean(0), high.std(0)


def full_mask(b: int, t: int, seed_frames: int, device):
    import torch

    mask = torch.ones(b, t, dtype=torch.bool, device=device)
    mask[:, :seed_frames] = False
    return mask


def training_step(student, teacher, tokenizers, batch, tcfg: TrainConfig, progress: float, generator=None):
    """Loss of one batch (three passes + MAM); returns (loss tensor, dict of floats)."""
    import torch

    from .model.generator import generator_losses
    from .model.sqa import hardness, select_sqa_mask

    g = student.module if hasattr(student, "module") else student
    gcfg_ratio, gcfg_top = g.mask_ratio, g.top_share  # config values, kept on the generator
    motion, low, high = batch["motion"], batch["low"], batch["high"]
    b, t, _ = motion.shape
    codes = batch["codes"]
    vectors = {p: tokenizers[p].latent_per_level(codes[p]).detach() for p in PARTS}
    latents = {p: vectors[p].sum(2) for p in PARTS}

    with torch.no_grad():
        scores = teacher.sqa_scores(motion, low, high)
    h = hardness(progress, tcfg.ramp) if tcfg.ramp > 0 else 1.0
    top = 0.0 if tcfg.random_masking else gcfg_top  # ablation: the whole masked share is random
    sqa_mask = select_sqa_mask(scores, gcfg_ratio, top, generator, g.seed_frames, h)
    fmask = full_mask(b, t, g.seed_frames, motion.device)

    cond = g.mam.speech_branch(low, high)
    mam = g.mam.losses(cond, latents, batch["part_mask"])
    loss = tcfg.mam_weight * (mam["mam_nce"] + mam["mam_mse"])
    logs = {"mam_nce": float(mam["mam_nce"].detach()), "mam_mse": float(mam["mam_mse"].detach()), "hardness": h}
    # The three passes run as one batch of 3B windows (same result as three calls, fewer kernel launches).
    passes = (("full", fmask, True), ("sqa_noinj", sqa_mask, False), ("sqa_inj", sqa_mask, True))
    cat = lambda x: torch.cat([x] * len(passes))
    inject = torch.cat([torch.full((b,), flag, dtype=torch.bool, device=motion.device) for _, _, flag in passes])
    out = g(cat(motion), torch.cat([m for _, m, _ in passes]), None, None, inject=inject,
            cond={p: cat(c) for p, c in cond.items()})
    for i, (name, _, _) in enumerate(passes):
        sl = slice(i * b, (i + 1) * b)
        part_out = {"logits": {p: v[sl] for p, v in out["logits"].items()},
                    "features": {p: v[sl] for p, v in out["features"].items()}}
        l = generator_losses(part_out, codes, vectors, batch["weight"], batch["part_mask"])
        loss = loss + l["token_ce"] + tcfg.mse_weight * l["latent_mse"]
        logs[f"{name}_ce"] = float(l["token_ce"].detach())
        logs[f"{name}_mse"] = float(l["latent_mse"].detach())
        logs[f"{name}_acc0"] = float(l["acc_level0"])
    logs["loss"] = float(loss.detach())
    return loss, logs


def evaluate(model, tokenizers, data: GeneratorData, device, batch_size=32, max_windows=256) -> dict:
    """Validation on held-out ground-truth windows: the inference condition (all but the 4 seed frames
    masked, speech injected): token CE, latent MSE, token accuracy (level 0 and all levels), and the
    joint-rotation error (degrees) of the decoded prediction against the ground truth on masked frames."""
    import torch

    from . import rotations as R
    from .model.generator import generator_losses
    from .motion_repr import PART_ROT_DIMS

    n = min(len(data), max_windows)
    if n == 0:
        return {}
    was_training = model.training
    model.eval()
    sums, count = {}, 0
    rot_err, rot_n = 0.0, 0
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            idx = np.arange(lo, min(n, lo + batch_size))
            batch = data.batch(idx, device)
            codes = batch["codes"]
            vectors = {p: tokenizers[p].latent_per_level(codes[p]) for p in PARTS}
            b, t, _ = batch["motion"].shape
            out = model(batch["motion"], full_mask(b, t, model.seed_frames, device), batch["low"], batch["high"])
            l = generator_losses(out, codes, vectors, batch["weight"], batch["part_mask"])
            for k, v in l.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
            count += len(idx)
            pred = {p: out["logits"][p].argmax(-1) for p in PARTS}
            dec = tokenizers.decode_parts(pred)
            gt = data.ds.batch(idx)["parts"]
            for p in ("upper", "hands", "lower"):
                k = PART_ROT_DIMS[p]
                a = R.rot6d_to_matrix(dec[p][:, model.seed_frames:, :k].reshape(-1, 6).cpu().double())
                bb = R.rot6d_to_matrix(torch.as_tensor(gt[p][:, model.seed_frames:, :k]).reshape(-1, 6).double())
                cos = ((a.transpose(-1, -2) @ bb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
                rot_err += float(torch.rad2deg(torch.acos(cos.clamp(-1, 1))).sum())
                rot_n += cos.numel()
    model.train(was_training)
    res = {f"val_{k}": v / count for k, v in sums.items()}
    res["val_rot_err_deg"] = rot_err / max(rot_n, 1)
    res["val_windows"] = count
    return res


def _lr_at(step: int, tcfg: TrainConfig, progress: float | None = None) -> float:
    """Warm-up, then cosine decay to 10 % over training `progress` (0..1; default step / steps)."""
    if step < tcfg.warmup:
        return tcfg.lr * (step + 1) / tcfg.warmup
    prog = (step - tcfg.warmup) / max(1, tcfg.steps - tcfg.warmup) if progress is None else progress
    return tcfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))


def _progress(step: int, tcfg: TrainConfig, train_started: float) -> float:
    """Share of training done: by steps, or by time when --max-minutes is set and comes first (the LR
    schedule and the soft->hard masking ramp then follow the clock, so such runs are not bit-repeatable)."""
    prog = step / max(1, tcfg.steps)
    if tcfg.max_minutes > 0:
        prog = max(prog, (time.time() - train_started) / 60 / tcfg.max_minutes)
    return min(1.0, prog)


def train_generator(manifest, config_name: str, tokenizers_path: str, out_dir: str, tcfg: TrainConfig,
                    device: str = "auto", resume: bool = False, feature_fn=None, log=print,
                    progress_bar: bool = True, cache_dir: str | None = None) -> dict:
    """Train (or resume) a generator; returns the final validation metrics and paths."""
    import torch

    from .checkpoint import load_model, save_model
    from .data import resolve_manifest
    from .devices import resolve_device
    from .model.config import get_config
    from .model.ema import EMATeacher
    from .model.generator import EchoMaskGenerator, count_parameters
    from .model.tokenizer import TokenizerSet

    started = time.time()
    dev = resolve_device(device)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path, state_path, rng_path = out / "model.safetensors", out / "train_state.pt", out / "rng.json"
    log_path = out / "train_log.jsonl"
    entries = resolve_manifest(manifest) if isinstance(manifest, str) else list(manifest)

    config = get_config(config_name)
    tokenizers = TokenizerSet.load(tokenizers_path, expected_config=config).to(dev).eval()
    for prm in tokenizers.parameters():
        prm.requires_grad_(False)
    if feature_fn is None:
        feature_fn = builtin_feature_fn(config.generator.speech_backend, cache_dir or default_cache_dir())

    torch.manual_seed(tcfg.seed)
    np_rng = np.random.default_rng(tcfg.seed)
    mask_gen = torch.Generator().manual_seed(tcfg.seed + 1)

    t0 = time.time()
    train = GeneratorData(entries, tokenizers, config, feature_fn, "train", log=log)
    val = GeneratorData(entries, tokenizers, config, feature_fn, "val", takes=train.ds.takes, log=log)
    if len(train) == 0:
        raise EchoMaskError("No training window: takes must be longer than 64 frames (2.1 s).")
    log(f"data ready in {time.time() - t0:.0f} s")

    model = EchoMaskGenerator(config)
    lm, ls, hm, hs = train.speech_stats()
    model.mam.speech_low.set_stats(lm, ls)
    model.mam.speech_high.set_stats(hm, hs)
    model.to(dev)
    teacher = EMATeacher(model, config.generator.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=tuple(tcfg.betas), weight_decay=tcfg.weight_decay)
    step = 0
    if resume and state_path.exists() and model_path.exists():
        saved = load_model(model_path, expected_config=config_name)
        model.load_state_dict(saved.generator.state_dict())
        state = torch.load(state_path, map_location=dev, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        teacher.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        mask_gen.set_state(state["mask_rng"])
        step = int(state["step"])
        np_rng.bit_generator.state = json.loads(rng_path.read_text())
        log(f"resumed at step {step}")
    elif log_path.exists() and not resume:
        log_path.unlink()
    teacher.model.to(dev)
    log(f"generator '{config_name}': {count_parameters(model) / 1e6:.2f} M parameters on {dev}; "
        f"{len(train)} training windows, {len(val)} validation windows")

    info_base = {"config": config_name, "tokenizers": os.path.basename(tokenizers_path), "seed": tcfg.seed,
                 "train_windows": len(train), "val_windows": len(val), "train_config": dataclasses.asdict(tcfg),
                 "takes": [{"name": e.name, "kind": e.kind, "weight": e.weight, "note": e.note} for e in train.entries]}

    def save(final=False, metrics=None):
        info = dict(info_base, step=step, final=final and step >= tcfg.steps, train_seconds=round(time.time() - started, 1))
        if metrics:
            info["val"] = metrics
        save_model(model_path, config, tokenizers, model, info)
        torch.save({"optimizer": opt.state_dict(), "ema": teacher.state_dict(), "torch_rng": torch.get_rng_state(),
                    "mask_rng": mask_gen.get_state(), "step": torch.tensor(step)}, str(state_path) + ".partial")
        os.replace(str(state_path) + ".partial", state_path)
        rng_path.write_text(json.dumps(np_rng.bit_generator.state))

    bar = None
    if progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=tcfg.steps, initial=step, desc="train generator", unit="step", dynamic_ncols=True)
    model.train()
    metrics, last_val = {}, -1
    stopped_early = False
    train_started = time.time()
    with open(log_path, "a") as logf:
        while step < tcfg.steps and not (tcfg.stop_after and step >= tcfg.stop_after):
            if tcfg.max_minutes > 0 and (time.time() - train_started) / 60 > tcfg.max_minutes:
                stopped_early = True
                log(f"time limit of {tcfg.max_minutes} min reached at step {step}; stopping")
                break
            idx = np_rng.integers(0, len(train), tcfg.batch_size)
            batch = train.batch(idx, dev)
            prog = _progress(step, tcfg, train_started)
            lr = _lr_at(step, tcfg, prog if tcfg.max_minutes > 0 else None)
            for grp in opt.param_groups:
                grp["lr"] = lr
            loss, logs = training_step(model, teacher.model, tokenizers, batch, tcfg, prog, mask_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            opt.step()
            teacher.update(model)
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.3f}", acc0=f"{logs['full_acc0']:.2f}")
            if step % tcfg.log_every == 0 or step == tcfg.steps:
                logf.write(json.dumps({"step": step, "split": "train", "lr": lr, "progress": round(prog, 4),
                                       "time": round(time.time() - started, 1), **logs}) + "\n")
                logf.flush()
            if step % tcfg.val_every == 0 or step == tcfg.steps:
                metrics, last_val = evaluate(model, tokenizers, val, dev), step
                logf.write(json.dumps({"step": step, "split": "val", "time": round(time.time() - started, 1),
                                       **metrics}) + "\n")
                logf.flush()
                if bar is not None and metrics:
                    bar.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                                           if isinstance(v, float)))
            if step % tcfg.ckpt_every == 0:
                save(metrics=metrics)
        if last_val != step:
            metrics = evaluate(model, tokenizers, val, dev)
            logf.write(json.dumps({"step": step, "split": "val", "time": round(time.time() - started, 1),
                                   **metrics}) + "\n")
    if bar is not None:
        bar.close()
    save(final=True, metrics=metrics)
    log(f"saved {model_path} after {step} steps ({(time.time() - started) / 60:.1f} min)")
    return {"model": str(model_path), "steps": step, "val": metrics, "minutes": (time.time() - started) / 60}


def run_cli(args) -> int:
    """`python -m core train ...`"""
    if args.threads and args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    tcfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       val_every=args.val_every, ckpt_every=args.val_every, max_minutes=args.max_minutes,
                       ramp=args.ramp, random_masking=args.random_masking)
    res = train_generator(args.manifest, args.config, args.tokenizers, args.out, tcfg, device=args.device,
                          resume=args.resume, progress_bar=not args.no_progress)
    val = res.get("val") or {}
    print(f"Trained {res['steps']} steps in {res['minutes']:.1f} min -> {res['model']}")
    if val:
        print("validation: " + ", ".join(f"{k}={v:.4f}" for k, v in val.items() if isinstance(v, float)))
    return 0
