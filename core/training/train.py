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
the same way. Ground truth weighs more than published models' outputs (core.training.data manifests).

Outputs in --out: model.safetensors (tokenizers + generator bundle, core.model.checkpoint), train_state.pt
(optimizer, EMA, step, sampler position, RNG; tensors only, read with weights_only=True), best.safetensors (the best
validation score so far, the early-stopping choice) and train_log.jsonl (losses, validation, probes, baselines).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time

import numpy as np

from ..errors import EchoMaskError
from .generator_data import GeneratorData, builtin_feature_fn, default_cache_dir, sample_rows  # noqa: F401
from ..motion.skeleton import PARTS


@dataclasses.dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3                # the paper: 5e-5 with (0.5, 0.999) for 400 epochs of hours of data
    betas: tuple = (0.9, 0.99)      # beta1 0.9: with the paper's 0.5 the model sat on a plateau here
    weight_decay: float = 0.0
    warmup: int = 50
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
    patience: int = 0               # > 0: stop when this many validations in a row bring no better score
    score: tuple = ("vis4", "vis24")  # early-stopping score: validation level-0 CE of these probe conditions
    score_parts: tuple = ("upper", "hands", "lower")
    speech_aug: float = 0.0         # speech feature augmentation: noise (x std), time masks, mel-band masks
    speech_contrast: float = 0.0    # > 0: weight of the speech-contrast hinge (ours, off by default): the body's
    #                                 level-0 CE under another window's speech must exceed its CE under its own
    #                                 speech by `contrast_margin` nats (a 4th, fully masked pass; under DDP
    #                                 the hinge is averaged over each rank's windows, not the global batch)
    contrast_margin: float = 0.3
    speech_dropout: float = 0.0     # > 0: share of windows whose three passes see no speech (zero MAM
    #                                 conditions; the MAM losses keep it): what classifier-free guidance at
    #                                 decoding (GenerationOptions.guidance) contrasts the speech with
    precision: str = "auto"         # core.precision: auto = bf16 (else fp16 + loss scaling) on CUDA, fp32 elsewhere


def full_mask(b: int, t: int, seed_frames: int, device):
    import torch

    mask = torch.ones(b, t, dtype=torch.bool, device=device)
    mask[:, :seed_frames] = False
    return mask


def choose_sqa_masks(teacher, batch, tcfg: TrainConfig, progress: float, generator, dist=None):
    """The SQA-pass mask of every window of the batch (B, T) bool: the EMA teacher's attention on the
    unmasked motion chooses the top share, the rest is random. With several processes the scores are
    gathered first and every rank draws the masks of the whole global batch from the same generator, then
    keeps its own rows (so masks do not depend on how the batch is split)."""
    import torch

    from ..model.sqa import hardness, select_sqa_mask

    g = teacher
    motion, low, high = batch["motion"], batch["low"], batch["high"]
    with torch.no_grad():
        scores = teacher.sqa_scores(motion, low, high)
    if dist is not None:
        scores = dist.gather_rows(scores)
    b = scores.shape[0]
    h = hardness(progress, tcfg.ramp) if tcfg.ramp > 0 else 1.0
    top = 0.0 if tcfg.random_masking else g.top_share  # ablation: the whole masked share is random
    ratios = None
    if g.mask_schedule == "cosine":  # a masked share per window, so any share of hidden tokens is practised
        ratios = torch.cos(0.5 * math.pi * torch.rand(b, generator=generator))
    mask = select_sqa_mask(scores, g.mask_ratio, top, generator, g.seed_frames, h, unit=g.mask_unit, ratios=ratios)
    if dist is not None:
        mask = mask[dist.shard(b)]
    return mask, h


