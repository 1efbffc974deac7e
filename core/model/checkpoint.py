"""Model bundles: the four tokenizers + their normalisation stats + the generator, in ONE safetensors file
with JSON metadata (kind, format version, config name and every config field, training info).

Nothing is unpickled: safetensors holds only tensors; the config is JSON. `load_model` checks the file kind,
the format version, the config (known fields, the expected preset when one is asked for) and that every
tensor fits, and raises core.errors.WeightsError saying what does not match and what to do.

Tensor names: 'tokenizer.<part>.<name>' and 'stats.<part>.{mean,std}' (as in a tokenizer file, so
tokenizers can be taken from a bundle), and 'generator.<name>'.
"""
from __future__ import annotations

import dataclasses
import json
import os

from ..errors import WeightsError

MODEL_KIND = "echomask-model"


@dataclasses.dataclass
class EchoMaskModel:
    """What inference needs: tokenizers (decode), generator, config, metadata."""
    config: object            # core.model.config.ModelConfig
    tokenizers: object        # core.model.tokenizer.TokenizerSet
    generator: object         # core.model.generator.EchoMaskGenerator
    meta: dict
    path: str | None = None
    face_head: object = None  # core.model.face_head.SpeechFaceHead, when the bundle has one (stage 3)
    token_prior: object = None  # core.model.token_prior.TokenPrior (core.generation.token_prior), when the bundle has one

    def to(self, device):
        self.tokenizers.to(device)
        self.generator.to(device)
        if self.face_head is not None:
            self.face_head.to(device)
        return self

    @property
    def device(self):
        return next(self.generator.parameters()).device


def resolved_config(config, generator) -> object:
    """A copy of `config` with the speech feature sizes the generator was built with written in."""
    cfg = dataclasses.replace(config, generator=dataclasses.replace(
        config.generator, speech_low_dim=generator.low_dim, speech_high_dim=generator.high_dim))
    return cfg


def save_model(path: str | os.PathLike, config, tokenizers, generator, info: dict | None = None,
               token_prior=None) -> None:
    """Write a bundle atomically (temp file, then rename); token_prior: a core.model.token_prior.TokenPrior to
    store with it (its tables, and its meta as info["token_prior"])."""
    import torch

    from .config import MODEL_FORMAT_VERSION
    from ..motion.skeleton import PARTS

    path = os.fspath(path)
    tensors = {}
    for p in PARTS:
        for name, t in tokenizers[p].state_dict().items():
            tensors[f"tokenizer.{p}.{name}"] = t.detach().cpu().contiguous()
    for name, arr in tokenizers.stats.to_arrays().items():
        tensors[name] = torch.from_numpy(arr.copy())
    for name, t in generator.state_dict().items():
        tensors[f"generator.{name}"] = t.detach().cpu().contiguous()
    info = dict(info or {})
    if token_prior is not None:
        tensors.update({k: t.contiguous() for k, t in token_prior.tensors().items()})
        info["token_prior"] = token_prior.meta
    cfg = resolved_config(config, generator)
    header = {"kind": MODEL_KIND, "format_version": str(MODEL_FORMAT_VERSION), "config_name": cfg.name,
              "config": json.dumps(cfg.to_dict()), "info": json.dumps(info)}
    _save_bundle(tensors, path, header)


def _save_bundle(tensors: dict, path: str, header: dict) -> None:
    """Write a bundle's tensors and metadata atomically (a temp file, then rename): a reader never sees half a file."""
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial"
    save_file(tensors, tmp, metadata=header)
    os.replace(tmp, path)


