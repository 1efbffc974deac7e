"""Fit the face coefficients (core/face/data/face_fit.json) from the shared data. Reproducible:

    python -m core.face.fit                      # BEAT2 GT takes 2_scott_0_1_1 + 2_scott_0_2_2 and the
                                                 # Mixamo ARKit capture, from ../shared/data
    python -m core.face.fit --takes 2_scott_0_1_1 --no-arkit --out /tmp/fit_11.json

What is fitted, all by least squares / discriminant analysis in closed form (no randomness):
1. lag and co-articulation width: grid search maximising the share of the fast face explained by the
   per-class phone shares (smoothed, shifted);
2. class_deltas: ridge regression of the fast face on those shares (12 mouth classes);
3. jaw axis and expression mouth basis: principal directions of the phone-explained face motion;
4. aperture: Fisher discriminant between bilabial and open-vowel frames in mouth coordinates, rescaled to
   0 (bilabial mean) .. 1 (open-vowel mean); `closed_below`: the level that best detects bilabial closures
   on the fitting takes' ground truth;
5. Rhubarb mouth shapes: shared-covariance Gaussian classifier (LDA) of frame shape labels (phones -> A..X)
   from mouth coordinates;
6. ARKit: per-class mean ARKit curves of the Mixamo capture (phones from PocketSphinx on its speech, lag
   fitted), kept for shapes whose phone relation holds on the capture's held-out second half; then a map
   from mouth coordinates to ARKit matching BEAT2's per-class mean mouth to the capture's per-class ARKit.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys

import numpy as np

from ..errors import EchoMaskError
from ..paths import SHARED_DATA_DIR
from ..speech.phones import frame_labels
from ..motion.take import load_take
from .fitted import DEFAULT_PATH, FaceFit
from .measure import closure_scores
from .phone_classes import (CLASS_INDEX, CLASS_NAMES, PHONE_TO_CLASS, PHONE_TO_SHAPE, SHAPE_NAMES, class_shares,
                            shift_phones)
from .signals import EXPR, JAW, face_vector, fast_part, smooth

SHARED_DATA = str(SHARED_DATA_DIR)
DEFAULT_TAKES = ("2_scott_0_1_1", "2_scott_0_2_2")
DEFAULT_CAPTURE = "mixamo_bvh_emagemixamo/1_fufu_0_7_7"
OPEN_CLASSES = ("open_vowel",)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    lags_s: tuple = tuple(np.round(np.arange(-8, 5) / 60.0, 4))          # face vs sound, -133..+67 ms
    sigmas_s: tuple = (0.0, 0.017, 0.033, 0.05, 0.067, 0.1)
    baseline_s: float = 1.0
    ridge: float = 1.0
    explained_share: float = 0.9    # mouth basis: fewest directions explaining this share of the phone track
    max_basis: int = 6
    shrinkage: float = 0.1          # covariance shrinkage towards its diagonal (LDA)
    capture_lags_s: tuple = tuple(np.round(np.arange(-12, 13) / 60.0, 4))
    arkit_min_r2: float = 0.02      # keep ARKit shapes whose phone-explained R2 on held-out capture is above
    closed_levels: tuple = tuple(np.round(np.arange(-0.3, 0.81, 0.05), 2))


@dataclasses.dataclass
class FitTake:
    name: str
    face: np.ndarray     # (N, 103)
    phones: list         # [(start_s, end_s, phone)] in recogniser labels
    fps: float


def load_fit_take(take_path: str, textgrid_path: str) -> FitTake:
    from ..speech.textgrid import read_textgrid_phones

    take = load_take(take_path)
    return FitTake(os.path.splitext(os.path.basename(take_path))[0], face_vector(take),
                   read_textgrid_phones(textgrid_path), take.fps)


def beat2_take(name: str, data_root: str = SHARED_DATA) -> FitTake:
    root = os.path.join(data_root, "beat2_samples")
    return load_fit_take(os.path.join(root, "smplxflame_30", name + ".npz"),
                         os.path.join(root, "textgrid", name + ".TextGrid"))


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def _shares(t: FitTake, lag_s: float, sigma_s: float) -> np.ndarray:
    return smooth(class_shares(shift_phones(t.phones, lag_s), len(t.face), t.fps), sigma_s * t.fps)


def _baseline_frames(seconds: float, fps: float) -> int:
    return max(1, int(round(seconds * fps)) | 1)


def _class_labels(t: FitTake, lag_s: float, table: np.ndarray) -> np.ndarray:
    """Per-frame group (class or shape) of the phone at each frame time k / fps (frame_labels looks at
    (k + 0.5) / fps: the half-frame shift puts it on k / fps)."""
    labels = frame_labels(shift_phones(t.phones, lag_s + 0.5 / t.fps), len(t.face), t.fps)
    return np.argmax(table[labels], axis=1)


def _shrunk_covariance(groups: list[np.ndarray], shrinkage: float) -> np.ndarray:
    centred = np.concatenate([g - g.mean(axis=0) for g in groups if len(g)])
    cov = centred.T @ centred / max(len(centred) - len(groups), 1)
    return (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov))


def _orient(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Flip columns so each has a non-negative dot with `reference` (a deterministic sign)."""
    signs = np.where(reference @ vectors < 0, -1.0, 1.0)
    return vectors * signs


