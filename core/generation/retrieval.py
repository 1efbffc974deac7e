"""Retrieval-augmented decoding (ours, an extension of EchoMask's design): a bank of training windows keyed
by their speech as the model's MAM speech branch encodes it, and, for each window being generated, a prior
on the level-0 tokens from the bank window whose speech is nearest. The prior is added to the generator's
level-0 logits (`weight` x one-hot), so the masked model still decides, frame by frame, with its context;
the bank only tilts it towards motion this speaker really made for similar speech.

Measured (weights/MODEL_CARD.md, bench/experiment_retrieval_prior.py): on the held-out tails, with a bank
of the training capture and the bundled weights, weight 8 (the default) with every RVQ level takes the 5-seed
mean FGD from 148.2 to 106.7 (motion matching 136.3); at weight 32 the retrieval alone nearly decides (110.6).

A bank is built from the user's own training data (`python -m core build-retrieval-bank`) and belongs to
one set of weights (its keys are that model's speech encoding); none is shipped: the bundled weights' data
(BEAT2) is not ours to redistribute, even as tokens. Pure torch + numpy, no bpy.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..errors import EchoMaskError
from ..motion.skeleton import PARTS

BANK_KIND = "echomask-retrieval-bank"
BANK_FORMAT = 1


def model_fingerprint(generator) -> str:
    """Identifies the speech encoder a bank's keys come from (the MAM's parameters)."""
    h = hashlib.sha1()
    for name, t in sorted(generator.mam.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def speech_keys(cond) -> "torch.Tensor":
    """MAM speech conditions {part: (B, T, d)} -> unit-length keys (B, parts x T x d)."""
    import torch

    return torch.nn.functional.normalize(torch.cat([cond[p].flatten(1).float() for p in PARTS], 1), dim=1)


class RetrievalBank:
    """keys (N, D) unit vectors; tokens {part: (N, n_tok)} level-0 codes; fingerprint of the model."""

    def __init__(self, keys, tokens: dict, fingerprint: str, meta: dict | None = None):
        import torch

        self.keys = torch.as_tensor(keys, dtype=torch.float32)
        self.tokens = {p: torch.as_tensor(tokens[p], dtype=torch.long) for p in PARTS}
        self.fingerprint = fingerprint
        self.meta = dict(meta or {})
        n = len(self.keys)
        if n == 0 or any(len(v) != n for v in self.tokens.values()):
            raise EchoMaskError("The retrieval bank is empty or inconsistent; rebuild it.")

    def __len__(self):
        return len(self.keys)

    @classmethod
    def from_windows(cls, model, low, high, tokens: dict, meta: dict | None = None) -> "RetrievalBank":
        """Bank of windows from their speech features low (N, T, Cl), high (N, T, Ch) and level-0 tokens
        {part: (N, n_tok)}."""
        import torch

        gen = model.generator
        keys = []
        with torch.inference_mode():
            for lo in range(0, len(low), 64):
                cond = gen.mam.speech_branch(torch.as_tensor(low[lo:lo + 64], dtype=torch.float32, device=model.device),
                                             torch.as_tensor(high[lo:lo + 64], dtype=torch.float32, device=model.device))
                keys.append(speech_keys(cond).cpu())
        return cls(torch.cat(keys), tokens, model_fingerprint(gen), meta)

    def nearest(self, cond) -> int:
        """Index of the bank window whose speech is nearest to one window's (cond {part: (1, T, d)})."""
        return int((speech_keys(cond).cpu() @ self.keys.T)[0].argmax())

    def token_prior(self, cond, weight: float, n_codes: int) -> dict:
        """{part: (n_tok, n_codes)} additive level-0 logits for one window: `weight` on the tokens of the
        bank window whose speech is nearest, 0 elsewhere."""
        import torch

        j = self.nearest(cond)
        return {p: torch.nn.functional.one_hot(self.tokens[p][j], n_codes).float() * float(weight) for p in PARTS}

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        tensors = {"keys": self.keys.numpy().astype(np.float16)}
        tensors.update({f"tokens.{p}": self.tokens[p].numpy().astype(np.int32) for p in PARTS})
        meta = {"kind": BANK_KIND, "format": str(BANK_FORMAT), "fingerprint": self.fingerprint,
                "meta": json.dumps(self.meta)}
        tmp = f"{os.fspath(path)}.part"
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)


