"""Phones: PocketSphinx all-phone recognition on real speech against MFA alignments, TextGrid reading,
the agreement metric."""
import pathlib
import re

import numpy as np
import pytest

from echomask.core.errors import EchoMaskError
from echomask.core.speech.phone_eval import phone_agreement
from echomask.core.speech.phones import PHONES, recognise_phones
from echomask.core.speech.textgrid import read_textgrid, read_textgrid_phones, to_recogniser_phone
from conftest import shared_path

SR = 16000

SHORT_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

0
1.0
<exists>
2
"IntervalTier"
"words"
0
1.0
1
0
1.0
"bob"
"IntervalTier"
"phones"
0
1.0
4
0
0.2
""
0.2
0.5
"B"
0.5
0.8
"AA1"
0.8
1.0
"sp"
'''


def test_arpabet_marks_map_to_recogniser_labels():
    assert [to_recogniser_phone(m) for m in ("AH0", "iy1", "", "sil", "sp", "spn", "B")] == \
        ["AH", "IY", "SIL", "SIL", "SIL", "+SPN+", "B"]


def test_short_format_textgrid(tmp_path):
    path = tmp_path / "bob.TextGrid"
    path.write_text(SHORT_TEXTGRID)
    assert read_textgrid_phones(path) == [(0.0, 0.2, "SIL"), (0.2, 0.5, "B"), (0.5, 0.8, "AA"), (0.8, 1.0, "SIL")]
    assert read_textgrid_phones(path, map_to_recogniser=False)[2] == (0.5, 0.8, "AA1")
    assert read_textgrid(path)["words"] == [(0.0, 1.0, "bob")]


def test_textgrid_errors_are_clear(tmp_path):
    (tmp_path / "no.TextGrid").write_text("hello")
    with pytest.raises(EchoMaskError, match="not a Praat TextGrid"):
        read_textgrid_phones(tmp_path / "no.TextGrid")
    (tmp_path / "words.TextGrid").write_text(SHORT_TEXTGRID.replace('"phones"', '"syllables"'))
    with pytest.raises(EchoMaskError, match="no phone tier"):
        read_textgrid_phones(tmp_path / "words.TextGrid")
    (tmp_path / "cut.TextGrid").write_text(SHORT_TEXTGRID[:SHORT_TEXTGRID.index("\"AA1\"")])
    with pytest.raises(EchoMaskError, match="damaged"):
        read_textgrid_phones(tmp_path / "cut.TextGrid")


def test_agreement_metric():
    ref = [(0.0, 0.5, "SIL"), (0.5, 1.0, "AA"), (1.0, 2.0, "B")]
    same = phone_agreement(ref, ref, 2.0)
    assert same.accuracy == 1.0 and same.speech_accuracy == 1.0 and same.pause_agreement == 1.0
    shifted = phone_agreement(ref, [(0.0, 1.0, "SIL"), (1.0, 2.0, "B")], 2.0)
    assert np.isclose(shifted.accuracy, 0.75) and np.isclose(shifted.speech_recall, 2 / 3)


def test_phone_set_is_the_models():
    pocketsphinx = pytest.importorskip("pocketsphinx")
    mdef = pathlib.Path(pocketsphinx.get_model_path("en-us/en-us/mdef")).read_bytes()
    start = mdef.index(b"+NSN+")
    names = re.findall(rb"[A-Z+]+", mdef[start:start + 400].split(b"\0\0")[0])
    assert sorted(n.decode() for n in names) == sorted(PHONES)


def test_recogniser_on_real_speech_agrees_with_the_alignment():
    pytest.importorskip("pocketsphinx")
    from echomask.core.speech.audio import load_speech

    wav = shared_path("beat2_samples", "wave16k", "2_scott_0_1_1.wav")
    grid = shared_path("beat2_samples", "textgrid", "2_scott_0_1_1.TextGrid")
    audio = load_speech(wav)[:20 * SR]  # 20 s keeps the test to a fraction of a second
    reference = [(s, min(e, 20.0), p) for s, e, p in read_textgrid_phones(grid) if s < 20.0]
    found = recognise_phones(audio)
    assert {p for _, _, p in found} <= set(PHONES)
    score = phone_agreement(reference, found, 20.0)
    assert score.speech_recall > 0.8            # it finds the speech
    assert score.pause_agreement > 0.85
    # frame agreement ~0.44 on the three aligned clips (bench/bench_speech_features.py); chance ~0.04
    assert score.accuracy > max(0.25, 4 * score.chance)


def test_group_precision_recall():
    from echomask.core.speech.phone_eval import group_precision_recall

    ref = [(0.0, 0.5, "SIL"), (0.5, 1.0, "M"), (1.0, 2.0, "AA")]
    precision, recall = group_precision_recall(ref, [(0.0, 0.75, "B"), (0.75, 2.0, "AA")], 2.0)
    assert np.isclose(precision, 0.25 / 0.75) and np.isclose(recall, 0.5)