class TrainingLoss:
    """Everything of one step that needs gradients (the MAM losses and the three passes), as one module
    call so that DistributedDataParallel can wrap it. Built lazily (torch is imported on first use)."""

    @staticmethod
    def module(generator, tcfg: TrainConfig):
        import torch

        class _Loss(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.generator = generator

            def forward(self, batch, sqa_mask, norms):
                return _three_pass_loss(self.generator, batch, sqa_mask, norms, tcfg)

        return _Loss()


def loss_norms(batch, dist=None) -> dict:
    """Global normalisers of one step: per part, the summed loss weight and the number of windows that
    teach it, over the whole (global) batch; and the factor that undoes DDP's gradient average."""
    import torch

    w = {p: (batch["weight"] * batch["part_mask"][p].to(batch["weight"].dtype)).sum() for p in PARTS}
    kept = {p: batch["part_mask"][p].to(torch.float32).sum() for p in PARTS}
    vec = torch.stack([*w.values(), *kept.values()])
    if dist is not None:
        vec = dist.sum(vec)
    n = len(PARTS)
    return {"weight": dict(zip(PARTS, vec[:n])), "kept": dict(zip(PARTS, vec[n:])),
            "scale": float(dist.world) if dist is not None else 1.0,
            "gather": dist.gather_rows_with_grad if dist is not None and dist.active else None}


def _three_pass_loss(g, batch, sqa_mask, norms, tcfg: TrainConfig):
    import torch

    from ..model.generator import generator_losses

    motion, low, high = batch["motion"], batch["low"], batch["high"]
    b, t, _ = motion.shape
    codes = batch["codes"]
    vectors = {p: batch["vectors"][p] for p in PARTS}
    latents = {p: vectors[p].sum(2) for p in PARTS}
    fmask = full_mask(b, t, g.seed_frames, motion.device)
    cond = g.mam.speech_branch(low, high)
    mam = g.mam.losses(cond, latents, batch["part_mask"], kept=norms["kept"], gather=norms["gather"])
    loss = tcfg.mam_weight * (mam["mam_nce"] + mam["mam_mse"])
    logs = {"mam_nce": mam["mam_nce"].detach(), "mam_mse": mam["mam_mse"].detach()}
    gen_cond = cond
    if tcfg.speech_dropout > 0 and g.training:
        # The same windows lose their speech in all three passes: the model learns p(motion | no speech)
        # beside p(motion | speech), which guidance contrasts at decoding.
        keep = (torch.rand(b, device=motion.device) >= tcfg.speech_dropout).to(cond[PARTS[0]].dtype)
        gen_cond = {p: c * keep[:, None, None] for p, c in cond.items()}
    # The three passes run as one batch of 3B windows (same result as three calls, fewer kernel launches).
    passes = (("full", fmask, True), ("sqa_noinj", sqa_mask, False), ("sqa_inj", sqa_mask, True))
    cat = lambda x: torch.cat([x] * len(passes))
    inject = torch.cat([torch.full((b,), flag, dtype=torch.bool, device=motion.device) for _, _, flag in passes])
    masks = torch.cat([m for _, m, _ in passes])
    known = visible_token_vectors(g, {p: cat(v) for p, v in vectors.items()}, masks)
    out = g(cat(motion), masks, None, None, inject=inject, cond={p: cat(c) for p, c in gen_cond.items()}, known=known)
    if tcfg.speech_contrast > 0:   # pass 1 ("full") is the first b rows
        first = lambda d: None if d is None else {p: v[:b] for p, v in d.items()}
        term, gap = speech_contrast_term(g, motion, fmask, cond, first(known), codes, batch, first(out["logits"]),
                                         tcfg.contrast_margin)
        loss = loss + tcfg.speech_contrast * term
        logs["speech_gap"] = gap
    for i, (name, _, _) in enumerate(passes):
        sl = slice(i * b, (i + 1) * b)
        part_out = {"logits": {p: v[sl] for p, v in out["logits"].items()},
                    "features": {p: v[sl] for p, v in out["features"].items()}}
        l = generator_losses(part_out, codes, vectors, batch["weight"], batch["part_mask"], norms["weight"])
        loss = loss + l["token_ce"] + tcfg.mse_weight * l["latent_mse"]
        logs[f"{name}_ce"] = l["token_ce"].detach()
        logs[f"{name}_mse"] = l["latent_mse"].detach()
        logs[f"{name}_acc0"] = l["acc_level0"]
    # Losses are sums over this rank's windows / global counts; DDP averages gradients over the ranks.
    return loss * norms["scale"], logs


def _body_level0_ce(logits: dict, codes: dict, part_mask: dict):
    """Per-window level-0 CE averaged over the body parts that teach (B,), and whether any part teaches (B,)."""
    import torch.nn.functional as F

    from ..model.generator import BODY_PARTS

    total, count = 0.0, 0.0
    for p in BODY_PARTS:
        lg = logits[p][:, :, 0]                                               # (B, N, K)
        ce = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), codes[p][:, :, 0].reshape(-1), reduction="none")
        keep = part_mask[p].to(lg.dtype)
        total = total + ce.view(lg.shape[0], -1).mean(1) * keep
        count = count + keep
    return total / count.clamp_min(1.0), count > 0