def fit_phone_track(takes: list[FitTake], cfg: FitConfig) -> dict:
    fasts = [fast_part(t.face, _baseline_frames(cfg.baseline_s, t.fps)) for t in takes]
    y = np.concatenate(fasts)
    scale = y.std(axis=0) + 1e-9
    y_std = (y - y.mean(axis=0)) / scale
    total = float((y_std ** 2).sum())
    best = None
    grid = []
    for lag in cfg.lags_s:
        raw = [class_shares(shift_phones(t.phones, lag), len(t.face), t.fps) for t in takes]
        for sigma in cfg.sigmas_s:
            x = np.concatenate([smooth(r, sigma * t.fps) for r, t in zip(raw, takes)])
            deltas = _ridge(x, y, cfg.ridge)
            # share of the standardised fast face explained (y's mean is ~0, and x's rows sum to 1)
            score = 1.0 - float((((y - x @ deltas) / scale) ** 2).sum()) / total
            grid.append((float(lag), float(sigma), round(score, 5)))
            if best is None or score > best[0]:
                best = (score, float(lag), float(sigma), deltas, x)
    score, lag, sigma, deltas, x = best
    return {"lag_s": lag, "sigma_s": sigma, "class_deltas": deltas, "explained": score, "fasts": fasts,
            "shares": x, "grid": grid}


def fit_mouth_space(track: dict, cfg: FitConfig) -> dict:
    deltas, x = track["class_deltas"], track["shares"]
    pred = x @ deltas
    open_delta = deltas[CLASS_INDEX["open_vowel"]] - deltas[CLASS_INDEX["bilabial"]]
    _, jaw_s, jaw_vt = np.linalg.svd(pred[:, JAW] - pred[:, JAW].mean(0), full_matrices=False)
    jaw_axis = _orient(jaw_vt[0][:, None], open_delta[JAW])[:, 0]
    _, s, vt = np.linalg.svd(pred[:, EXPR] - pred[:, EXPR].mean(0), full_matrices=False)
    share = np.cumsum(s ** 2) / np.sum(s ** 2)
    k = int(min(cfg.max_basis, np.searchsorted(share, cfg.explained_share) + 1))
    basis = _orient(vt[:k].T, open_delta[EXPR])
    return {"jaw_axis": jaw_axis, "mouth_basis": basis, "basis_share": float(share[k - 1]),
            "jaw_axis_share": float(jaw_s[0] ** 2 / np.sum(jaw_s ** 2))}


def _mouth_coords(fast: np.ndarray, jaw_axis, basis) -> np.ndarray:
    return np.concatenate([(fast[:, JAW] @ jaw_axis)[:, None], fast[:, EXPR] @ basis], axis=1)


