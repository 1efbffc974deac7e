"""Speech -> Take: the public entry point of generation (CLI, worker, main job, eval and tests call it).

`generate(audio, options, ...)` checks the input, loads the model (bundled by default, cached) and hands
over to the loop of the model's kind: this project's models (core.generation.loop, iterative masked
decoding over 64-frame windows) or a converted official release (core.generation.official). Options:
core.generation.options.GenerationOptions, with keyword overrides (`generate(audio, seed=3, steps=1)`).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import AudioError, EchoMaskError
from .features import FeatureStream, check_audio  # noqa: F401  (FeatureStream: public)
from .loop import COARSE_LEVEL_PARTS, decode_chunked, neutral_seed_codes  # noqa: F401  (public helpers)
from .options import DEFAULT_LIPSYNC, GenerationOptions
from .post import music_like
from ..paths import DEFAULT_MODEL
from ..motion.skeleton import PARTS

SAMPLE_RATE = 16000
DEFAULT_WEIGHTS = DEFAULT_MODEL
GENERATION_LIPSYNC = DEFAULT_LIPSYNC   # phone-mouth strength for generated takes (docs/LIPSYNC.md)
MIN_SECONDS = 0.1               # shorter clips are refused; shorter than a window are padded with silence
_MODEL_CACHE: dict = {}


class GenerationCancelled(EchoMaskError):
    """The user cancelled generation (raised between windows)."""


def resolve_model(model=None, device="auto"):
    """None -> the bundled default weights; a path -> that bundle; an EchoMaskModel -> moved to `device`.
    Loaded models are cached by (path, modification time, device)."""
    from ..model.checkpoint import EchoMaskModel, load_model
    from ..jobs.devices import resolve_device

    dev = resolve_device(device)
    if isinstance(model, EchoMaskModel):
        return model.to(dev)
    path = os.fspath(model) if model is not None else str(DEFAULT_WEIGHTS)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.safetensors")):
        path = os.path.join(path, "model.safetensors")  # a model folder, e.g. weights/echomask_paper/
    if not os.path.isfile(path):
        raise EchoMaskError(f"Model weights not found: {path}. " + (
            "The bundled default weights are missing from the add-on; reinstall it." if model is None
            else "Check the path, or leave it empty to use the bundled weights."))
    key = (os.path.abspath(path), os.path.getmtime(path), str(dev))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = load_model(path, device=dev)
    return _MODEL_CACHE[key]


def generate(audio, options: GenerationOptions | None = None, *, model=None, known_take=None, known_mask=None,
             progress=None, cancel=None, feature_fn=None, chunk_frames: int = 1800, timings=None,
             fps: float = 30.0, **overrides):
    """Speech (16 kHz mono samples, or a file path) -> Take at `fps` (30 = the model's rate).

    options / overrides: GenerationOptions fields (seed, temperature, steps, intensity, travel, lipsync,
    parts, device, threads). known_take / known_mask: keep `known_take`'s motion for the frames in
    `known_mask` (in-betweening: those frames are given to the model as known) and for the parts not in
    `parts`. progress(fraction, message) is called between windows; cancel() -> True stops with
    GenerationCancelled. timings: optional dict that receives seconds spent in features / model / decoding.
    """
    import torch

    overrides = {k: v for k, v in overrides.items() if v is not None}   # None = the default
    options = (options or GenerationOptions()).replace(**overrides)
    if abs(fps - 30.0) > 1e-6:
        raise EchoMaskError("The model generates at 30 fps; resample the take afterwards "
                            "(core.motion.take.resample_take) for another frame rate.")
    audio = check_audio(audio)
    seconds = len(audio) / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise AudioError(f"The speech is only {seconds * 1000:.0f} ms long; give at least "
                         f"{MIN_SECONDS:.1f} s of speech.")
    if float(np.max(np.abs(audio))) > 50.0:
        raise AudioError("The speech samples are far outside [-1, 1]; pass float audio in [-1, 1] "
                         "(core.speech.audio.load_speech reads files correctly).")
    parts = options.parts or PARTS
    if (known_mask is not None or set(parts) != set(PARTS)) and known_take is None:
        raise EchoMaskError("Keeping frames or body parts needs the existing take (known_take).")
    if len(audio) / SAMPLE_RATE > 30 and music_like(audio):
        warnings.warn("This audio looks like music rather than speech; gestures follow speech best.")

    def check_cancel():
        if cancel is not None and cancel():
            raise GenerationCancelled("Generation cancelled.")

    check_cancel()
    n_frames = max(1, int(round(len(audio) * fps / SAMPLE_RATE)))
    known = _known_inputs(known_take, known_mask, n_frames, parts)
    before = torch.get_num_threads()
    if options.threads > 0:  # a batch of one window: a single thread is fastest, spinning threads slow a busy CPU
        torch.set_num_threads(options.threads)
    try:
        mdl = resolve_model(model, options.device)
        if (mdl.meta or {}).get("pipeline") == "official-release":  # a converted official release
            from .official import generate_take_official

            if options.retrieval_bank and options.retrieval_weight > 0:
                raise EchoMaskError("Retrieval banks work with this project's models, not the converted official "
                                    "release; leave the bank empty for it.")
            if options.token_prior:
                raise EchoMaskError("The token prior works with this project's models, not the converted official "
                                    "release; set it to 0 or leave it unset for it.")

            take = generate_take_official(audio, mdl, options, known, progress, check_cancel, timings,
                                          feature_fn=None if feature_fn is None else (lambda a, n: feature_fn(a, fps)))
        else:
            from .loop import generate_take

            take = generate_take(audio, mdl, options, known, progress, check_cancel, feature_fn, chunk_frames,
                                 timings, fps)
    finally:
        torch.set_num_threads(before)
    if progress is not None:
        progress(1.0, "Done")
    return take.validate("generated take")


def _known_inputs(known_take, known_mask, n_frames: int, parts):
    """(known parts {part: (n, D)}, known frames (n,) bool, the known take) or None."""
    if known_take is None:
        return None
    from ..motion.motion_repr import take_to_parts
    from ..motion.take import load_take

    if isinstance(known_take, (str, os.PathLike)):  # the worker passes file paths
        known_take = load_take(known_take)
    from ..motion.take_parts import fit_known_to_speech

    known_take, known_mask = fit_known_to_speech(known_take, known_mask, n_frames)  # a frame or two of rounding
    known_parts = {p: v[:n_frames] for p, v in take_to_parts(known_take.slice(0, n_frames)).items()}
    if known_mask is None:
        frames = np.ones(n_frames, bool) if set(parts) == set(PARTS) else np.zeros(n_frames, bool)
    else:
        m = np.asarray(known_mask, bool)[:n_frames]
        frames = np.zeros(n_frames, bool)
        frames[:len(m)] = m
    return known_parts, frames, known_take
