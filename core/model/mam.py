"""MAM, the motion-audio alignment module (method §4).

Per body part: a learnable speech query (repeated over the window, plus a periodic position encoding) and
three small transformer encoders E1, E2, E3 that BOTH branches share:

* speech branch: E1(query) -> cross-attend low-level speech -> E2 -> cross-attend high-level speech -> E3
  = `cond_p` (B, 64, d), the motion-aligned speech feature (the only branch used at inference);
* motion branch (training): the part's ground-truth RVQ latent (sum of levels, B, 16, d) -> E1 -> E2 -> E3.

Losses: InfoNCE (tau 0.1) between motion tokens and `cond_p` average-pooled 64 -> 16 (positive = same
sample and time index, negatives = every other token of the batch), plus MSE between an MLP of the
pooled `cond_p` and the motion tokens. Sharing E1-E3 is what puts speech and motion in one space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..motion.skeleton import PARTS
from ..speech.builtin import MEL, PHONE_POSTERIORS
from .gen_layers import MLP, PeriodicPositionalEncoding, decoder, encoder

COARSE_BANDS = 8   # body_speech="bands": mel bins averaged into this many bands (MAM.coarse_speech)


class Standardize(nn.Module):
    """(x - mean) / std with stored statistics (buffers saved with the weights, set once from training
    data; identity until then, which is what converted official weights keep)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_stats(self, mean, std, floor: float = 1e-3):
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(floor))

    def forward(self, x):
        return (x - self.mean) / self.std