def fit_face(takes: list[FitTake], cfg: FitConfig = FitConfig(), capture: str | None = None) -> FaceFit:
    if not takes:
        raise EchoMaskError("Fitting the face needs at least one take with a phone alignment.")
    track = fit_phone_track(takes, cfg)
    space = fit_mouth_space(track, cfg)
    lag = track["lag_s"]
    z_all = [_mouth_coords(f, space["jaw_axis"], space["mouth_basis"]) for f in track["fasts"]]
    z = np.concatenate(z_all)
    classes = np.concatenate([_class_labels(t, lag, PHONE_TO_CLASS) for t in takes])

    # aperture: Fisher direction bilabial -> open vowels
    closed = z[classes == CLASS_INDEX["bilabial"]]
    opened = z[np.isin(classes, [CLASS_INDEX[c] for c in OPEN_CLASSES])]
    cov = _shrunk_covariance([closed, opened], cfg.shrinkage)
    w = np.linalg.solve(cov, opened.mean(0) - closed.mean(0))
    span = float(w @ (opened.mean(0) - closed.mean(0)))
    w = w / span
    offset = float(-(w @ closed.mean(0)))
    closure_z = closed.mean(0) - opened.mean(0)   # w . closure_z = -1 by construction
    closure_direction = np.concatenate([closure_z[0] * space["jaw_axis"], space["mouth_basis"] @ closure_z[1:]])

    # closed_below: the best bilabial-closure F1 of the ground truth itself
    apertures = [zz @ w + offset for zz in z_all]
    level_scores = []
    for level in cfg.closed_levels:
        f1 = np.mean([closure_scores(a, t.phones, t.fps, level).f1 for a, t in zip(apertures, takes)])
        level_scores.append((float(level), round(float(f1), 4)))
    closed_below = max(level_scores, key=lambda item: item[1])[0]
    sealed_level = float(np.percentile(closed @ w + offset, 25))

    # Rhubarb shapes: LDA on mouth coordinates
    shapes = np.concatenate([_class_labels(t, lag, PHONE_TO_SHAPE) for t in takes])
    groups = [z[shapes == s] for s in range(len(SHAPE_NAMES))]
    present = [len(g) > 1 for g in groups]
    cov_s = _shrunk_covariance([g for g, ok in zip(groups, present) if ok], cfg.shrinkage)
    prec = np.linalg.inv(cov_s)
    means = np.array([g.mean(0) if ok else np.zeros(z.shape[1]) for g, ok in zip(groups, present)])
    priors = np.array([len(g) for g in groups], np.float64) / len(z)
    shape_w = means @ prec
    shape_b = -0.5 * np.einsum("sd,sd->s", shape_w, means) + np.log(np.maximum(priors, 1e-6))
    shape_b[~np.array(present)] = -30.0  # a shape never seen in the fitting data is never predicted
    shape_acc = float(np.mean(np.argmax(z @ shape_w.T + shape_b, axis=1) == shapes))

    neutral = np.concatenate([t.face for t in takes]).mean(axis=0)
    fit = FaceFit(
        fps=float(takes[0].fps), lag_s=lag, sigma_s=track["sigma_s"], baseline_s=cfg.baseline_s,
        class_names=list(CLASS_NAMES), class_deltas=track["class_deltas"], neutral=neutral,
        jaw_axis=space["jaw_axis"], mouth_basis=space["mouth_basis"], aperture_weights=w,
        aperture_offset=offset, closed_below=closed_below, sealed_level=sealed_level, closure_direction=closure_direction,
        shape_names=list(SHAPE_NAMES), shape_weights=shape_w, shape_bias=shape_b,
        report={
            "takes": [t.name for t in takes],
            "frames": int(len(z)),
            "phone_track_explained_share": round(track["explained"], 4),
            "lag_sigma_grid": track["grid"],
            "mouth_basis_size": int(space["mouth_basis"].shape[1]),
            "mouth_basis_share_of_phone_motion": round(space["basis_share"], 4),
            "jaw_axis_share_of_phone_jaw_motion": round(space["jaw_axis_share"], 4),
            "closed_below_f1_grid": level_scores,
            "shape_classifier_in_sample_accuracy": round(shape_acc, 4),
            "shape_frame_counts": dict(zip(SHAPE_NAMES, [int(len(g)) for g in groups])),
        })
    if capture:
        fit_arkit(fit, takes, cfg, capture)
    return fit


