"""The EchoMask generator (method §5): masked 337-d motion + speech -> RVQ token logits per part and level.

One window of T = 64 frames (N = 16 tokens). Blocks, in the order they run (names follow the official
release's modules so its checkpoint maps onto this one; see docs/OFFICIAL_RELEASE_FORMAT.md §6):

1. `mam`: speech branch of the motion-audio alignment module -> cond_p (B, T, d) for every part.
2. `motion_input` standardises the 337-d frames with the training data's statistics (ours: the raw frame is
   mostly constant offsets, which drowned the between-window signal; identity for converted official
   weights); masked frames are replaced by the learned `mask_embeddings` (near the data mean);
   `motion_encoder` (conv, no downsampling) -> motion hint (B, T, d).
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
   lower <- upper + hands' (official; `small` leaves it out, see GeneratorConfig.cross_part).
8. Token heads: level 0 by `{part}_classifier` (MLP); levels 1..L-1 by `predict_res_{part}`, cascaded
   decoders attending to cond_p. Every level also returns its continuous feature (regressed onto the
   level's code vector in training).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..motion.motion_repr import MOTION_DIM
from ..motion.skeleton import PARTS
from ..speech.builtin import HIGH_DIM as BUILTIN_HIGH_DIM
from ..speech.builtin import LOW_DIM as BUILTIN_LOW_DIM
from .gen_layers import MLP, ConvMotionEncoder, HalveTime, PeriodicPositionalEncoding, decoder, encoder
from .generator_config import body_speech_problem
from .mam import MAM, Standardize
from .sqa import SQA_PARTS, SQABlock

BUILTIN_DIMS = (BUILTIN_LOW_DIM, BUILTIN_HIGH_DIM)

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
        self.mask_unit, self.mask_schedule = g.mask_unit, g.mask_schedule
        if config.window % 4 or tok.downsample != 4:
            raise ValueError("the generator needs 4x token downsampling and a window that is a multiple of 4")
        d, h, k = tok.code_dim, g.hidden, tok.nb_code
        levels = min(g.active_levels, tok.num_quantizers) if g.active_levels > 0 else tok.num_quantizers
        self.d, self.hidden, self.nb_code, self.levels = d, h, k, levels
        low_dim, high_dim = speech_dims(g)
        self.low_dim, self.high_dim = low_dim, high_dim
        drop = g.dropout

        problem = body_speech_problem(g)
        if problem is None and g.body_speech != "full" and (low_dim, high_dim) != BUILTIN_DIMS:
            problem = f"body speech {g.body_speech!r} needs the built-in feature sizes {BUILTIN_DIMS}"
        if problem:
            raise ValueError(problem)
        self.mam = MAM(d, low_dim, high_dim, g.mam_layers, g.mam_heads, g.mam_ff, g.mam_dec_layers, drop,
                       g.nce_temperature, body_speech=g.body_speech,
                       body_speech_window=g.body_speech_window)
        self.motion_input = Standardize(MOTION_DIM)
        self.mask_embeddings = nn.Parameter(torch.randn(1, 1, MOTION_DIM) * 0.02)
        self.motion_encoder = ConvMotionEncoder(MOTION_DIM, d, g.motion_stages)
        self.speaker_encoder_face = nn.Embedding(g.num_speakers, h)
        self.speaker_encoder_body = nn.Embedding(g.num_speakers, h)
        # Small speaker vectors: with one speaker an N(0, 1) row is a large constant added to every frame,
        # which swamped the motion signal in the trunk (measured at initialisation).
        for emb in (self.speaker_encoder_face, self.speaker_encoder_body):
            nn.init.normal_(emb.weight, std=0.02)
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
        # Known-token hints (ours, `token_hints`): code vectors of the visible tokens -> each part's decoder.
        self.token_hints = g.token_hints
        if g.token_hints:
            for p in PARTS:  # LayerNorm: code vectors' scale depends on the tokenizer
                setattr(self, f"known_tokens_{p}", nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h)))
        # Cross-part refinement (the official layout; `cross_part` False leaves it out).
        self.cross_part = g.cross_part
        if g.cross_part:
            for name in ("hands_face_decoder", "face_hands_decoder", "upper_hands_decoder", "lower_hands_decoder"):
                setattr(self, name, decoder(d, g.cross_heads, g.cross_ff, 1, drop))
        # Token heads.
        for p in PARTS:
            setattr(self, f"{p}_classifier", MLP(d, g.classifier_hidden, k))
            setattr(self, f"predict_res_{p}",
                    ResidualLevelHeads(d, k, levels, g.res_heads, g.res_ff, g.res_layers, drop))
        _fan_in_init(self)

    def forward(self, motion: torch.Tensor, mask: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
                speaker: torch.Tensor | None = None, inject: bool = True, need_scores: bool = False,
                cond: dict[str, torch.Tensor] | None = None, scores_only: bool = False,
                known: dict[str, torch.Tensor] | None = None) -> dict:
        """
        motion (B, T, 337) raw 337-d frames (masked frames may hold anything); mask (B, T) bool/0-1,
        1 = masked; low (B, T, LOW) / high (B, T, HIGH) speech features; speaker (B,) long (default the
        configured inference speaker); inject: add the SQA output to the trunk (speech injection);
        inject may also be a (B,) bool tensor (per-sample switch);
        need_scores: also return the SQA per-frame score (scores_only: stop after the SQA block); cond: MAM conditions already computed for these
        speech features (the three training passes share one speech-branch run).
        known {part: (B, N, d)}: with `token_hints`, the code vectors (sum of the predicted levels) of the
        visible tokens, zero where a token is hidden (see `known_token_vectors`); None = no token visible.

        Returns {"logits": {part: (B, N, L, K)}, "features": {part: (B, N, L, d)}, "cond": {part: (B, T, d)},
        "score": (B, T) or None}.
        """
        b, t, _ = motion.shape  # low/high may be None when `cond` is given
        if speaker is None:
            speaker = torch.full((b,), self.default_speaker, dtype=torch.long, device=motion.device)
        if cond is None:
            cond = self.mam.speech_branch(low, high)
        m = mask.to(motion.dtype).unsqueeze(-1)
        hint = self.motion_encoder(self.motion_input(motion) * (1 - m) + self.mask_embeddings * m)
        spk = speaker.long()[:, None].expand(b, t)
        spk_face, spk_body = self.speaker_encoder_face(spk), self.speaker_encoder_body(spk)

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

        memory = self.feature2face(torch.cat([cond["face"], self.bodyhints_face(hint)], -1))
        face_query = spk_face
        if self.token_hints and known is not None:
            face_query = face_query + self._token_hint("face", known, t)
        face = self.face_decoder(self.position_embeddings(face_query), memory)
        face = self.face1d_2(self.face_latent_mlp(self.face1d(self.face2latent(face))))

        body = self.body1d(body)
        spk_down = self.speaker_encoder_body1d(spk_body)
        lat = {p: getattr(self, f"motion2latent_{p}")(body) for p in BODY_PARTS}
        part = {}
        for p in BODY_PARTS:
            others = sum(lat[q] for q in BODY_PARTS if q != p)
            query = lat[p] + spk_down
            if self.token_hints and known is not None:
                query = query + self._token_hint(p, known, query.shape[1])
            x = getattr(self, f"{p}_decoder")(self.position_embeddings(query), others) + lat[p]
            part[p] = getattr(self, f"{p}1d")(getattr(self, f"motion_down_{p}")(x))
        part["face"] = face

        refined = part
        if self.cross_part:
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

    def _token_hint(self, part: str, known: dict, length: int) -> torch.Tensor:
        """(B, length, H): the part's known-token hint, repeated to `length` steps; zero at hidden tokens
        (whose code vector is all zeros: no real token sums to exactly zero)."""
        vec = known[part]                                                    # (B, N, d)
        visible = vec.ne(0).any(-1, keepdim=True).to(vec.dtype)
        hint = getattr(self, f"known_tokens_{part}")(vec) * visible         # (B, N, H)
        return hint.repeat_interleave(length // vec.shape[1], 1)

    @torch.no_grad()
    def sqa_scores(self, motion, low, high, speaker=None) -> torch.Tensor:
        """Per-frame SQA importance (B, T) of unmasked motion (what the EMA teacher computes)."""
        mask = torch.zeros(motion.shape[:2], dtype=torch.bool, device=motion.device)
        return self(motion, mask, low, high, speaker, inject=True, need_scores=True, scores_only=True)["score"]


def known_token_vectors(tokenizers, codes: dict[str, torch.Tensor], visible: torch.Tensor, levels: int):
    """{part: (B, N, d)}: sum of the first `levels` code vectors of each token, zero where not `visible`
    (B, N) bool. codes {part: (B, N, L)} (-1 = no code at that level)."""
    out = {}
    for p, c in codes.items():
        vec = tokenizers[p].codes_to_latent(c[..., :levels])
        out[p] = vec * visible.to(vec.dtype).unsqueeze(-1)
    return out


def _fan_in_init(model: nn.Module) -> None:
    """Weights of every Linear / Conv1d outside the attention blocks drawn with std 1/sqrt(fan-in), so
    each map keeps the scale of its input. PyTorch's default (uniform, a = sqrt(5)) shrinks it about 3x per
    layer: at initialisation the motion hint reached the trunk at a tenth of the position encoding's size
    and the between-window share of the trunk's variation was 0.1 %, so the model never learnt to read
    the visible frames. Attention blocks keep their own (Xavier) initialisation; biases start at zero."""
    attention = tuple(m for m in model.modules() if isinstance(m, (nn.TransformerEncoder, nn.TransformerDecoder)))
    inside = {id(sub) for block in attention for sub in block.modules()}
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)) and id(m) not in inside:
            fan_in = m.weight[0].numel()
            nn.init.normal_(m.weight, std=fan_in ** -0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def level_weights(levels: int) -> torch.Tensor:
    """Token cross-entropy weight of residual level k: 1 / (k + 1)."""
    return 1.0 / torch.arange(1, levels + 1, dtype=torch.float32)


def generator_losses(out: dict, codes: dict[str, torch.Tensor], code_vectors: dict[str, torch.Tensor],
                     weight: torch.Tensor, part_mask: dict[str, torch.Tensor],
                     weight_sums: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Token cross-entropy (level weights 1/(k+1)) and latent MSE per part and level, averaged over parts.

    codes {part: (B, N, L) long}; code_vectors {part: (B, N, L, d)}; weight (B,) per-window loss weight;
    part_mask {part: (B,) bool}: False where that part of the window must not teach (missing/fake data);
    weight_sums {part: scalar}: the normaliser, Σ weight over the windows that teach the part (default:
    this batch's; in distributed training, the global batch's).
    Also returns token accuracy (level 0 and all levels) for monitoring.
    """
    ce_sum, mse_sum, acc0, acc = 0.0, 0.0, [], []
    for p in PARTS:
        logits = out["logits"][p]                         # (B, N, L, K); L = the levels the model predicts
        b, n, levels, k = logits.shape
        target, target_vec = codes[p][..., :levels], code_vectors[p][..., :levels, :]
        w = weight * part_mask[p].to(weight.dtype)        # (B,)
        denom = (w.sum() if weight_sums is None else weight_sums[p]).clamp_min(1e-6) * n
        ce = F.cross_entropy(logits.reshape(-1, k), target.reshape(-1), reduction="none").view(b, n, levels)
        ce = (ce * level_weights(levels).to(ce.device)).sum(-1)       # (B, N)
        ce_sum = ce_sum + (ce.sum(1) * w).sum() / denom
        mse = (out["features"][p] - target_vec).pow(2).mean(-1).sum(-1)  # (B, N)
        mse_sum = mse_sum + (mse.sum(1) * w).sum() / denom
        with torch.no_grad():
            hit = (logits.argmax(-1) == target).float()                    # (B, N, L)
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
    speech and motion standardisation buffers, identity for the release)."""
    if name.startswith(("mam.speech_low.", "mam.speech_high.", "motion_input.")):
        return None
    for mine, theirs in _OFFICIAL_RENAMES:
        if name.startswith(mine):
            name = theirs + name[len(mine):]
            break
    if name.startswith("predict_res_"):
        name = name.replace(".classifier_", ".classfier_")
    return name
