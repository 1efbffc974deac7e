"""Phone recognition scored against reference alignments (e.g. MFA TextGrids): frame-level agreement."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .phones import NON_SPEECH, NUM_PHONES, PHONE_INDEX, frame_labels

EVAL_FPS = 100.0  # score on 10 ms frames, the recogniser's own resolution
_NON_SPEECH_IDS = np.array([PHONE_INDEX[p] for p in NON_SPEECH])


@dataclass
class PhoneAgreement:
    frames: int
    accuracy: float          # share of frames whose phone matches (silence and noise all count as SIL)
    speech_accuracy: float   # the same over frames the reference calls speech
    chance: float            # agreement expected from the two label distributions alone (independent)
    pause_agreement: float   # share of frames where both agree on speech vs pause
    speech_recall: float     # reference speech frames the recogniser calls speech

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def _collapse(labels: np.ndarray) -> np.ndarray:
    labels = labels.copy()
    labels[np.isin(labels, _NON_SPEECH_IDS)] = PHONE_INDEX["SIL"]
    return labels


def phone_agreement(reference, hypothesis, duration_s: float, fps: float = EVAL_FPS) -> PhoneAgreement:
    """Both as [(start_s, end_s, phone)] in recogniser labels; compares per frame over `duration_s`."""
    n = int(round(duration_s * fps))
    ref = _collapse(frame_labels(reference, n, fps))
    hyp = _collapse(frame_labels(hypothesis, n, fps))
    sil = PHONE_INDEX["SIL"]
    ref_speech, hyp_speech = ref != sil, hyp != sil
    p_ref = np.bincount(ref, minlength=NUM_PHONES) / max(n, 1)
    p_hyp = np.bincount(hyp, minlength=NUM_PHONES) / max(n, 1)
    return PhoneAgreement(
        frames=n,
        accuracy=float(np.mean(ref == hyp)) if n else 0.0,
        speech_accuracy=float(np.mean(ref[ref_speech] == hyp[ref_speech])) if ref_speech.any() else 0.0,
        chance=float(np.dot(p_ref, p_hyp)),
        pause_agreement=float(np.mean(ref_speech == hyp_speech)) if n else 0.0,
        speech_recall=float(np.mean(hyp_speech[ref_speech])) if ref_speech.any() else 0.0,
    )


def group_precision_recall(reference, hypothesis, duration_s: float, group=("P", "B", "M"),
                           fps: float = EVAL_FPS) -> tuple[float, float]:
    """Frame-level (precision, recall) of the recogniser for a phone group (default: bilabials, the
    phones whose lips must close)."""
    n = int(round(duration_s * fps))
    ids = [PHONE_INDEX[p] for p in group]
    ref = np.isin(frame_labels(reference, n, fps), ids)
    hyp = np.isin(frame_labels(hypothesis, n, fps), ids)
    hits = float(np.sum(ref & hyp))
    return hits / max(float(hyp.sum()), 1.0), hits / max(float(ref.sum()), 1.0)
