"""High-level speech: phones from PocketSphinx's all-phone recogniser (English model from its wheel, fully
offline), turned into per-frame phone posteriors at the feature frame rate.

The recogniser runs on pieces of about 30 s cut at pauses (see chunking.py), each decoded as one
utterance (its batch cepstral mean normalisation then adapts to each piece), so memory stays flat.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, asdict

import numpy as np

from ..errors import EchoMaskError
from .chunking import split_points

SAMPLE_RATE = 16000
RECOGNISER_FPS = 100  # PocketSphinx's frame rate (10 ms frames)

# The context-independent phones of PocketSphinx's en-us model (its mdef), in a fixed order: the column
# order of the high-level features. '+NSN+' is noise, '+SPN+' spoken noise, 'SIL' silence.
PHONES = ("SIL", "+NSN+", "+SPN+",
          "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
          "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH",
          "UW", "V", "W", "Y", "Z", "ZH")
PHONE_INDEX = {phone: i for i, phone in enumerate(PHONES)}
NON_SPEECH = ("SIL", "+NSN+", "+SPN+")
NUM_PHONES = len(PHONES)


@dataclass(frozen=True)
class RecogniserConfig:
    """PocketSphinx all-phone search settings (PocketSphinx's own defaults: the wheel's trigram phone LM,
    beam=pbeam=1e-48, ds=1, topn=4, lw=6.5). RECOGNISER_PRESETS and `bench/bench_speech_features.py
    --sweep` give the measured speed/accuracy trade-off."""
    phone_lm: str = "loop"  # "loop": every phone equally likely after any other; "trigram": the wheel's LM
    beam: float = 1e-20
    pbeam: float = 1e-20
    ds: int = 2             # score the acoustic model on every ds-th 10 ms frame (the main speed lever)
    topn: int = 4           # Gaussians per senone
    lw: float = 1.0         # phone-LM weight (with the loop: a phone insertion penalty)
    chunk_s: float = 30.0

    def decoder_kwargs(self) -> dict:
        kwargs = asdict(self)
        kwargs.pop("chunk_s")
        kwargs.pop("phone_lm")
        return kwargs


# Measured on the three MFA-aligned BEAT2 clips (frame agreement at 10 ms; CPU s per s of speech on a
# loaded 2-core machine): the phone loop scores as well as the trigram phone LM (the acoustic model does the
# work) at about half the search cost.
RECOGNISER_PRESETS = {
    "fast": RecogniserConfig(),                                           # 0.443 @ ~0.019: the built-in choice
    "accurate": RecogniserConfig(ds=1, beam=1e-30, pbeam=1e-30),          # 0.455 @ ~0.031
    "fastest": RecogniserConfig(ds=3, topn=2),                            # 0.384 @ ~0.012
    "pocketsphinx-default": RecogniserConfig(phone_lm="trigram", beam=1e-48, pbeam=1e-48, ds=1, topn=4, lw=6.5),
}


_DECODERS: dict = {}
_DECODER_LOCK = threading.Lock()


def _phone_loop_arpa() -> str:
    """A unigram ARPA language model over PHONES (minus the fillers) with equal probabilities."""
    words = [p for p in PHONES if p not in ("+NSN+", "+SPN+")] + ["</s>"]
    logp = np.log10(1.0 / len(words))
    lines = ["\\data\\", f"ngram 1={len(words) + 1}", "", "\\1-grams:", "-99.0000\t<s>"]
    lines += [f"{logp:.4f}\t{w}" for w in words] + ["", "\\end\\", ""]
    return "\n".join(lines)


def _decoder(config: RecogniserConfig, fresh: bool = False):
    """One decoder per settings per process (building one reads the model: ~0.03-0.1 s); fresh=True: a new
    one, not kept."""
    key = (config.phone_lm, tuple(sorted(config.decoder_kwargs().items())))
    if fresh:
        key = key + (object(),)
    with _DECODER_LOCK:
        if key not in _DECODERS:
            try:
                import pocketsphinx
            except ImportError:
                raise EchoMaskError("Phone recognition needs the 'pocketsphinx' package (pip install "
                                    "pocketsphinx==5.0.4); it is part of requirements/core.txt.") from None
            model = pocketsphinx.get_model_path("en-us")
            if config.phone_lm == "trigram":
                _DECODERS[key] = _build_decoder(pocketsphinx, model, f"{model}/en-us-phone.lm.bin", config)
            elif config.phone_lm == "loop":
                import tempfile

                with tempfile.TemporaryDirectory(prefix="echomask-phones-") as folder:
                    path = os.path.join(folder, "phone-loop.arpa")  # read whole at start-up, then deleted
                    with open(path, "w", encoding="ascii") as handle:
                        handle.write(_phone_loop_arpa())
                    _DECODERS[key] = _build_decoder(pocketsphinx, model, path, config)
            else:
                raise EchoMaskError(f"Unknown phone LM '{config.phone_lm}': use 'loop' or 'trigram'.")
        return _DECODERS.pop(key) if fresh else _DECODERS[key]


def _build_decoder(pocketsphinx, model: str, phone_lm: str, config: RecogniserConfig):
    return pocketsphinx.Decoder(hmm=f"{model}/en-us", allphone=phone_lm, lm=None, dict=None,
                                loglevel="FATAL", backtrace=False, **config.decoder_kwargs())


def _to_int16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def recognise_phones(audio: np.ndarray, config: RecogniserConfig = RecogniserConfig()
                     ) -> list[tuple[float, float, str]]:
    """16 kHz mono float audio -> [(start_s, end_s, phone)] covering the audio, labels from PHONES.

    Gaps the recogniser leaves (none in practice) are not filled here; `phones_to_frames` counts uncovered
    time as silence."""
    segments: list[tuple[float, float, str]] = []
    for _, found in recognise_phone_pieces(audio, config):
        segments.extend(found)
    return segments


def recognise_phone_pieces(audio: np.ndarray, config: RecogniserConfig = RecogniserConfig()):
    """recognise_phones piece by piece: yields (piece_end_s, [(start_s, end_s, phone)]) for each ~30 s piece
    in order, as soon as it is decoded (core.speech.phone_process streams them to the generation loop).
    Every segment of a piece lies before its piece_end_s and after the previous piece's."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) < SAMPLE_RATE // 10:  # under 0.1 s: too short for the recogniser's feature windows
        yield len(audio) / SAMPLE_RATE, ([(0.0, len(audio) / SAMPLE_RATE, "SIL")] if len(audio) else [])
        return
    # A new decoder for every clip: a decoder adapts as it goes (its front end's estimates carry over from
    # utterance to utterance, even through reinit_feat, and reinit() does not restore a new one's state), so
    # with a shared one a clip's phones would depend on what this process recognised before; content-keyed
    # feature caches and sharded batch generation need them to depend on the clip alone. (The same carry-over
    # makes a clip's pieces depend on each other: they are decoded in order, never in parallel.)
    decoder = _decoder(config, fresh=True)
    for start, end in split_points(len(audio), audio, target_s=config.chunk_s):
        offset = start / SAMPLE_RATE
        decoder.reinit_feat()  # the front end's noise estimate would otherwise carry over from the last clip
        decoder.start_utt()
        decoder.process_raw(_to_int16(audio[start:end]), full_utt=True)
        decoder.end_utt()
        found = [(seg.word, seg.start_frame, seg.end_frame) for seg in decoder.seg()]
        piece_end = end / SAMPLE_RATE
        segments = []
        for word, first, last in found:
            label = word if word in PHONE_INDEX else _normalise_label(word)
            seg_start = offset + first / RECOGNISER_FPS
            seg_end = min(offset + (last + 1) / RECOGNISER_FPS, piece_end)
            if seg_end > seg_start:
                segments.append((seg_start, seg_end, label))
        yield piece_end, segments


