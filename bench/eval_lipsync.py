"""Lip-sync measurements on the shared BEAT2 GT takes with phone alignments (docs/LIPSYNC.md).

    python bench/eval_lipsync.py                       # table to stdout
    python bench/eval_lipsync.py --markdown /tmp/lipsync_table.md --json /tmp/lipsync.json

Held-out protocol: the face coefficients are fitted on one GT take (face + TextGrid) and every system is
scored on the other, both ways round; an in-sample block (fit on both, score each) shows the optimism.
Systems per scored take:
- ground truth: the real face (how well the fitted closure detector itself does: the ceiling);
- still face: the fitting take's mean face on every frame (the scale of the jaw/expression errors);
- phones only: fitted mean face + phone track, phones from the recogniser (PocketSphinx on the take's
  speech: what the product has) and from the TextGrid (forced alignment: an oracle);
- model only / combined: our model's face (core.generation.inference.generate with weights/echomask_small.safetensors;
  "pending" when either is absent) and a published model's face on the same speech (SemTalk fork on
  2_scott_0_1_1, MambaTalk on 2_scott_0_2_2; from ../shared/data/beat2_model_outputs), each alone and with
  apply_phone_mouth at the given strengths.
Metrics: bilabial closure recall / precision (events; detector = the fitted aperture < closed_below),
opening time vs vowel onsets after a bilabial or pause (median |error| and mean signed error, ms; and the
median |difference| to the GT face's own opening time), jaw MSE (rad^2 x 1e4) and expression MSE against GT,
and the correlation of jaw opening with GT's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.face.fit import FitConfig, SHARED_DATA, beat2_take, fit_face, recognised_phones  # noqa: E402
from core.face.lipsync import DEFAULT_STRENGTH, apply_phone_mouth, phones_only_face  # noqa: E402
from core.face.measure import closure_scores, timing_scores  # noqa: E402
from core.face.signals import JAW, face_vector, with_face  # noqa: E402
from core.motion.take import Take, load_take  # noqa: E402

TAKES = ("2_scott_0_1_1", "2_scott_0_2_2")
PUBLISHED = {"2_scott_0_1_1": ("SemTalk fork", "beat2_model_outputs/semtalk_fork/2_scott_0_1_1.npz"),
             "2_scott_0_2_2": ("MambaTalk", "beat2_model_outputs/mambatalk/2_scott_0_2_2.npz")}
OUR_WEIGHTS = os.path.join(ROOT, "weights", "echomask_small.safetensors")


def score(face: np.ndarray, gt: np.ndarray, phones, fps: float, fit) -> dict:
    n = min(len(face), len(gt))
    face, gt = face[:n], gt[:n]
    ap, ap_gt = fit.aperture(face, fps), fit.aperture(gt, fps)
    closure = closure_scores(ap, phones, fps, fit.closed_below)
    timing = timing_scores(ap, fps, phones, reference_aperture=ap_gt)
    jaw_open, jaw_open_gt = face[:, JAW] @ fit.jaw_axis, gt[:, JAW] @ fit.jaw_axis
    corr = float(np.corrcoef(jaw_open, jaw_open_gt)[0, 1]) if jaw_open.std() > 1e-9 else float("nan")
    return {"closure_recall": closure.recall, "closure_precision": closure.precision,
            "bilabials": closure.bilabials, "closure_events": closure.events_in_speech,
            "open_median_abs_ms": timing.median_abs_ms, "open_mean_signed_ms": timing.mean_signed_ms,
            "open_vs_gt_ms": timing.vs_reference_ms, "onsets": timing.onsets,
            "jaw_mse_e4": float(np.mean((face[:, JAW] - gt[:, JAW]) ** 2) * 1e4),
            "expr_mse": float(np.mean((face[:, 3:] - gt[:, 3:]) ** 2)),
            "jaw_open_corr": corr}


def our_model_face(wav: str, n: int):
    """Our model's face on this speech, or (None, reason)."""
    if not os.path.isfile(OUR_WEIGHTS):
        return None, f"pending: {os.path.relpath(OUR_WEIGHTS, ROOT)} does not exist yet"
    try:
        from core.generation.inference import generate
        from core.speech.audio import load_speech
    except ImportError as exc:
        return None, f"pending: core.generation.inference.generate is not available ({exc})"
    take = generate(load_speech(wav), seed=0, lipsync=0.0)  # model-only: the phone mouth is added below
    if not isinstance(take, Take):
        return None, "pending: generate() did not return a Take"
    return face_vector(take)[:n], "ours"