# ----------------------------------------------------------------------------------------------- ARKit

def load_arkit_capture(json_path: str) -> tuple[list[str], np.ndarray, float]:
    """A BEAT-style `facial52` json: names + per-frame weights -> (names, (T, A) weights, fps)."""
    try:
        with open(json_path, encoding="utf-8") as handle:
            data = json.load(handle)
        names = list(data["names"])
        weights = np.array([frame["weights"] for frame in data["frames"]], np.float64)
        times = np.array([frame["time"] for frame in data["frames"]], np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EchoMaskError(f"Cannot read the ARKit capture {json_path}: {exc}") from None
    fps = float(round(1.0 / np.median(np.diff(times)))) if len(times) > 1 else 30.0
    return names, weights, fps


def recognised_phones(wav_path: str, cache_dir: str | None = None) -> list:
    """PocketSphinx phones of a speech file (cached by the file's content hash: ~10 s a minute to compute)."""
    from ..speech.audio import load_speech
    from ..speech.phones import recognise_phones

    from ..speech import phones as phones_module

    digest = hashlib.sha256()
    with open(wav_path, "rb") as handle:
        digest.update(handle.read())
    with open(phones_module.__file__, "rb") as handle:  # a changed recogniser invalidates the cache
        digest.update(handle.read())
    digest.update(repr(phones_module.RecogniserConfig()).encode())
    digest = digest.hexdigest()[:16]
    cache = os.path.join(cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "echomask"),
                         f"phones_{digest}.json")
    if os.path.isfile(cache):
        with open(cache, encoding="utf-8") as handle:
            return [tuple(x) for x in json.load(handle)]
    phones = recognise_phones(load_speech(wav_path))
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, "w", encoding="utf-8") as handle:
        json.dump(phones, handle)
    return phones


def fit_arkit(fit: FaceFit, takes: list[FitTake], cfg: FitConfig, capture: str) -> None:
    names, weights, fps = load_arkit_capture(capture + "_facial52.json")
    phones = recognised_phones(capture + ".wav")
    cap = FitTake(os.path.basename(capture), weights, phones, fps)
    fast = fast_part(weights, _baseline_frames(cfg.baseline_s, fps))
    half = len(fast) // 2
    best = None
    for lag in cfg.capture_lags_s:
        x = _shares(cap, lag, fit.sigma_s)
        deltas = _ridge(x[:half], fast[:half], cfg.ridge)       # fit on the first half ...
        pred = x[half:] @ deltas                                  # ... judge on the second
        resid = ((fast[half:] - pred) ** 2).sum(0)
        total = ((fast[half:] - fast[half:].mean(0)) ** 2).sum(0) + 1e-12
        r2 = 1.0 - resid / total
        score = float(np.sum(np.maximum(r2, 0.0)))  # most shapes are unrelated to speech: count the related
        if best is None or score > best[0]:
            best = (score, float(lag), r2)
    _, lag, r2 = best
    keep = [i for i, value in enumerate(r2) if value >= cfg.arkit_min_r2]

    # per-class means relative to the pause ("rest") class: capture ARKit and BEAT2 mouth coordinates
    rest = CLASS_INDEX["rest"]
    cap_classes = _class_labels(cap, lag, PHONE_TO_CLASS)
    z = np.concatenate([_mouth_coords(t.face - fit.neutral, fit.jaw_axis, fit.mouth_basis) for t in takes])
    classes = np.concatenate([_class_labels(t, fit.lag_s, PHONE_TO_CLASS) for t in takes])
    counts = np.array([np.sum(classes == c) for c in range(len(CLASS_NAMES))], np.float64)
    cap_counts = np.array([np.sum(cap_classes == c) for c in range(len(CLASS_NAMES))], np.float64)
    usable = (counts >= 10) & (cap_counts >= 10)
    if not usable[rest]:
        raise EchoMaskError("The ARKit fit needs pauses in both the BEAT2 takes and the capture.")
    z_rest = z[classes == rest].mean(0)
    a_rest = weights[cap_classes == rest].mean(0)
    rows = [c for c in np.flatnonzero(usable) if c != rest]
    z_means = np.array([z[classes == c].mean(0) - z_rest for c in rows])
    a_means = np.array([weights[cap_classes == c].mean(0) - a_rest for c in rows])
    sw = np.sqrt(np.minimum(counts, cap_counts)[rows])[:, None]
    scale = z.std(axis=0) + 1e-9   # ridge on standardised coordinates: the penalty is unit-free
    coef = _ridge(sw * z_means / scale, sw * a_means[:, keep], 1e-2 * float(np.sum(sw ** 2)) / len(rows))
    fit.arkit_names = [names[i] for i in keep]
    fit.arkit_weights = (coef / scale[:, None]).T
    fit.arkit_rest = z_rest
    fit.arkit_class_deltas = np.zeros((len(CLASS_NAMES), len(keep)))
    fit.arkit_class_deltas[rows] = a_means[:, keep]
    fit.report["arkit"] = {
        "capture": os.path.basename(capture), "frames": int(len(weights)), "lag_s": lag,
        "held_out_r2_by_shape": {n: round(float(v), 4) for n, v in sorted(zip(names, r2), key=lambda p: -p[1])},
        "kept": fit.arkit_names, "classes_used": [CLASS_NAMES[c] for c in np.flatnonzero(usable)],
        "capture_rest_level": {names[i]: round(float(a_rest[i]), 4) for i in keep},
    }