def _bundle_tensors(path: str, without_prefix: str | None = None) -> dict:
    """Every tensor of the bundle at `path` (but those whose name starts with `without_prefix`)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys() if not (without_prefix and k.startswith(without_prefix))}


def read_header(path: str | os.PathLike) -> dict:
    """The JSON metadata of a bundle (cheap: no tensors are read)."""
    from safetensors import safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise WeightsError(f"{os.path.basename(path)} is not a readable safetensors weights file ({exc}); "
                           f"the download or copy may be incomplete.") from None


def load_model(path: str | os.PathLike, expected_config: str | None = None, device="cpu") -> EchoMaskModel:
    """Load and check a bundle; raises WeightsError with what is wrong and what to do."""
    from .config import MODEL_FORMAT_VERSION, ModelConfig
    from .generator import EchoMaskGenerator
    from .tokenizer import FILE_KIND as TOKENIZER_KIND
    from .tokenizer import TokenizerSet
    from ..motion.motion_repr import NormStats
    from ..motion.skeleton import PARTS

    path = os.fspath(path)
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise WeightsError(f"Model weights not found: {path}. Use the bundled weights "
                           f"(weights/echomask_small.safetensors) or train a model with `python -m core train`.")
    header = read_header(path)
    kind = header.get("kind")
    if kind == TOKENIZER_KIND:
        raise WeightsError(f"{name} holds only the motion tokenizers, not a full EchoMask model; choose a "
                           f"model file made by `python -m core train` (e.g. weights/echomask_small.safetensors).")
    if kind != MODEL_KIND:
        raise WeightsError(f"{name} is not an EchoMask model file (kind {kind!r}); choose an EchoMask "
                           f"model weights file (.safetensors made by `python -m core train`).")
    version = header.get("format_version")
    if version == "1":
        raise WeightsError(f"{name} was made by an earlier version of EchoMask (weights format 1), whose generator "
                           f"this version no longer runs: retrain it (`python -m core train`), or for the official "
                           f"release convert it again (`python -m core convert-official`).")
    if version != str(MODEL_FORMAT_VERSION):
        raise WeightsError(f"{name} has weights format version {version}, but this version of EchoMask reads "
                           f"version {MODEL_FORMAT_VERSION}; use weights made for this version (or retrain them).")
    try:
        config = ModelConfig.from_dict(json.loads(header["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{name}: its configuration is missing or unreadable ({exc}); the file is damaged.") from None
    if expected_config is not None and expected_config != config.name:
        raise WeightsError(f"{name} holds a '{config.name}' model, but '{expected_config}' was asked for; "
                           f"choose weights trained with '{expected_config}' or select '{config.name}'.")
    tensors = _bundle_tensors(path)
    try:
        stats = NormStats.from_arrays({k: v.numpy() for k, v in tensors.items() if k.startswith("stats.")})
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{name}: normalisation statistics are missing or malformed ({exc}).") from None
    tokenizers = TokenizerSet(config, stats)
    for p in PARTS:
        prefix = f"tokenizer.{p}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        _load_strict(tokenizers[p], sd, f"{name}: the {p} tokenizer", config.name)
        for layer in tokenizers[p].quantizer.layers:
            layer.initialized.fill_(True)
    generator = EchoMaskGenerator(config)
    sd = {k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")}
    _load_strict(generator, sd, f"{name}: the generator", config.name)
    info = json.loads(header.get("info", "{}") or "{}")
    face_head = _load_face_head(tensors, info, name)
    token_prior = _load_token_prior(tensors, info, name)
    model = EchoMaskModel(config, tokenizers.eval(), generator.eval(), info, path, face_head, token_prior)
    return model.to(device)


def _load_token_prior(tensors: dict, info: dict, name: str):
    """The bundle's token bigram prior (core.generation.token_prior), or None when it has none."""
    from ..errors import EchoMaskError
    from .token_prior import TokenPrior

    try:
        return TokenPrior.from_tensors(tensors, info.get("token_prior"))
    except EchoMaskError as exc:
        raise WeightsError(f"{name}: {exc}") from None


def write_token_prior(source: str | os.PathLike, path: str | os.PathLike, prior) -> None:
    """Copy the bundle `source` to `path` (may be the same file) with `prior`'s tables and info["token_prior"]
    = prior.meta (atomically); a prior already in `source` is replaced."""
    from .token_prior import TENSOR_PREFIX

    _rewrite_bundle(source, path, TENSOR_PREFIX, prior.tensors(), "token_prior", prior.meta)


def _rewrite_bundle(source, path, prefix: str, tensors: dict, info_key: str, info_value) -> None:
    """Copy the bundle `source` to `path` (atomically) with its tensors under `prefix` replaced by `tensors` (full
    names) and info[info_key] = info_value: how a stage added after training (face head, token prior) is stored."""
    header = read_header(source)
    if header.get("kind") != MODEL_KIND:
        raise WeightsError(f"{os.path.basename(os.fspath(source))} is not an EchoMask model file.")
    kept = _bundle_tensors(os.fspath(source), without_prefix=prefix)
    kept.update({k: t.detach().cpu().contiguous() for k, t in tensors.items()})
    meta = json.loads(header.get("info", "{}") or "{}")
    meta[info_key] = info_value
    header["info"] = json.dumps(meta)
    _save_bundle(kept, os.fspath(path), header)