def evaluate_take(test: str, fit, data: str, strengths, fit_label: str, variants: bool = True) -> list[dict]:
    gt_take = beat2_take(test, data)
    gt, fps = gt_take.face, gt_take.fps
    n = len(gt)
    wav = os.path.join(data, "beat2_samples", "wave16k", test + ".wav")
    rec = recognised_phones(wav)
    tg = gt_take.phones
    rows = []

    def add(system, face, phones_used="-", note=""):
        row = {"test": test, "fit": fit_label, "system": system, "phones": phones_used, "note": note}
        if face is not None:
            row.update(score(face, gt, tg, fps, fit))
        rows.append(row)

    add("ground truth", gt)
    add("still face (fitted mean)", np.repeat(fit.neutral[None], n, axis=0))
    add("phones only", phones_only_face(rec, n, fps, fit), "recogniser")
    add("phones only", phones_only_face(tg, n, fps, fit), "TextGrid (oracle)")
    models = []
    face, note = our_model_face(wav, n)
    models.append(("our model (small)", face, note))
    if test in PUBLISHED:
        label, rel = PUBLISHED[test]
        path = os.path.join(data, rel)
        if os.path.isfile(path):
            models.append((f"published: {label}", face_vector(load_take(path))[:n], ""))
    for label, face, note in models:
        if face is None:
            add(label, None, note=note)
            continue
        add(label, face, note=note)
        take = with_face(Take(poses=np.zeros((len(face), 165), np.float32), trans=np.zeros((len(face), 3), np.float32),
                              expressions=np.zeros((len(face), 100), np.float32), fps=fps), face)
        for s in strengths:
            for phones, which in ((rec, "recogniser"), (tg, "TextGrid (oracle)")):
                add(f"{label} + phones s={s:g}", face_vector(apply_phone_mouth(take, phones, s, fit)), which)
            if variants:
                add(f"{label} + phones s={s:g}, no closure rule",
                    face_vector(apply_phone_mouth(take, rec, s, fit, enforce_closure=False)), "recogniser")
                add(f"{label} + phones s={s:g}, model closures dropped",
                    face_vector(apply_phone_mouth(take, rec, s, fit, keep_model_closures=False)), "recogniser")
    return rows


def shape_rows(test: str, fit, data: str, fit_label: str) -> list[dict]:
    """Rhubarb mouth shape per frame (labels: TextGrid phones -> A..H, X) from the face or from the phones."""
    from core.face.fit import _class_labels
    from core.face.mapping import FaceChannels
    from core.face.phone_classes import PHONE_TO_SHAPE, SHAPE_NAMES

    gt_take = beat2_take(test, data)
    n, fps = len(gt_take.face), gt_take.fps
    labels = _class_labels(gt_take, 0.0, PHONE_TO_SHAPE)
    rec = recognised_phones(os.path.join(data, "beat2_samples", "wave16k", test + ".wav"))

    def visemes(face, phones):
        ch = FaceChannels(face, fps, fit, phones)
        return np.stack([ch.get(f"viseme.{s}") for s in SHAPE_NAMES], axis=1)

    majority = np.zeros((n, len(SHAPE_NAMES)))
    majority[:, SHAPE_NAMES.index("B")] = 1.0   # the most frequent shape in the fitting takes
    systems = [("majority shape (B)", majority), ("face classifier on GT face", fit.shape_probabilities(gt_take.face, fps)),
               ("visemes from recogniser phones", visemes(gt_take.face, rec)),
               ("visemes from TextGrid (oracle)", visemes(gt_take.face, gt_take.phones))]
    if test in PUBLISHED:
        label, rel = PUBLISHED[test]
        model = face_vector(load_take(os.path.join(data, rel)))
        model = np.concatenate([model, np.repeat(model[-1:], max(0, n - len(model)), axis=0)])[:n]
        systems.insert(2, (f"face classifier on {label} face", fit.shape_probabilities(model, fps)))
    rows = []
    for name, probs in systems:
        pred = np.argmax(probs, axis=1)
        per_shape = [np.mean(pred[labels == s] == s) for s in range(len(SHAPE_NAMES)) if (labels == s).any()]
        rows.append({"test": test, "fit": fit_label, "system": name, "accuracy": float(np.mean(pred == labels)),
                     "balanced_accuracy": float(np.mean(per_shape))})
    return rows


