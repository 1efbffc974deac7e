"""Stage 3 (ours): the speech face head (core.model.face_head) on a trained, frozen EchoMask model.

Each step takes a batch of 64-frame training windows (the generator's windows: mirrored and time-stretched
variants, the speech sampled at each window's source frames), standardises the speech as the frozen MAM does
(and, with `use_cond`, runs its speech branch for the face's motion-aligned feature) and regresses the window's
face features (normalised by the face tokenizer's
statistics) with an MSE on values and on frame-to-frame velocity (a mouth that is right on average but
lags or smears its openings is the failure to avoid). Windows whose face is missing (CHGS's zero face)
do not teach. Early stopping on the validation windows (the held-out tails) by the same loss.

Writes OUT/face_head.safetensors: the input bundle with the head's tensors and info["face_head"] (config,
steps, validation loss) added; train_log.jsonl beside it. Minutes on 2 CPU cores.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import numpy as np

from ..errors import EchoMaskError


@dataclasses.dataclass
class FaceHeadTrainConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    velocity_weight: float = 1.0    # weight of the MSE of frame-to-frame differences (normalised units)
    val_every: int = 100
    patience: int = 5
    speech_aug: float = 0.3         # the generator's speech augmentation (train.augment_speech)
    seed: int = 0


def face_batch(data, idx, device):
    """{'low', 'high' (B, T, ·) raw speech rows, 'face' (B, T, 106) face features, 'weight' (B,)}: windows
    `idx` of a GeneratorData, the face's weight 0 where the take's face is missing."""
    import torch

    raw = data.ds.batch(idx)
    lows, highs = data.speech_rows(idx)
    w = raw["weight"] * raw["part_mask"]["face"].astype(np.float32)
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=device)
    return {"low": t(lows), "high": t(highs), "face": t(raw["parts"]["face"]), "weight": t(w)}


def head_inputs(mam, low, high, use_cond: bool):
    """(cond_face or None, standardised low, standardised high) for the head; the MAM is frozen, and its speech
    branch runs only for a head that reads `cond_face`."""
    import torch

    from ..model.face_head import standardised_speech

    with torch.no_grad():
        cond = mam.speech_branch(low, high)["face"] if use_cond else None
        sl, sh = standardised_speech(mam, low, high)
    return cond, sl, sh


def face_head_loss(pred, target, weight, velocity_weight: float):
    """Weighted MSE on values + on velocities; pred/target (B, T, D) normalised, weight (B,)."""
    per = (pred - target).pow(2).mean((1, 2))
    vel = ((pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])).pow(2).mean((1, 2))
    denom = weight.sum().clamp_min(1e-6)
    return ((per + velocity_weight * vel) * weight).sum() / denom


def jaw_opening(face: np.ndarray) -> np.ndarray:
    """(..., T, 106) raw face features -> (..., T) jaw rotation angle (radians): how far the mouth opens."""
    from ..motion import rotations as R

    return np.linalg.norm(R.rot6d_to_axis_angle(np.asarray(face[..., :6], np.float64)), axis=-1)


def train_face_head(weights: str, out_dir: str, cfg: FaceHeadTrainConfig, manifest="shared", data_options=None,
                    log=print, threads: int = 0, head_overrides=None, feature_fn=None) -> dict:
    """Train a speech face head for the model in `weights` (kept frozen); writes OUT/face_head.safetensors
    (the model with the head) and OUT/train_log.jsonl. `manifest`: as `train`'s (a spec string, e.g. 'shared',
    or a list of TakeEntry); data_options: core.training.streaming.DataOptions (model_output_weight 0.6 unless
    given, the share the bundled generator was trained with)."""
    import torch

    from ..model.checkpoint import load_model
    from ..model.face_head import FaceHeadConfig, SpeechFaceHead
    from .generator_data import GeneratorData, builtin_feature_fn, default_cache_dir
    from .streaming import DataOptions, uses_store
    from .train import augment_speech

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    mdl = load_model(weights)
    gen, tok, mcfg = mdl.generator, mdl.tokenizers, mdl.config
    for prm in gen.parameters():
        prm.requires_grad_(False)
    gen.eval()
    data_options = data_options or DataOptions()
    if data_options.model_output_weight is None:
        data_options = dataclasses.replace(data_options, model_output_weight=0.6)
    entries = data_options.manifest(manifest) if isinstance(manifest, str) else list(manifest)
    if uses_store(entries, data_options):
        raise EchoMaskError("The face head trains from memory: a split data set or --stream is not supported; "
                            "give a folder of takes or --manifest shared.")
    features = feature_fn or builtin_feature_fn(mcfg.generator.speech_backend, default_cache_dir())
    train = GeneratorData(entries, tok, mcfg, features, "train", log=log)
    val = GeneratorData(entries, tok, mcfg, features, "val", takes=train.ds.takes, log=log)
    if len(train) == 0 or len(val) == 0:
        raise EchoMaskError("No training or validation window with speech: the face head needs both.")
    head_cfg = FaceHeadConfig(cond_dim=gen.mam.d, low_dim=gen.low_dim, high_dim=gen.high_dim, **(head_overrides or {}))
    head = SpeechFaceHead(head_cfg)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) *
                                              0.5 * (1 + np.cos(np.pi * min(1.0, s / cfg.steps))))
    norm = lambda x: tok.normalize("face", x)
    val_batches = [face_batch(val, np.arange(i, min(len(val), i + 64)), "cpu") for i in range(0, len(val), 64)]
    val_inputs = [(head_inputs(gen.mam, b["low"], b["high"], head_cfg.use_cond), norm(b["face"]), b["weight"]) for b in val_batches]

    val_jaw = np.concatenate([jaw_opening(b["face"].numpy()).ravel() for b in val_batches])

    def validate():
        """(validation loss, correlation of the predicted jaw opening with the capture's)."""
        head.eval()
        with torch.no_grad():
            tot, wsum, jaw = 0.0, 0.0, []
            for (c, sl, sh), target, w in val_inputs:
                pred = head(c, sl, sh)
                loss = face_head_loss(pred, target, w, cfg.velocity_weight)
                tot, wsum = tot + float(loss) * float(w.sum()), wsum + float(w.sum())
                jaw.append(jaw_opening(tok.denormalize("face", pred).numpy()).ravel())
        head.train()
        return tot / max(wsum, 1e-6), float(np.corrcoef(np.concatenate(jaw), val_jaw)[0, 1])

    with torch.no_grad():   # the still-face baseline: the training mean face on every frame (0 normalised)
        still = sum(float(face_head_loss(torch.zeros_like(t), t, w, cfg.velocity_weight)) * float(w.sum())
                    for _, t, w in val_inputs) / max(sum(float(w.sum()) for _, _, w in val_inputs), 1e-6)
    log(f"validation loss of the still (training mean) face: {still:.4f}")

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train_log.jsonl"
    best, best_step, best_state, bad = float("inf"), 0, None, 0
    t0 = time.time()
    history = []
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    for step in range(1, cfg.steps + 1):
        idx = rng.choice(len(train), cfg.batch_size, replace=False)
        b = face_batch(train, idx, "cpu")
        if cfg.speech_aug > 0:
            b = augment_speech(gen, b, cfg.speech_aug, aug_gen)
        c, sl, sh = head_inputs(gen.mam, b["low"], b["high"], head_cfg.use_cond)
        loss = face_head_loss(head(c, sl, sh), norm(b["face"]), b["weight"], cfg.velocity_weight)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % cfg.val_every == 0 or step == cfg.steps:
            v, jaw_corr = validate()
            rec = {"step": step, "train_loss": float(loss.detach()), "val_loss": v, "val_jaw_corr": jaw_corr,
                   "minutes": (time.time() - t0) / 60}
            history.append(rec)
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            log(f"step {step}: train {float(loss.detach()):.4f}  val {v:.4f}  jaw corr {jaw_corr:.3f}" +
                ("  (best)" if v < best else ""))
            if v < best:
                best, best_step, best_corr, bad = v, step, jaw_corr, 0
                best_state = {k: t.detach().clone() for k, t in head.state_dict().items()}
            else:
                bad += 1
                if cfg.patience and bad >= cfg.patience:
                    log(f"early stop: no better validation for {bad} checks")
                    break
    head.load_state_dict(best_state)
    info = {"config": head_cfg.to_dict(), "train": dataclasses.asdict(cfg), "best_step": best_step,
            "val_loss": best, "val_jaw_corr": best_corr, "val_loss_still_face": still,
            "minutes": (time.time() - t0) / 60, "weights": os.path.basename(weights)}
    path = out / "face_head.safetensors"
    from ..model.checkpoint import write_face_head

    write_face_head(weights, path, head, info)
    log(f"face head: best validation {best:.4f} at step {best_step}; wrote {path}")
    return {"path": str(path), **info, "history": history}


def run_cli(args) -> int:
    from .streaming import DataOptions

    cfg = FaceHeadTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              val_every=args.val_every, patience=args.patience)
    res = train_face_head(args.weights, args.out, cfg, args.manifest, DataOptions.from_args(args),
                          threads=args.threads)
    print(f"Validation (held-out windows): loss {res['val_loss']:.4f} (a still face: {res['val_loss_still_face']:.4f}), "
          f"jaw opening correlation {res['val_jaw_corr']:.3f}.")
    print(f"Generate with it: python -m core generate SPEECH --weights {res['path']}  "
          f"(or copy it over the weights file you use).")
    return 0