class SpeechInput(Standardize):
    """Standardise a speech feature stream, then fit it to the MAM width. The projection is an identity
    when the features already have the MAM width (the official 256-d HuBERT projection)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__(dim_in)
        self.proj = nn.Identity() if dim_in == dim_out else nn.Linear(dim_in, dim_out)

    def forward(self, x):
        return self.proj(super().forward(x))


class MAM(nn.Module):
    def __init__(self, d: int, low_dim: int, high_dim: int, layers: int, heads: int, ff: int, dec_layers: int,
                 dropout: float, temperature: float = 0.1, body_speech: str = "full", body_speech_window: int = 0):
        """body_speech / body_speech_window: GeneratorConfig's (checked there, body_speech_problem): what the
        body parts' speech branch reads ("full", "bands" or "prosody") and how far it attends (0 = the whole window)."""
        super().__init__()
        self.d, self.temperature = d, temperature
        self.body_speech, self.body_speech_window = body_speech, int(body_speech_window)
        self.speech_low = SpeechInput(low_dim, d)
        self.speech_high = SpeechInput(high_dim, d)
        self.position_embeddings_speech = PeriodicPositionalEncoding(d, dropout)  # queries and speech
        self.position_embeddings = PeriodicPositionalEncoding(d, dropout)         # motion branch (training)
        for p in PARTS:
            setattr(self, f"speech_query_{p}", nn.Parameter(torch.randn(1, 1, d) * 0.02))
            for k in (1, 2, 3):
                setattr(self, f"motion_encoder_{p}_{k}", encoder(d, heads, ff, layers, dropout))
            setattr(self, f"{p}_decoder_low", decoder(d, heads, ff, dec_layers, dropout))
            setattr(self, f"{p}_decoder_high", decoder(d, heads, ff, dec_layers, dropout))
            setattr(self, f"predict_motion_{p}", MLP(d, d, d))

    def _enc(self, part, k):
        return getattr(self, f"motion_encoder_{part}_{k}")

    def speech_branch(self, low: torch.Tensor, high: torch.Tensor) -> dict[str, torch.Tensor]:
        """low (B, T, LOW), high (B, T, HIGH) -> {part: cond_p (B, T, d)}."""
        pe = self.position_embeddings_speech
        # Local body streams carry no position encoding: with it, the body's joint space learnt the frame's
        # place in the window instead of the speech (probed at 300 steps: the same time index of another
        # window was the best match for 99 % of tokens). The mask gives the structure instead.
        body_pe = pe.dropout if self.body_speech_window > 0 else pe
        low_m, high_m = pe(self.speech_low(low)), pe(self.speech_high(high))
        body_low, body_high = self.coarse_speech(low, high) if self.body_speech != "full" else (low, high)
        if body_pe is pe and self.body_speech == "full":
            body_low_m, body_high_m = low_m, high_m
        else:
            body_low_m, body_high_m = body_pe(self.speech_low(body_low)), body_pe(self.speech_high(body_high))
        b, t = low.shape[:2]
        local = self._local_mask(t, self.body_speech_window, low.device)
        cond = {}
        for p in PARTS:
            lm, hm = (low_m, high_m) if p == "face" else (body_low_m, body_high_m)
            mask = None if p == "face" else local
            h = (pe if p == "face" else body_pe)(getattr(self, f"speech_query_{p}").expand(b, t, -1))
            h = self._enc(p, 1)(h, mask=mask)
            h = getattr(self, f"{p}_decoder_low")(h, lm, tgt_mask=mask, memory_mask=mask)
            h = self._enc(p, 2)(h, mask=mask)
            h = getattr(self, f"{p}_decoder_high")(h, hm, tgt_mask=mask, memory_mask=mask)
            cond[p] = self._enc(p, 3)(h, mask=mask)
        return cond

    @staticmethod
    def _local_mask(n: int, window: int, device) -> torch.Tensor | None:
        """(n, n) bool attention mask, True = not attended: positions more than `window` apart (None when 0).
        Why, for the body with body_speech_window > 0: with attention over the whole window its condition came
        out nearly constant over time, a summary of the window that tells training windows apart and does not
        carry over to unseen speech (the MAM probe); a local window makes each frame's condition depend on
        the speech around it (receptive field about 4 windows through the stacked blocks); the body's streams
        then carry no position encoding (speech_branch)."""
        if window <= 0:
            return None
        i = torch.arange(n, device=device)
        return (i[:, None] - i[None, :]).abs() > window

    def coarse_speech(self, low: torch.Tensor, high: torch.Tensor,
                      mode: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The built-in features as the body reads them with body_speech `mode` ("bands" or "prosody"; default
        this MAM's own, "bands" when it reads the full features). bands: the
        80 log-mel bins averaged into 8 bands of 10 (every bin set to its band's mean), prosody kept, phone
        posteriors set to their training mean (no information). prosody: the mel bins at their training mean
        too, so only onset, loudness, pitch, voicing and the speech flag remain (5 numbers a frame). Why: on
        minutes of one speaker, the MAM's body space learnt from the full spectrum and phones did not carry
        over to unseen speech (held-out AUC 0.47-0.50); a MAM trained alone on coarse bands did slightly
        better (0.54-0.55, bench/experiment_mam_speech_inputs.py). Trained with the generator, the body's
        condition collapsed to a constant over the whole window and, frame-local, learnt its training speech
        by heart (weights/MODEL_CARD.md); prosody is the poorest signal a beat gesture can follow, too poor to
        tell 2 minutes of speech apart by. Research options, off by default."""
        mode = mode or (self.body_speech if self.body_speech != "full" else "bands")
        low, high = low.clone(), high.clone()
        if mode == "prosody":
            low[..., MEL] = self.speech_low.mean[MEL]
        else:
            mel = low[..., MEL]
            bands = mel.reshape(*mel.shape[:-1], COARSE_BANDS, -1).mean(-1, keepdim=True).expand(
                *mel.shape[:-1], COARSE_BANDS, mel.shape[-1] // COARSE_BANDS)
            low[..., MEL] = bands.reshape(mel.shape)
        high[..., PHONE_POSTERIORS] = self.speech_high.mean[PHONE_POSTERIORS]
        return low, high

    def motion_branch(self, part: str, latent: torch.Tensor) -> torch.Tensor:
        """Ground-truth RVQ latent (B, N, d) -> motion tokens (B, N, d) through the shared encoders."""
        # The body's motion tokens (4 frames each) see as far as its speech frames do, without position.
        window = 0 if part == "face" else -(-self.body_speech_window // 4)
        h = (self.position_embeddings.dropout if window > 0 else self.position_embeddings)(latent)
        mask = self._local_mask(h.shape[1], window, h.device)
        for k in (1, 2, 3):
            h = self._enc(part, k)(h, mask=mask)
        return h

    def losses(self, cond: dict[str, torch.Tensor], latents: dict[str, torch.Tensor],
               keep: dict[str, torch.Tensor] | None = None, kept: dict[str, torch.Tensor] | None = None,
               gather=None) -> dict[str, torch.Tensor]:
        """InfoNCE + MSE per part, averaged over the parts present: {'mam_nce', 'mam_mse'}.

        keep {part: (B,) bool} leaves out windows whose part is missing or fake in the data (as positives
        and as negatives). Distributed training: `gather` concatenates every rank's rows (with gradients),
        so the negatives are the whole global batch's tokens, and `kept` {part: number of windows kept in
        the global batch} normalises; each rank then returns its rows' share of the global loss.
        """
        nce, mse, present = 0.0, 0.0, 0
        for p in PARTS:
            lat, c = latents[p], cond[p]
            b, n = lat.shape[:2]
            k = torch.ones(b, dtype=torch.bool, device=lat.device) if keep is None else keep[p].bool()
            total = (k.sum() if kept is None else kept[p]).to(lat.dtype)
            motion = self.motion_branch(p, lat)                                 # (B, N, d)
            pooled = F.adaptive_avg_pool1d(c.transpose(1, 2), n).transpose(1, 2)  # (B, N, d)
            m = F.normalize(motion.reshape(-1, self.d), dim=-1)
            s = F.normalize(pooled.reshape(-1, self.d), dim=-1)
            rows = k.repeat_interleave(n).to(lat.dtype)                         # (B N,) 1 = kept
            offset = 0
            if gather is not None:
                all_m, all_s, all_rows = gather(m), gather(s), gather(rows)
                offset = _rank_offset(all_rows.shape[0], rows.shape[0])
            else:
                all_m, all_s, all_rows = m, s, rows
            target = offset + torch.arange(rows.shape[0], device=lat.device)
            # Left-out rows never serve as negatives (a large negative logit, not -inf: left-out rows'
            # own terms must stay finite before they are multiplied by 0).
            off = (1.0 - all_rows)[None] * 1e4
            ce_ms = F.cross_entropy(m @ all_s.t() / self.temperature - off, target, reduction="none")
            ce_sm = F.cross_entropy(s @ all_m.t() / self.temperature - off, target, reduction="none")
            denom = (total * n).clamp_min(1.0)
            err = (getattr(self, f"predict_motion_{p}")(pooled) - motion).pow(2).mean(-1).reshape(-1)
            if float(total) > 0:
                present += 1
                nce = nce + 0.5 * ((ce_ms + ce_sm) * rows).sum() / denom
                mse = mse + (err * rows).sum() / denom
            else:  # keep every parameter in the graph (DDP) with a zero contribution
                nce = nce + 0.0 * (ce_ms.sum() + ce_sm.sum())
                mse = mse + 0.0 * err.sum()
        present = max(present, 1)
        return {"mam_nce": nce / present, "mam_mse": mse / present}


def _rank_offset(global_rows: int, local_rows: int) -> int:
    """First global row of this rank's rows (ranks hold equal contiguous shares, in rank order)."""
    import torch.distributed as dist

    return dist.get_rank() * local_rows if dist.is_initialized() else 0