def recogniser_bilabials(data: str) -> str:
    """How many TextGrid bilabials the recogniser finds (spans overlapping within one frame), and how many
    of its bilabials are real: the ceiling for closures driven by recognised phones."""
    from core.face.phone_classes import BILABIALS, segments_of

    lines = []
    tol = 1 / 30
    for test in TAKES:
        ref = segments_of(beat2_take(test, data).phones, BILABIALS)
        hyp = segments_of(recognised_phones(os.path.join(data, "beat2_samples", "wave16k", test + ".wav")), BILABIALS)
        recall = np.mean([any(a - tol < d and c < b + tol for c, d in hyp) for a, b in ref])
        precision = np.mean([any(a - tol < d and c < b + tol for a, b in ref) for c, d in hyp])
        lines.append(f"{test}: the recogniser finds {recall:.2f} of {len(ref)} bilabials; "
                     f"{precision:.2f} of its {len(hyp)} bilabials are real")
    return "\n".join(f"- {line}" for line in lines)


def shape_markdown(rows: list[dict]) -> str:
    lines = ["| scored take | fit on | mouth shape from | frame accuracy | balanced accuracy |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['test']} | {r['fit']} | {r['system']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} |")
    return "\n".join(lines)


def arkit_markdown() -> str:
    from core.face.fitted import default_fit

    report = default_fit().report.get("arkit")
    if not report:
        return "(the shipped fit has no ARKit part)"
    r2 = report["held_out_r2_by_shape"]
    kept = ", ".join(f"{n} {r2[n]:.3f}" for n in report["kept"])
    return (f"Capture {report['capture']} ({report['frames']} frames), phones from the recogniser, fitted lag "
            f"{report['lag_s'] * 1000:.0f} ms; class means fitted on the first half, R^2 of the phone-predicted "
            f"fast ARKit curves on the second half. Kept (R^2 >= 0.02): {kept}. Best rejected: " +
            ", ".join(f"{n} {v:.3f}" for n, v in list(r2.items())[len(report['kept']):len(report['kept']) + 4]) + ".")


def _fmt(value, digits=2):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


COLUMNS = (("closure_recall", "closure recall", 2), ("closure_precision", "closure precision", 2),
           ("open_median_abs_ms", "open abs err ms", 0), ("open_mean_signed_ms", "open signed ms", 0),
           ("open_vs_gt_ms", "open vs GT ms", 0), ("jaw_mse_e4", "jaw MSE e-4", 3), ("expr_mse", "expr MSE", 3),
           ("jaw_open_corr", "jaw corr", 2))