# ----------------------------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.face.fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=SHARED_DATA, help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--takes", nargs="+", default=list(DEFAULT_TAKES),
                        help="BEAT2 GT take ids under DATA/beat2_samples (npz + TextGrid)")
    parser.add_argument("--capture", default=None, help="ARKit capture path stem (STEM.wav + STEM_facial52.json); "
                        f"default DATA/{DEFAULT_CAPTURE}")
    parser.add_argument("--no-arkit", action="store_true", help="skip the ARKit fit")
    parser.add_argument("--out", default=DEFAULT_PATH, help=f"output JSON (default {os.path.relpath(DEFAULT_PATH)})")
    parser.add_argument("--presets", default=None, metavar="DIR",
                        help="also write the mapping presets built from this fit into DIR "
                             "(the shipped ones: echomask_blender/presets)")
    args = parser.parse_args(argv)
    try:
        takes = [beat2_take(name, args.data) for name in args.takes]
        capture = None if args.no_arkit else (args.capture or os.path.join(args.data, DEFAULT_CAPTURE))
        fit = fit_face(takes, FitConfig(), capture)
        fit.report["command"] = "python -m core.face.fit " + " ".join(
            a if not a.startswith("/") else os.path.basename(a) for a in (argv if argv is not None else sys.argv[1:]))
        fit.save(args.out)
        if args.presets:
            from .mapping import save_preset
            from .presets import PRESET_FILES

            os.makedirs(args.presets, exist_ok=True)
            for filename, build in PRESET_FILES.items():
                save_preset(build(fit), os.path.join(args.presets, filename))
    except EchoMaskError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    r = fit.report
    print(f"wrote {args.out}: lag {fit.lag_s * 1000:.0f} ms, co-articulation sigma {fit.sigma_s * 1000:.0f} ms, "
          f"phone track explains {r['phone_track_explained_share']:.3f} of the fast face, "
          f"mouth basis {r['mouth_basis_size']} directions, closed below {fit.closed_below}")
    if "arkit" in r:
        print(f"  ARKit: kept {len(fit.arkit_names)} of {len(r['arkit']['held_out_r2_by_shape'])} shapes "
              f"(capture lag {r['arkit']['lag_s'] * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