def speech_contrast_term(g, motion, fmask, cond, known, codes, batch, own_logits, margin: float):
    """The speech-contrast hinge and the gap it watches (both scalars): the fully masked pass again with every
    window given the next window's speech (the batch is shuffled, so another moment of speech); the body
    must predict its own tokens worse by `margin` nats than under its own speech (`own_logits`). Why: with
    minutes of data the body learns its tokens from the motion context alone and ignores the speech
    (another window's speech changed body CE by < 0.03 nat)."""
    import torch

    b = motion.shape[0]
    if b < 2:
        zero = torch.zeros((), device=motion.device)
        return zero, zero
    swapped = g(motion, fmask, None, None, inject=True, cond={p: c.roll(1, 0) for p, c in cond.items()}, known=known)
    own, ok = _body_level0_ce(own_logits, codes, batch["part_mask"])
    other, _ = _body_level0_ce(swapped["logits"], codes, batch["part_mask"])
    w = batch["weight"] * ok.to(batch["weight"].dtype)
    norm = w.sum().clamp_min(1e-6)
    term = (torch.relu(margin - (other - own)) * w).sum() / norm
    return term, ((other - own) * w).sum().detach() / norm


def visible_token_vectors(g, vectors: dict, mask):
    """The generator's known-token input: {part: (B, N, d)} code vectors (sum of the levels it predicts) of
    the tokens whose frames are all visible in `mask` (B, T; True = hidden); None without token hints."""
    if not getattr(g, "token_hints", False):
        return None
    b, t = mask.shape
    n = next(iter(vectors.values())).shape[1]
    visible = (~mask.bool()).reshape(b, n, t // n).all(-1).to(next(iter(vectors.values())).dtype)
    return {p: v[..., :g.levels, :].sum(2) * visible[..., None] for p, v in vectors.items()}


def add_code_vectors(batch, tokenizers):
    """batch["vectors"] {part: (B, N, L, d)}: the code vectors of the target tokens (frozen tokenizers)."""
    import torch

    with torch.no_grad():
        batch["vectors"] = {p: tokenizers[p].latent_per_level(batch["codes"][p]).detach() for p in PARTS}
    return batch


def augment_speech(g, batch, strength: float, generator, dist=None) -> dict:
    """A copy of the batch with its speech features augmented (SpecAugment-like, for minutes of speech that
    a model otherwise learns by heart): Gaussian noise of `strength` x each feature's std, two time spans of
    up to 8 frames and one band of up to 10 mel bands set to the feature mean (the phones of a masked span to
    none). Drawn for the global batch from `generator` and sliced, so any number of processes agree."""
    import torch

    low, high = batch["low"], batch["high"]
    b, t, fl = low.shape
    world = dist.world if dist is not None else 1
    rows = dist.shard(b * world) if dist is not None else slice(0, b)
    gb = b * world

    def rand(*shape):
        return torch.rand(*shape, generator=generator)[rows].to(low.device)

    noise = torch.randn(gb, t, fl, generator=generator)[rows].to(low.device)
    mean, std = g.mam.speech_low.mean, g.mam.speech_low.std
    low = low + strength * std * noise
    frames = torch.arange(t, device=low.device)[None]
    masked = torch.zeros(b, t, dtype=torch.bool, device=low.device)
    for _ in range(2):
        start, length = rand(gb) * t, rand(gb) * 8
        masked |= (frames >= start[:, None]) & (frames < (start + length)[:, None])
    low = torch.where(masked[..., None], mean, low)
    high = torch.where(masked[..., None], torch.zeros_like(high), high)
    n_mels = min(80, fl)
    band0, width = (rand(gb) * n_mels).long(), (rand(gb) * 10).long()
    bands = torch.arange(fl, device=low.device)[None]
    in_band = (bands >= band0[:, None]) & (bands < (band0 + width)[:, None]) & (bands < n_mels)
    low = torch.where(in_band[:, None, :], mean, low)
    return dict(batch, low=low, high=high)


def training_step(student, teacher, tokenizers, batch, tcfg: TrainConfig, progress: float, generator=None,
                  dist=None, loss_module=None):
    """Loss of one batch (three passes + MAM); returns (loss tensor, dict of floats). With `dist` (several
    processes) `batch` is this rank's share of the global batch and the loss is scaled for DDP."""
    g = student.module if hasattr(student, "module") else student
    add_code_vectors(batch, tokenizers)
    sqa_mask, h = choose_sqa_masks(teacher, batch, tcfg, progress, generator, dist)   # on the clean speech
    if tcfg.speech_aug > 0:
        batch = augment_speech(g, batch, tcfg.speech_aug, generator, dist)
    norms = loss_norms(batch, dist)
    if loss_module is None:
        loss, logs = _three_pass_loss(g, batch, sqa_mask, norms, tcfg)
    else:
        loss, logs = loss_module(batch, sqa_mask, norms)
    logs = {k: float(v) for k, v in logs.items()}
    logs["hardness"] = h
    logs["loss"] = float(loss.detach()) / norms["scale"]
    return loss, logs


def evaluate(model, tokenizers, data: GeneratorData, device, batch_size=32, max_windows=256) -> dict:
    """Validation on held-out ground-truth windows: the inference condition (all but the 4 seed frames
    masked, speech injected): token CE, latent MSE, token accuracy (level 0 and all levels), and the
    joint-rotation error (degrees) of the decoded prediction against the ground truth on masked frames."""
    import torch

    from ..motion import rotations as R
    from ..model.generator import generator_losses
    from ..motion.motion_repr import PART_ROT_DIMS

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
            fmask = full_mask(b, t, model.seed_frames, device)
            out = model(batch["motion"], fmask, batch["low"], batch["high"],
                        known=visible_token_vectors(model, vectors, fmask))
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


def probe_sets(model, train: GeneratorData, val: GeneratorData, device, train_windows=None, tokenizers=None) -> dict:
    """The context and speech probes (core.training.diagnostics) on validation and on a fixed set of training windows."""
    from .diagnostics import run_probes

    out = {"val": run_probes(model, val, device, max_windows=256, tokenizers=tokenizers)}
    if train_windows is not None:
        out["train"] = run_probes(model, train, device, indices=train_windows, tokenizers=tokenizers)
    return out


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


class EpochSampler:
    """Global batches of window indices from seeded per-epoch permutations: the same on every rank and for
    any number of ranks, so a run resumes from (epoch, position) with a different number of processes."""

    def __init__(self, n: int, batch: int, seed: int, epoch: int = 0, pos: int = 0):
        if batch > n:
            raise EchoMaskError(f"The batch size ({batch}) is larger than the number of training windows ({n}).")
        self.n, self.batch, self.seed, self.epoch, self.pos = n, batch, seed, epoch, pos

    def next(self) -> np.ndarray:
        if self.pos + self.batch > self.n:  # drop the incomplete tail, as a DistributedSampler with drop_last
            self.epoch, self.pos = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        idx = order[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return idx

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}


def _validation_score(probes: dict, tcfg: TrainConfig) -> float | None:
    """Early-stopping criterion: mean validation level-0 CE of the `tcfg.score` probe conditions over
    `tcfg.score_parts` (vis4 = the seed only: what a single decoding pass sees)."""
    val = probes.get("val") or {}
    if not val.get("ce0"):
        return None
    vals = [val["ce0"][p][c] for p in tcfg.score_parts for c in tcfg.score]
    return float(np.mean(vals))


def train_generator(manifest, config_name: str, tokenizers_path: str, out_dir: str, tcfg: TrainConfig,
                    device: str = "auto", resume: bool = False, feature_fn=None, log=print,
                    progress_bar: bool = True, cache_dir: str | None = None, init: str | None = None,
                    data_options=None, dropout: float | None = None, body_speech: str | None = None,
                    body_speech_window: int | None = None) -> dict:
    """Train (or resume) a generator; returns the final validation metrics and paths.

    Under torchrun (WORLD_SIZE > 1) every process trains its share of each global batch with DDP (core.
    distributed); only rank 0 validates, logs and writes files. `init`: start from the generator of this
    model bundle (fine-tuning); its configuration must be `config_name`'s.
    """
    import torch

    from ..model.checkpoint import load_model, save_model
    from ..jobs.devices import resolve_device
    from .diagnostics import format_table, token_baselines
    from .. import precision as amp
    from .distributed import DistContext
    from ..model.config import get_config
    from ..model.generator_config import body_speech_problem
    from ..model.ema import EMATeacher
    from ..model.generator import EchoMaskGenerator, count_parameters
    from ..model.tokenizer import TokenizerSet

    started = time.time()
    dist = DistContext.from_env(resolve_device(device))
    dev = dist.device(resolve_device(device))
    precision = amp.resolve_precision(tcfg.precision, dev)
    main = dist.is_main
    if not main:
        log, progress_bar = (lambda *a, **k: None), False
    out = pathlib.Path(out_dir)
    model_path, state_path = out / "model.safetensors", out / "train_state.pt"
    best_path = out / "best.safetensors"
    log_path = out / "train_log.jsonl"
    from .streaming import DataOptions, generator_data

    data_options = data_options or DataOptions()   # --speakers, --split-file, --stream, ... (core.training.streaming)
    entries = (data_options.manifest(manifest) if isinstance(manifest, str)
               else manifest if isinstance(manifest, list) else list(manifest))
    local_batch = dist.shard(tcfg.batch_size)

    config = get_config(config_name)
    # Generator settings a run chooses (dropout; what the body's speech branch reads): its bundle records
    # them, a resumed run keeps them, and a different value on resume is refused (it would change the model
    # mid-run without a trace).
    chosen = {"dropout": None if dropout is None else float(dropout), "body_speech": body_speech,
              "body_speech_window": body_speech_window}
    if resume and state_path.exists() and model_path.exists():
        recorded = load_model(model_path, expected_config=config_name).config.generator
        for name, value in chosen.items():
            if value is not None and value != getattr(recorded, name):
                raise EchoMaskError(f"{out} was trained with --{name.replace('_', '-')} {getattr(recorded, name)}; "
                                    f"resume with that value (or leave it out), or train into a new folder.")
            chosen[name] = getattr(recorded, name)
    chosen = {k: v for k, v in chosen.items() if v is not None}
    if chosen:
        config = dataclasses.replace(config, generator=dataclasses.replace(config.generator, **chosen))
    problem = body_speech_problem(config.generator)
    if problem:
        raise EchoMaskError(f"Cannot train the {config_name!r} config: {problem}.")
    out.mkdir(parents=True, exist_ok=True)
    tokenizers = TokenizerSet.load(tokenizers_path, expected_config=config).to(dev).eval()
    for prm in tokenizers.parameters():
        prm.requires_grad_(False)
    torch.manual_seed(tcfg.seed)
    mask_gen = torch.Generator().manual_seed(tcfg.seed + 1)

    t0 = time.time()
    # In memory (GeneratorData), or streamed from the on-disk store for split data sets / --stream.
    train, val = generator_data(entries, tokenizers, tokenizers_path, config, feature_fn, data_options, log=log,
                                dist=dist, cache_dir=cache_dir, progress=progress_bar)
    if len(train) == 0:
        raise EchoMaskError("No training window: takes must be longer than 64 frames (2.1 s).")
    log(f"data ready in {time.time() - t0:.0f} s")
    token_prior = None
    if main:   # the token bigram prior's tables travel with the weights (off until asked for or recorded)
        from ..generation.token_prior import build_token_prior, prior_entries

        try:
            token_prior = build_token_prior(tokenizers, config, prior_entries(entries), log=log)
        except (EchoMaskError, OSError, ValueError) as exc:   # optional: training goes on without it
            log(f"no token prior for these weights: {exc}")
    nb = config.tokenizer.nb_code
    probe_windows = np.sort(np.random.default_rng(1234).choice(len(train), min(96, len(train)), replace=False))
    baselines = {"val": token_baselines(train.codes, val.codes, nb) if len(val) else {},
                 "train": token_baselines(train.codes, {p: train.codes[p][probe_windows] for p in PARTS}, nb)}

    model = EchoMaskGenerator(config)
    lm, ls, hm, hs = train.speech_stats()
    model.mam.speech_low.set_stats(lm, ls)
    model.mam.speech_high.set_stats(hm, hs)
    # Floor 0.05: a near-constant channel must not turn small decoding errors into large inputs.
    model.motion_input.set_stats(*train.motion_stats(), floor=0.05)
    if init:
        start_from = load_model(init, expected_config=config_name)
        model.load_state_dict(start_from.generator.state_dict())
        log(f"starting from the generator of {init} (step {start_from.meta.get('step', '?')})")
    model.to(dev)
    teacher = EMATeacher(model, config.generator.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, betas=tuple(tcfg.betas), weight_decay=tcfg.weight_decay)
    sampler = EpochSampler(len(train), tcfg.batch_size, tcfg.seed)
    step, best = 0, {"score": None, "step": None}
    if resume and state_path.exists() and model_path.exists():
        saved = load_model(model_path, expected_config=config_name)
        model.load_state_dict(saved.generator.state_dict())
        state = torch.load(state_path, map_location=dev, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        teacher.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        mask_gen.set_state(state["mask_rng"])
        step = int(state["step"])
        sampler.epoch, sampler.pos = int(state["epoch"]), int(state["pos"])
        best = dict(saved.meta.get("best") or best)
        log(f"resumed at step {step} (epoch {sampler.epoch})")
    elif log_path.exists() and not resume and main:
        log_path.unlink()
    teacher.model.to(dev)
    loss_module = None
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        loss_module = DistributedDataParallel(TrainingLoss.module(model, tcfg),
                                              device_ids=[dev] if str(dev).startswith("cuda") else None)
    log(f"generator '{config_name}': {count_parameters(model) / 1e6:.2f} M parameters on {dev}"
        + (f" x {dist.world} processes ({dist.backend})" if dist.active else "")
        + f", precision {precision}; {len(train)} training windows, {len(val)} validation windows")

    info_base = {"baselines": baselines, "config": config_name, "tokenizers": os.path.basename(tokenizers_path),
                 "seed": tcfg.seed, "init": os.path.basename(init) if init else None,
                 "train_windows": len(train), "val_windows": len(val), "train_config": dataclasses.asdict(tcfg),
                 "processes": dist.world, "precision": precision,
                 "takes": [{"name": e.name, "kind": e.kind, "weight": e.weight, "note": e.note} for e in train.entries]}
    probes = {}

    def save(final=False, metrics=None):
        if not main:
            return
        info = dict(info_base, step=step, epoch=sampler.epoch, best=best,
                    final=final and step >= tcfg.steps, train_seconds=round(time.time() - started, 1))
        if metrics:
            info["val"] = metrics
        if probes:
            info["probes"] = probes
        save_model(model_path, config, tokenizers, model, info, token_prior)
        torch.save({"optimizer": opt.state_dict(), "ema": teacher.state_dict(), "torch_rng": torch.get_rng_state(),
                    "mask_rng": mask_gen.get_state(), "step": torch.tensor(step), "epoch": torch.tensor(sampler.epoch),
                    "pos": torch.tensor(sampler.pos)}, str(state_path) + ".partial")
        os.replace(str(state_path) + ".partial", state_path)

    bar = None
    if progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=tcfg.steps, initial=step, desc="train generator", unit="step", dynamic_ncols=True)
    model.train()
    metrics, last_val = {}, -1
    train_started = time.time()
    # Parameters, the EMA teacher, optimiser state and checkpoints stay float32; only the forward is autocast.
    autocast = amp.autocast(precision, dev)
    scaler = amp.grad_scaler(precision, dev)
    logf = open(log_path, "a") if main else None
    try:
        if main:
            logf.write(json.dumps({"step": step, "split": "baselines", **baselines}) + "\n")

        def validate():
            nonlocal metrics, probes
            if not main:
                return
            metrics = evaluate(model, tokenizers, val, dev)
            probes = probe_sets(model, train, val, dev, probe_windows, tokenizers)
            score = _validation_score(probes, tcfg)
            if score is not None and (best["score"] is None or score < best["score"]):
                best.update(score=score, step=step)
                save_model(best_path, config, tokenizers, model, dict(info_base, step=step, best=best, val=metrics,
                                                                      probes=probes), token_prior)
            t = round(time.time() - started, 1)
            logf.write(json.dumps({"step": step, "split": "val", "time": t, **metrics}) + "\n")
            logf.write(json.dumps({"step": step, "split": "probe", "time": t, "score": score, **probes}) + "\n")
            logf.flush()
            say = bar.write if bar is not None else log
            if metrics:
                say(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
                    + (f"; validation score {score:.4f} (best {best['score']:.4f} at step {best['step']})"
                       if score is not None else ""))
            for split in ("val", "train"):
                if probes.get(split):
                    say(format_table(probes[split], baselines.get(split),
                                     f"level-0 CE on hidden tokens by visible frames ({split}, step {step})"))

        while step < tcfg.steps and not (tcfg.stop_after and step >= tcfg.stop_after):
            # Rank 0's clock decides the schedule and the stop, so every rank steps alike.
            elapsed = (time.time() - train_started) / 60
            stale = (tcfg.patience > 0 and best["step"] is not None
                     and step - best["step"] >= tcfg.patience * tcfg.val_every)
            flags = dist.broadcast(torch.tensor([_progress(step, tcfg, train_started),
                                                 float(tcfg.max_minutes > 0 and elapsed > tcfg.max_minutes),
                                                 float(stale)], dtype=torch.float64))
            prog, out_of_time, no_better = float(flags[0]), bool(flags[1]), bool(flags[2])
            if out_of_time or no_better:
                log(f"time limit of {tcfg.max_minutes} min reached at step {step}; stopping" if out_of_time else
                    f"no better validation score for {tcfg.patience} validations (best at step {best['step']}); stopping")
                break
            idx = sampler.next()[local_batch]
            batch = train.batch(idx, dev)
            lr = _lr_at(step, tcfg, prog if tcfg.max_minutes > 0 else None)
            for grp in opt.param_groups:
                grp["lr"] = lr
            with autocast:
                loss, logs = training_step(model, teacher.model, tokenizers, batch, tcfg, prog, mask_gen,
                                           dist if dist.active else None, loss_module)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            if tcfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
            teacher.update(model)
            step += 1
            if dist.active:  # every rank's share -> the global batch's values (accuracies: the mean)
                keys = sorted(k for k in logs if k != "hardness")
                total = dist.sum(torch.tensor([logs[k] for k in keys], dtype=torch.float64))
                logs.update({k: float(v) / (dist.world if k.endswith("acc0") else 1) for k, v in zip(keys, total)})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.3f}", acc0=f"{logs['full_acc0']:.2f}")
            if main and (step % tcfg.log_every == 0 or step == tcfg.steps):
                logf.write(json.dumps({"step": step, "split": "train", "lr": lr, "progress": round(prog, 4),
                                       "epoch": sampler.epoch, "time": round(time.time() - started, 1), **logs}) + "\n")
                logf.flush()
            if step % tcfg.val_every == 0 or step == tcfg.steps:
                validate()
                last_val = step
            if step % tcfg.ckpt_every == 0:
                save(metrics=metrics)
        if last_val != step:
            validate()
        if bar is not None:
            bar.close()
        save(final=True, metrics=metrics)
    finally:
        if logf is not None:
            logf.close()
        dist.barrier()
    log(f"saved {model_path} after {step} steps ({(time.time() - started) / 60:.1f} min); best validation score "
        f"{best['score']} at step {best['step']} -> {best_path.name}")
    return {"model": str(model_path), "best": str(best_path) if best["step"] is not None else None,
            "steps": step, "val": metrics, "minutes": (time.time() - started) / 60, "best_step": best["step"]}