FACE_HEAD_PREFIX = "face_head."


def _load_face_head(tensors: dict, info: dict, name: str):
    """The bundle's speech face head (core.model.face_head), or None when it has none."""
    sd = {k[len(FACE_HEAD_PREFIX):]: v for k, v in tensors.items() if k.startswith(FACE_HEAD_PREFIX)}
    if not sd:
        return None
    from .face_head import FaceHeadConfig, SpeechFaceHead

    try:
        cfg = FaceHeadConfig.from_dict((info.get("face_head") or {})["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{name}: its face head has no readable configuration ({exc}); the file is damaged. "
                           f"Train the face head again (`python -m core train-face-head`).") from None
    head = SpeechFaceHead(cfg)
    _load_strict(head, sd, f"{name}: the face head", "face head")
    return head.eval()


def write_face_head(source: str | os.PathLike, path: str | os.PathLike, head, info: dict) -> None:
    """Copy the bundle `source` to `path` with `head`'s tensors and info["face_head"] = info (atomically);
    a face head already in `source` is replaced."""
    _rewrite_bundle(source, path, FACE_HEAD_PREFIX,
                    {FACE_HEAD_PREFIX + k: t for k, t in head.state_dict().items()}, "face_head", info)


# Decoding defaults a bundle may carry in its info["decoding"], measured for its own weights (the best choice
# differs between training runs: weights/MODEL_CARD.md). GenerationOptions fields left at None read them.
DECODING_FIELDS = {"levels": (int, 0, 16), "guidance": (float, 0.0, 5.0),   # name: (type, lowest, highest)
                   "gesture_gain": (float, 0.0, 2.0), "token_prior": (float, 0.0, 32.0)}


def decoding_defaults(meta: dict) -> dict:
    """The decoding defaults recorded in a bundle's info (e.g. {"levels": 0}); {} when none are."""
    found = (meta or {}).get("decoding") or {}
    return {k: v for k, v in found.items() if k in DECODING_FIELDS}


def write_decoding_defaults(path: str | os.PathLike, note: str | None = None, **defaults) -> dict:
    """Record decoding defaults measured for the weights in `path` (e.g. levels=0) in its info; a value of None
    removes one. The file is rewritten atomically with the same tensors. Returns the recorded defaults."""
    path = os.fspath(path)
    header = read_header(path)
    if header.get("kind") != MODEL_KIND:
        raise WeightsError(f"{os.path.basename(path)} is not an EchoMask model file; decoding defaults belong "
                           f"in a model made by `python -m core train`.")
    info = json.loads(header.get("info", "{}") or "{}")
    decoding = dict(info.get("decoding") or {})
    for key, value in defaults.items():
        if key not in DECODING_FIELDS:
            raise WeightsError(f"Unknown decoding default {key!r}; known: {', '.join(DECODING_FIELDS)}.")
        kind, lo, hi = DECODING_FIELDS[key]
        if value is None:
            decoding.pop(key, None)
        elif kind is int and not (isinstance(value, int) and lo <= value <= hi):
            raise WeightsError(f"Decoding default {key} must be a whole number from {lo} to {hi}; got {value!r}.")
        elif kind is float and not (isinstance(value, (int, float)) and lo <= value <= hi):
            raise WeightsError(f"Decoding default {key} must be a number from {lo:g} to {hi:g}; got {value!r}.")
        else:
            decoding[key] = kind(value)
    if note is not None:
        decoding["note"] = note
    info["decoding"] = decoding
    header["info"] = json.dumps(info)
    _save_bundle(_bundle_tensors(path), path, header)
    return decoding_defaults(info)


def _load_strict(module, state: dict, what: str, config_name: str) -> None:
    if not state:
        raise WeightsError(f"{what} is missing from the file; it is not a complete EchoMask model.")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:400]
        raise WeightsError(f"{what} does not fit the '{config_name}' configuration ({detail}); the file is "
                           f"damaged or was made by another version of EchoMask.") from None