def load_bank(path: str | os.PathLike, generator=None) -> RetrievalBank:
    """A bank saved by `RetrievalBank.save`; with `generator`, checked to belong to that model."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise EchoMaskError(f"Retrieval bank not found: {path}. Build one with "
                            "`python -m core build-retrieval-bank`, or leave the option empty.")
    try:
        with safe_open(path, "np") as f:
            meta = f.metadata() or {}
            if meta.get("kind") != BANK_KIND:
                raise EchoMaskError(f"{path} is not a retrieval bank (built by `python -m core build-retrieval-bank`).")
            if meta.get("format") != str(BANK_FORMAT):
                raise EchoMaskError(f"The retrieval bank {path} has format {meta.get('format')}, this version reads "
                                    f"{BANK_FORMAT}; rebuild it with this version.")
            keys = f.get_tensor("keys").astype(np.float32)
            tokens = {p: f.get_tensor(f"tokens.{p}").astype(np.int64) for p in PARTS}
    except EchoMaskError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise EchoMaskError(f"Could not read the retrieval bank {path} ({exc}); rebuild it.") from exc
    bank = RetrievalBank(keys, tokens, meta.get("fingerprint", ""), json.loads(meta.get("meta", "{}")))
    if generator is not None and bank.fingerprint != model_fingerprint(generator):
        raise EchoMaskError(f"The retrieval bank {os.path.basename(path)} was built for other weights; rebuild it "
                            "for these with `python -m core build-retrieval-bank --weights ...`.")
    return bank


def build_retrieval_bank(model, entries, log=print) -> RetrievalBank:
    """A bank of every training window (no mirroring or time-stretch; held-out tails excluded) of `entries`
    (core.training.data manifest entries with speech), keyed with `model`'s speech encoder."""
    from ..training.generator_data import GeneratorData, builtin_feature_fn, default_cache_dir

    if model.config.generator.speech_backend != "builtin":
        raise EchoMaskError("Retrieval banks need a model with the built-in speech features.")
    data = GeneratorData(entries, model.tokenizers, model.config,
                         builtin_feature_fn(model.config.generator.speech_backend, default_cache_dir()),
                         "train", log=log, mirror=False, stretch=())
    if len(data) == 0:
        raise EchoMaskError("No training window in these takes is long enough for a retrieval bank.")
    b = data.batch(np.arange(len(data)), "cpu")
    tokens = {p: b["codes"][p][:, :, 0] for p in PARTS}
    takes = sorted({os.path.basename(e.npz) for e in entries})
    return RetrievalBank.from_windows(model, b["low"].numpy(), b["high"].numpy(), tokens,
                                      {"windows": len(data), "takes": takes})


def run_cli(args) -> int:
    """`python -m core build-retrieval-bank`: a bank for `--weights` from `--manifest` (shared or a folder)."""
    from ..model.checkpoint import load_model
    from ..training.data import folder_manifest, shared_training_manifest
    from ..paths import DEFAULT_MODEL as DEFAULT_WEIGHTS

    model = load_model(args.weights or DEFAULT_WEIGHTS)
    if args.manifest == "shared":
        entries = shared_training_manifest()
        if not args.all_takes:   # the capture only: other models' outputs carry their artefacts
            entries = [e for e in entries if e.kind == "gt"]
    else:
        entries = folder_manifest(args.manifest)
    bank = build_retrieval_bank(model, entries, log=print)
    bank.save(args.out)
    print(f"wrote {args.out}: {len(bank)} windows from {len(bank.meta['takes'])} takes, for "
          f"{os.path.basename(os.fspath(args.weights or DEFAULT_WEIGHTS))}")
    return 0