def run_cli(args) -> int:
    """`python -m core train ...` (also under `torchrun --nproc_per_node N -m core train ...`)."""
    from .streaming import DataOptions

    if args.threads and args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("lr", args.lr), ("warmup", args.warmup), ("weight_decay", args.weight_decay),
                                   ("speech_aug", getattr(args, "speech_aug", None)),
                                   ("speech_contrast", getattr(args, "speech_contrast", None)),
                                   ("speech_dropout", getattr(args, "speech_dropout", None))) if v is not None}
    if getattr(args, "score", None):
        overrides["score"] = tuple(c.strip() for c in args.score.split(",") if c.strip())
        if "vis4" in overrides["score"] and len(overrides["score"]) == 1:
            overrides["score_parts"] = tuple(PARTS)   # the first pass: the face reads speech too
    tcfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, val_every=args.val_every,
                       ckpt_every=args.ckpt_every or args.val_every, max_minutes=args.max_minutes, ramp=args.ramp,
                       random_masking=args.random_masking, patience=args.patience, stop_after=args.stop_after,
                       precision=getattr(args, "precision", "auto"),
                       **overrides)
    res = train_generator(args.manifest, args.config, args.tokenizers, args.out, tcfg, device=args.device,
                          resume=args.resume, progress_bar=not args.no_progress, init=args.init,
                          data_options=DataOptions.from_args(args), dropout=getattr(args, "dropout", None),
                          body_speech=getattr(args, "body_speech", None),
                          body_speech_window=getattr(args, "body_speech_window", None))
    if int(os.environ.get("RANK", "0")) == 0:
        val = res.get("val") or {}
        print(f"Trained {res['steps']} steps in {res['minutes']:.1f} min -> {res['model']}"
              + (f" (best validation: step {res['best_step']} -> {res['best']})" if res.get("best") else ""))
        if val:
            print("validation: " + ", ".join(f"{k}={v:.4f}" for k, v in val.items() if isinstance(v, float)))
    return 0