def _normalise_label(word: str) -> str:
    """Decoder words outside the phone set: the sentence markers and fillers are silence or noise."""
    if word in ("<s>", "</s>", "<sil>"):
        return "SIL"
    upper = word.upper()
    if upper in PHONE_INDEX:
        return upper
    if "NOISE" in upper:
        return "+NSN+"
    return "+SPN+"


def phones_to_frames(segments, n_frames: int, fps: float) -> np.ndarray:
    """[(start_s, end_s, phone)] -> (n_frames, NUM_PHONES) float32: the share of each frame's time
    [t/fps, (t+1)/fps) that each phone covers (rows sum to 1; uncovered time counts as SIL).

    A soft one-hot: at 30 fps a frame (33 ms) often holds two phones, and the shares keep both."""
    out = np.zeros((n_frames, NUM_PHONES), dtype=np.float32)
    if n_frames == 0:
        return out
    for start, end, label in segments:
        column = PHONE_INDEX.get(label)
        if column is None:
            column = PHONE_INDEX[_normalise_label(label)]
        first = max(0, int(np.floor(start * fps)))
        last = min(n_frames - 1, int(np.ceil(end * fps)) - 1)
        if last < first:
            continue
        frames = np.arange(first, last + 1)
        overlap = np.minimum(end, (frames + 1) / fps) - np.maximum(start, frames / fps)
        out[frames, column] += np.clip(overlap * fps, 0.0, 1.0).astype(np.float32)
    covered = out.sum(axis=1)
    out[:, PHONE_INDEX["SIL"]] += np.clip(1.0 - covered, 0.0, 1.0)
    out /= np.maximum(out.sum(axis=1, keepdims=True), 1e-6)  # float rounding and overlapping segments
    return out


def frame_labels(segments, n_frames: int, fps: float) -> np.ndarray:
    """Per-frame phone index (the phone covering each frame's centre; SIL where none) -> (n_frames,) int."""
    labels = np.full(n_frames, PHONE_INDEX["SIL"], dtype=np.int64)
    centres = (np.arange(n_frames) + 0.5) / fps
    for start, end, label in segments:
        lo, hi = np.searchsorted(centres, [start, end], side="left")
        labels[lo:hi] = PHONE_INDEX.get(label, PHONE_INDEX[_normalise_label(label)])
    return labels
