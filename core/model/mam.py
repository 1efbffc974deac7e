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

from ..skeleton import PARTS
from .gen_layers import MLP, PeriodicPositionalEncoding, decoder, encoder


class SpeechInput(nn.Module):
    """Standardise a speech feature stream with stored statistics, then fit it to the MAM width.

    The statistics are buffers (saved with the weights, set once from training data). The projection is
    an identity when the features already have the MAM width (the official 256-d HuBERT projection).
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim_in))
        self.register_buffer("std", torch.ones(dim_in))
        self.proj = nn.Identity() if dim_in == dim_out else nn.Linear(dim_in, dim_out)

    def set_stats(self, mean, std):
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-3))

    def forward(self, x):
        return self.proj((x - self.mean) / self.std)


class MAM(nn.Module):
    def __init__(self, d: int, low_dim: int, high_dim: int, layers: int, heads: int, ff: int, dec_layers: int,
                 dropout: float, temperature: float = 0.1):
        super().__init__()
        self.d, self.temperature = d, temperature
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
        low_m, high_m = pe(self.speech_low(low)), pe(self.speech_high(high))
        b, t = low.shape[:2]
        cond = {}
        for p in PARTS:
            h = pe(getattr(self, f"speech_query_{p}").expand(b, t, -1))
            h = self._enc(p, 1)(h)
            h = getattr(self, f"{p}_decoder_low")(h, low_m)
            h = self._enc(p, 2)(h)
            h = getattr(self, f"{p}_decoder_high")(h, high_m)
            cond[p] = self._enc(p, 3)(h)
        return cond

    def motion_branch(self, part: str, latent: torch.Tensor) -> torch.Tensor:
        """Ground-truth RVQ latent (B, N, d) -> motion tokens (B, N, d) through the shared encoders."""
        h = self.position_embeddings(latent)
        for k in (1, 2, 3):
            h = self._enc(part, k)(h)
        return h

    def losses(self, cond: dict[str, torch.Tensor], latents: dict[str, torch.Tensor],
               keep: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """InfoNCE + MSE per part, averaged over parts: {'mam_nce', 'mam_mse'}. keep {part: (B,) bool}
        leaves out windows whose part is missing or fake in the data."""
        nce, mse = [], []
        for p in PARTS:
            lat, c = latents[p], cond[p]
            if keep is not None:
                if not bool(keep[p].any()):
                    continue
                lat, c = lat[keep[p]], c[keep[p]]
            motion = self.motion_branch(p, lat)                                 # (B, N, d)
            n = motion.shape[1]
            pooled = F.adaptive_avg_pool1d(c.transpose(1, 2), n).transpose(1, 2)  # (B, N, d)
            m = F.normalize(motion.reshape(-1, self.d), dim=-1)
            s = F.normalize(pooled.reshape(-1, self.d), dim=-1)
            logits = m @ s.t() / self.temperature
            target = torch.arange(logits.shape[0], device=logits.device)
            nce.append(0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)))
            mse.append(F.mse_loss(getattr(self, f"predict_motion_{p}")(pooled), motion))
        return {"mam_nce": torch.stack(nce).mean(), "mam_mse": torch.stack(mse).mean()}
