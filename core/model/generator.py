"""The EchoMask generator (method §5): masked 337-d motion + speech -> RVQ token logits per part and level.

One window of T = 64 frames (N = 16 tokens). Blocks, in the order they run (names follow the official
release's modules so its checkpoint maps onto this one; see docs/official-release.md §6):

1. `mam`: speech branch of the motion-audio alignment module -> cond_p (B, T, d) for every part.
2. Masked frames are replaced by the learned `mask_embeddings`; `motion_encoder` (conv, no downsampling)
   -> motion hint (B, T, d).
3. Face branch: `face_decoder` (queries = position-encoded face speaker embedding, memory =
   `feature2face`([cond_face, `bodyhints_face`(hint)])) -> `face2latent` -> `face1d` -> `face_latent_mlp`
   -> `face1d_2` = face latent (B, N, d).
4. Body trunk: `feature2motion`(`bodyhints_body`(hint)) + body speaker embedding + PE ->
   `motion_self_encoder` = m (B, T, H).
5. SQA block (`sqa`): queries = cond_{hands,upper,lower} lifted by `audio_feature2motion_*`, keys/values
   = PE(m); fused output added to m when speech injection is on; its attention gives the SQA score.
6. `body1d` (T -> T/2), `motion2latent_*`, per-part decoders (query = own latent + speaker + PE, memory
   = sum of the other two parts), `motion_down_*`, `*1d` (T/2 -> N).
7. Cross-part refinement at N tokens: hands <- face, face <- hands, upper <- hands' + lower,
   lower <- upper + hands'.
8. Token heads: level 0 by `{part}_classifier` (MLP); levels 1..L-1 by `predict_res_{part}`, cascaded
   decoders attending to cond_p. Every level also returns its continuous feature (regressed onto the
   level's code vector in training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..motion_repr import MOTION_DIM
from ..skeleton import PARTS
from .gen_layers import MLP, ConvMotionEncoder, HalveTime, PeriodicPositionalEncoding, decoder, encoder
from .mam import MAM
from .sqa import SQA_PARTS, SQABlock

BODY_PARTS = ("upper", "hands", "lower")


def speech_dims(gcfg) -> tuple[int, int]:
    """(LOW_DIM, HIGH_DIM) of the configured speech backend (explicit config values win)."""
    if gcfg.speech_low_dim > 0 and gcfg.speech_high_dim > 0:
        return gcfg.speech_low_dim, gcfg.speech_high_dim
    from ..speech import feature_dims

    return tuple(int(v) for v in feature_dims(gcfg.speech_backend))


class ResidualLevelHeads(nn.Module):
    """Levels 1..L-1 of one part: level 1 decodes the refined latent against cond_p, adds it back and
    classifies; level k >= 2 first maps [latent, level 1..k-1 features] through `map_zq{k}`."""

    def __init__(self, d: int, nb_code: int, levels: int, heads: int, ff: int, layers: int, dropout: float):
        super().__init__()
        self.levels = levels
        for k in range(1, levels):
            setattr(self, f"cross_attn_{k}", decoder(d, heads, ff, layers, dropout))
            if k >= 2:
                setattr(self, f"map_zq{k}", nn.Linear(k * d, d))
            setattr(self, f"classifier_{k}", MLP(d, d, nb_code))

    def forward(self, latent: torch.Tensor, cond: torch.Tensor):
        """latent (B, N, d), cond (B, T, d) -> (logits [L-1 x (B, N, K)], features [L-1 x (B, N, d)])."""
        feats, logits = [], []
        for k in range(1, self.levels):
            inp = latent if k == 1 else getattr(self, f"map_zq{k}")(torch.cat([latent, *feats], -1))
            h = getattr(self, f"cross_attn_{k}")(inp, cond) + inp
            feats.append(h)
            logits.append(getattr(self, f"classifier_{k}")(h))
        return logits, feats


class EchoMaskGenerator(nn.Module):
    def __init__(self, config):
        """config: core.model.config.ModelConfig (its `generator` and `tokenizer` fields)."""
        super().__init__()
        g, tok = config.generator, config.tokenizer
        self.window, self.seed_frames, self.default_speaker = config.window, config.seed_frames, g.speaker_id
        self.mask_ratio, self.top_share = g.mask_ratio, g.top_share
        if config.window % 4 or tok.downsample != 4:
            raise ValueError("the generator needs 4x token downsampling and a window that is a multiple of 4")
        d, h, k, levels = tok.code_dim, g.hidden, tok.nb_code, tok.num_quantizers
        self.d, self.hidden, self.nb_code, self.levels = d, h, k, levels
        low_dim, high_dim = speech_dims(g)
        self.low_dim, self.high_dim = low_dim, high_dim
        drop = g.dropout

        self.mam = MAM(d, low_dim, high_dim, g.mam_layers, g.mam_heads, g.mam_ff, g.mam_dec_layers, drop,
                       g.nce_temperature)
        self.mask_embeddings = nn.Parameter(torch.randn(1, 1, MOTION_DIM) * 0.02)
        self.motion_encoder = ConvMotionEncoder(MOTION_DIM, d, g.motion_stages)
        self.speaker_encoder_face = nn.Embedding(g.num_speakers, h)
        self.speaker_encoder_body = nn.Embedding(g.num_speakers, h)
        self.position_embeddings = PeriodicPositionalEncoding(h, drop)
        # Face branch.
        self.bodyhints_face = MLP(d, h, d)
        self.feature2face = nn.Linear(2 * d, h)
        self.face_decoder = decoder(h, g.heads, g.hidden_ff, g.face_layers, drop)
        self.face2latent = nn.Linear(h, d)
        self.face1d = HalveTime(d)
        self.face_latent_mlp = MLP(d, h, d)
        self.face1d_2 = HalveTime(d)
        # Body trunk.
        self.bodyhints_body = MLP(d, h, d)
        self.feature2motion = nn.Linear(d, h)
        self.motion_self_encoder = encoder(h, g.heads, g.hidden_ff, g.self_layers, drop)
        # Speech injection (SQA).
        for p in SQA_PARTS:
            setattr(self, f"audio_feature2motion_{p}", nn.Linear(d, h))
        self.sqa = SQABlock(h, g.heads, g.sqa_ff, g.sqa_layers, drop)
        # Per-part decoders.
        self.body1d = HalveTime(h)
        self.speaker_encoder_body1d = HalveTime(h)
        for p in BODY_PARTS:
            setattr(self, f"motion2latent_{p}", MLP(h, h, h))
            setattr(self, f"{p}_decoder", decoder(h, g.heads, g.hidden_ff, g.part_layers, drop))
            setattr(self, f"motion_down_{p}", nn.Linear(h, d))
            setattr(self, f"{p}1d", HalveTime(d))
        # Cross-part refinement.
        for name in ("hands_face_decoder", "face_hands_decoder", "upper_hands_decoder", "lower_hands_decoder"):
            setattr(self, name, decoder(d, g.cross_heads, g.cross_ff, 1, drop))
        # Token heads.
        for p in PARTS:
            setattr(self, f"{p}_classifier", MLP(d, g.classifier_hidden, k))
            setattr(self, f"predict_res_{p}",
                    ResidualLevelHeads(d, k, levels, g.res_heads, g.res_ff, g.res_layers, drop))

    def forward(self, motion: torch.Tensor, mask: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
                speaker: torch.Tensor | None = None, inject: bool = True, need_scores: bool = False,
                cond: dict[str, torch.Tensor] | None = None, scores_only: bool = False) -> dict:
        """
        motion (B, T, 337) raw 337-d frames (masked frames may hold anything); mask (B, T) bool/0-1,
        1 = masked; low (B, T, LOW) / high (B, T, HIGH) speech features; speaker (B,) long (default the
        configured inference speaker); inject: add the SQA output to the trunk (speech injection);
        inject may also be a (B,) bool tensor (per-sample switch);
        need_scores: also return the SQA per-frame score (scores_only: stop after the SQA block); cond: MAM conditions already computed for these
        speech features (the three training passes share one speech-branch run).

        Returns {"logits": {part: (B, N, L, K)}, "features": {part: (B, N, L, d)}, "cond": {part: (B, T, d)},
        "score": (B, T) or None}.
        """
        b, t, _ = motion.shape  # low/high may be None when `cond` is given
        if speaker is None:
            speaker = torch.full((b,), self.default_speaker, dtype=torch.long, device=motion.device)
        if cond is None:
            cond = self.mam.speech_branch(low, high)
        m = mask.to(motion.dtype).unsqueeze(-1)
        hint = self.motion_encoder(motion * (1 - m) + self.mask_embeddings * m)
        spk = speaker.long()[:, None].expand(b, t)
        spk_face, spk_body = self.speaker_encoder_face(spk), self.speaker_encoder_body(spk)

        memory = self.feature2face(torch.cat([cond["face"], self.bodyhints_face(hint)], -1))
        face = self.face_decoder(self.position_embeddings(spk_face), memory)
        face = self.face1d_2(self.face_latent_mlp(self.face1d(self.face2latent(face))))

        body = self.feature2motion(self.bodyhints_body(hint)) + spk_body
        body = self.motion_self_encoder(self.position_embeddings(body))
        score = None
        inject_any = bool(inject.any()) if torch.is_tensor(inject) else bool(inject)
        if inject_any or need_scores:
            queries = {p: getattr(self, f"audio_feature2motion_{p}")(cond[p]) for p in SQA_PARTS}
            hints, score = self.sqa(queries, self.position_embeddings(body), need_scores)
            if scores_only:
                return {"score": score, "cond": cond}
            if torch.is_tensor(inject):  # per-sample switch (training batches several passes together)
                body = body + hints * inject.to(hints.dtype)[:, None, None]
            elif inject:
                body = body + hints

        body = self.body1d(body)
        spk_down = self.speaker_encoder_body1d(spk_body)
        lat = {p: getattr(self, f"motion2latent_{p}")(body) for p in BODY_PARTS}
        part = {}
        for p in BODY_PARTS:
            others = sum(lat[q] for q in BODY_PARTS if q != p)
            x = getattr(self, f"{p}_decoder")(self.position_embeddings(lat[p] + spk_down), others) + lat[p]
            part[p] = getattr(self, f"{p}1d")(getattr(self, f"motion_down_{p}")(x))
        part["face"] = face

        hands_r = self.hands_face_decoder(part["hands"], part["face"])
        refined = {
            "hands": hands_r,
            "face": self.face_hands_decoder(part["face"], part["hands"]),
            "upper": self.upper_hands_decoder(part["upper"], hands_r + part["lower"]),
            "lower": self.lower_hands_decoder(part["lower"], part["upper"] + hands_r),
        }
        logits, features = {}, {}
        for p in PARTS:
            res_logits, res_feats = getattr(self, f"predict_res_{p}")(refined[p], cond[p])
            logits[p] = torch.stack([getattr(self, f"{p}_classifier")(refined[p]), *res_logits], dim=2)
            features[p] = torch.stack([refined[p], *res_feats], dim=2)
        return {"logits": logits, "features": features, "cond": cond, "score": score}

    @torch.no_grad()
    def sqa_scores(self, motion, low, high, speaker=None) -> torch.Tensor:
        """Per-frame SQA importance (B, T) of unmasked motion (what the EMA teacher computes)."""
        mask = torch.zeros(motion.shape[:2], dtype=torch.bool, device=motion.device)
        return self(motion, mask, low, high, speaker, inject=True, need_scores=True, scores_only=True)["score"]


def level_weights(levels: int) -> torch.Tensor:
    """Token cross-entropy weight of residual level k: 1 / (k + 1)."""
    return 1.0 / torch.arange(1, levels + 1, dtype=torch.float32)


def generator_losses(out: dict, codes: dict[str, torch.Tensor], code_vectors: dict[str, torch.Tensor],
                     weight: torch.Tensor, part_mask: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Token cross-entropy (level weights 1/(k+1)) and latent MSE per part and level, averaged over parts.

    codes {part: (B, N, L) long}; code_vectors {part: (B, N, L, d)}; weight (B,) per-window loss weight;
    part_mask {part: (B,) bool}: False where that part of the window must not teach (missing/fake data).
    Also returns token accuracy (level 0 and all levels) for monitoring.
    """
    ce_sum, mse_sum, acc0, acc = 0.0, 0.0, [], []
    for p in PARTS:
        logits = out["logits"][p]                         # (B, N, L, K)
        b, n, levels, k = logits.shape
        w = weight * part_mask[p].to(weight.dtype)        # (B,)
        denom = w.sum().clamp_min(1e-6) * n
        ce = F.cross_entropy(logits.reshape(-1, k), codes[p].reshape(-1), reduction="none").view(b, n, levels)
        ce = (ce * level_weights(levels).to(ce.device)).sum(-1)       # (B, N)
        ce_sum = ce_sum + (ce.sum(1) * w).sum() / denom
        mse = (out["features"][p] - code_vectors[p]).pow(2).mean(-1).sum(-1)  # (B, N)
        mse_sum = mse_sum + (mse.sum(1) * w).sum() / denom
        with torch.no_grad():
            hit = (logits.argmax(-1) == codes[p]).float()                  # (B, N, L)
            keep = part_mask[p].to(hit.dtype)[:, None, None]
            if keep.sum() > 0:
                acc0.append((hit[..., 0] * keep[..., 0]).sum() / (keep.sum() * n))
                acc.append((hit * keep).sum() / (keep.sum() * n * levels))
    nparts = len(PARTS)
    zero = torch.zeros((), device=weight.device)
    return {"token_ce": ce_sum / nparts, "latent_mse": mse_sum / nparts,
            "acc_level0": torch.stack(acc0).mean() if acc0 else zero,
            "acc_all": torch.stack(acc).mean() if acc else zero}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Names that differ from the official release's state-dict keys (the rest are identical), for a converter:
# official key = official_key(this model's key). The official spellings 'spearker' / 'classfier' are theirs.
_OFFICIAL_RENAMES = (
    ("mam.speech_query_", "MAM.moau_query_"),
    ("mam.position_embeddings_speech.", "MAM.position_embeddings_hubert."),
    ("mam.", "MAM."),
    ("speaker_encoder_", "spearker_encoder_"),
    ("sqa.", "mask_generator."),
)


def official_key(name: str) -> str | None:
    """This model's state-dict key -> the official `echomask` key (None: no official counterpart, e.g. the
    speech standardisation buffers, identity for HuBERT features)."""
    if name.startswith(("mam.speech_low.", "mam.speech_high.")):
        return None
    for mine, theirs in _OFFICIAL_RENAMES:
        if name.startswith(mine):
            name = theirs + name[len(mine):]
            break
    if name.startswith("predict_res_"):
        name = name.replace(".classifier_", ".classfier_")
    return name