def markdown(rows: list[dict]) -> str:
    head = "| scored take | fit on | system | phones | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (4 + len(COLUMNS))]
    for r in rows:
        if "closure_recall" not in r:
            lines.append(f"| {r['test']} | {r['fit']} | {r['system']} | {r['phones']} | {r['note']} |"
                         + " |" * (len(COLUMNS) - 1))
            continue
        cells = [_fmt(r.get(key), d) for key, _, d in COLUMNS]
        lines.append(f"| {r['test']} | {r['fit']} | {r['system']} | {r['phones']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(means: list[dict]) -> str:
    """The held-out mean table of docs/LIPSYNC.md: main rows, the default in bold."""
    lines = ["| system | phones | " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * (2 + len(COLUMNS))]
    default = f"published model + phones s={DEFAULT_STRENGTH:g}"
    for r in means:
        name = r["system"]
        if ("no closure rule" in name or "dropped" in name) and f"s={DEFAULT_STRENGTH:g}," not in name:
            continue
        cells = [_fmt(r.get(key), d) for key, _, d in COLUMNS]
        if name == default and r["phones"] == "recogniser":
            cells, name = [f"**{c}**" for c in cells], f"**{name} (default)**"
        lines.append(f"| {name} | {r['phones']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def held_out_means(rows: list[dict]) -> list[dict]:
    """Mean over the two held-out directions, per system+phones (systems present on both takes)."""
    out = []
    held = [r for r in rows if r["fit"] != "both (in-sample)" and "closure_recall" in r]
    keys = []
    for r in held:
        key = (r["system"].replace("published: SemTalk fork", "published model").replace(
            "published: MambaTalk", "published model"), r["phones"])
        if key not in keys:
            keys.append(key)
    for key in keys:
        group = [r for r in held if (r["system"].replace("published: SemTalk fork", "published model").replace(
            "published: MambaTalk", "published model"), r["phones"]) == key]
        row = {"test": "mean of both", "fit": "other take", "system": key[0], "phones": key[1], "note": ""}
        for k, _, _ in COLUMNS:
            vals = [g[k] for g in group if np.isfinite(g.get(k, np.nan))]
            row[k] = float(np.mean(vals)) if vals else float("nan")
        out.append(row)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=SHARED_DATA)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--markdown", help="write the tables (markdown) here")
    parser.add_argument("--json", help="write all numbers here")
    parser.add_argument("--no-in-sample", action="store_true")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "beat2_samples")):
        print(f"needs the shared data ({args.data}/beat2_samples is absent)", file=sys.stderr)
        return 2
    t0 = time.time()
    takes = {name: beat2_take(name, args.data) for name in TAKES}
    rows = []
    for train, test in ((TAKES[0], TAKES[1]), (TAKES[1], TAKES[0])):
        fit = fit_face([takes[train]], FitConfig())
        rows += evaluate_take(test, fit, args.data, args.strengths, train)
    means = held_out_means(rows)
    shapes = []
    for train, test in ((TAKES[0], TAKES[1]), (TAKES[1], TAKES[0])):
        shapes += shape_rows(test, fit_face([takes[train]], FitConfig()), args.data, train)
    in_sample = []
    if not args.no_in_sample:
        fit = fit_face([takes[t] for t in TAKES], FitConfig())
        for test in TAKES:
            in_sample += evaluate_take(test, fit, args.data, [DEFAULT_STRENGTH], "both (in-sample)", variants=False)
    text = ("## Held out, mean of both directions (summary)\n\n" + summary_markdown(means) +
            "\n\n## Held out, mean of both directions\n\n" + markdown(means) +
            "\n\n## Held out, per take\n\n" + markdown(rows) +
            ("\n\n## In-sample (fitted on both takes; optimistic)\n\n" + markdown(in_sample) if in_sample else "") +
            "\n\n## Recogniser bilabials against the alignment\n\n" + recogniser_bilabials(args.data) +
            "\n\n## Rhubarb mouth shapes, held out\n\n" + shape_markdown(shapes) +
            "\n\n## ARKit relation to phones (shipped fit)\n\n" + arkit_markdown())
    print(text)
    print(f"\n({time.time() - t0:.0f} s)")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"held_out": rows, "held_out_mean": means, "in_sample": in_sample, "shapes": shapes},
                      handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
