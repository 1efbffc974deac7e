"""Official EchoMask release -> this project's model bundle (`python -m core convert-official`).

Reads the release's files (layout: docs/OFFICIAL_RELEASE_FORMAT.md §2; names and shapes: the manifests in
../shared/data/official_parity/), checks every tensor by name and shape against this project's `paper`
model, and writes ONE safetensors bundle in this project's format (core/model/checkpoint.py) that
`core.model.checkpoint.load_model` and `core.generation.inference.generate` read like any other model:

    generator.<name>            the generator (official names mapped by core.model.generator.official_key)
    tokenizer.<part>.<name>     the four RVQ-VAEs (names identical to the release's)
    stats.<part>.{mean,std}     identity (the release's tokenizers take raw features)
    official.global_motion.*    the translation predictor (core.official.global_motion)
    official.hubert_projection  the fixed 1024 -> 256 projection of HuBERT features (rop_1024_256.pt)

The bundle's info records `pipeline: official-release`, which makes core.generation.inference run the release's own
inference loop (core.official.pipeline) with HuBERT speech features (core.speech.hubert).

Files are opened with torch.load(weights_only=True): only tensors and plain containers are accepted, no
pickled code runs. Keys with or without the `module.` prefix of a DataParallel save, and a bare state dict
without the {'model_state': ...} wrapper, are accepted. Tensors the release saves but inference never uses
(85.9 M parameters: an unused 8-layer decoder, template layers, training-only heads; §4 of the doc) are
skipped and counted; anything else unexpected, missing or mis-shaped is reported by name.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

from ..errors import WeightsError
from ..motion.skeleton import PARTS
from ..speech.hubert import PROJECTION_KEY, load_projection

PIPELINE = "official-release"
BUNDLE_NAME = "model.safetensors"
REPORT_NAME = "conversion_report.json"
HUBERT_PROJECTION_KEY = PROJECTION_KEY
GLOBAL_MOTION_PREFIX = "official.global_motion."

# Release file of each model, as the official code opens them (relative to its repository root).
RELEASE_FILES = {
    "generator": "weights/best_echomask.bin",
    "face": "weights/pretrained_vq/rvq_face_600.bin",
    "upper": "weights/pretrained_vq/rvq_upper_500.bin",
    "hands": "weights/pretrained_vq/rvq_hands_500.bin",
    "lower": "weights/pretrained_vq/rvq_lower_600.bin",
    "global_motion": "weights/pretrained_vq/last_1700_foot.bin",
    "projection": "weights/rop_1024_256.pt",
}

# Generator tensors the release saves that inference never touches (docs/OFFICIAL_RELEASE_FORMAT.md §4,
# echomask_modules.tsv status never_used). Matched as name prefixes (after `module.` is stripped).
UNUSED_GENERATOR_PREFIXES = (
    "wordhints_decoder.", "transformer_de_layer.", "transformer_en_layer.", "transformer_de_fu_layer.",
    "MAM.transformer_en_layer.", "MAM.transformer_de_layer.", "hubert_encoder.", "hubert_encoder_body.",
    "audio_pre_encoder_face.", "audio_pre_encoder_body.", "at_attn_face.", "at_attn_body.",
    "face_cons_mlp.", "hands_cons_mlp.", "joint_dim_reducer.",
    "predict_res_face.cross_layer.", "predict_res_upper.cross_layer.", "predict_res_hands.cross_layer.",
    "predict_res_lower.cross_layer.",
    # training only, and not mirrored here (the motion branch's matching heads)
    "MAM.match_face_classifier.", "MAM.match_hands_classifier.", "MAM.match_upper_classifier.",
    "MAM.match_lower_classifier.",
)
# Generator tensors this project's model holds but inference does not need: when the file lacks them
# they are filled in (position tables recomputed exactly; training-only heads zero) and reported.
TRAINING_ONLY_PREFIXES = ("MAM.predict_motion_", "MAM.position_embeddings.pe")
POSITION_TABLES = ("position_embeddings.pe", "MAM.position_embeddings.pe", "MAM.position_embeddings_hubert.pe")


@dataclasses.dataclass
class ModelReport:
    """What the converter found for one release file."""
    file: str = ""
    loaded: int = 0                                            # tensors taken from the file
    missing: list = dataclasses.field(default_factory=list)    # required by inference, absent: fatal
    misshaped: list = dataclasses.field(default_factory=list)  # [name, expected, found]: fatal
    filled: list = dataclasses.field(default_factory=list)     # absent but not needed: [name, how]
    ignored_unused: int = 0                                    # known never-used tensors skipped
    unexpected: list = dataclasses.field(default_factory=list)  # unknown extra names (skipped, warned)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.misshaped


@dataclasses.dataclass
class ConversionReport:
    release_dir: str
    output: str = ""
    models: dict = dataclasses.field(default_factory=dict)     # name -> ModelReport

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.models.values())

    def to_dict(self) -> dict:
        return {"release_dir": self.release_dir, "output": self.output, "ok": self.ok,
                "models": {k: dataclasses.asdict(v) for k, v in self.models.items()}}

    def summary_lines(self) -> list[str]:
        lines = []
        for name, m in self.models.items():
            status = "ok" if m.ok else "PROBLEMS"
            parts = [f"{m.loaded} tensors loaded"]
            if m.ignored_unused:
                parts.append(f"{m.ignored_unused} unused-at-inference tensors skipped")
            if m.filled:
                parts.append(f"{len(m.filled)} filled in")
            if m.unexpected:
                parts.append(f"{len(m.unexpected)} unexpected")
            lines.append(f"  {name:14s} {status}: " + ", ".join(parts) + f"  ({m.file})")
            for item in m.missing[:20]:
                lines.append(f"      missing: {item}")
            for item in m.misshaped[:20]:
                lines.append(f"      wrong shape: {item[0]} expected {tuple(item[1])}, file has {tuple(item[2])}")
            for item in m.unexpected[:20]:
                lines.append(f"      unexpected (skipped): {item}")
            for item in m.filled[:10]:
                lines.append(f"      filled in: {item[0]} ({item[1]})")
            for note in m.notes:
                lines.append(f"      note: {note}")
        return lines


# ----------------------------------------------------------------------------------------------------------
# Reading release files

def find_release_file(release_dir: str | os.PathLike, what: str) -> pathlib.Path:
    """The release file for `what` under `release_dir`: the official repository root (weights/...), its
    weights/ folder, or a flat folder with the files side by side."""
    root = pathlib.Path(release_dir)
    rel = pathlib.PurePosixPath(RELEASE_FILES[what])
    candidates = [root / rel, root / pathlib.PurePosixPath(*rel.parts[1:]), root / rel.name]
    for c in candidates:
        if c.is_file():
            return c
    raise WeightsError(f"The official release file '{rel.name}' ({what}) was not found in {root} "
                       f"(looked for {', '.join(str(c) for c in candidates)}). Give the folder of the unpacked "
                       f"release (the one that holds weights/), see docs/OFFICIAL_RELEASE.md.")


def _torch_load(path: pathlib.Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped: read them normally
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def load_release_state_dict(path: str | os.PathLike) -> tuple[dict, list[str]]:
    """A release checkpoint -> ({name without 'module.': tensor}, notes). Accepts {'model_state': sd},
    {'state_dict': sd} and a bare state dict."""
    import torch

    path = pathlib.Path(path)
    try:
        obj = _torch_load(path)
    except Exception as exc:  # unpickling errors, truncated zips, non-tensor objects refused by weights_only
        raise WeightsError(f"{path.name} could not be read as a PyTorch weights file ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}). The download may be incomplete; fetch it again.") from None
    notes = []
    if isinstance(obj, dict) and "model_state" in obj and isinstance(obj["model_state"], dict):
        others = sorted(k for k in obj if k != "model_state")
        if others:
            notes.append(f"ignored non-weight entries {others}")
        obj = obj["model_state"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
        notes.append("weights found under 'state_dict'")
    if not isinstance(obj, dict):
        raise WeightsError(f"{path.name} holds a {type(obj).__name__}, not a dictionary of weights; "
                           f"it is not one of the release's checkpoint files.")
    out, prefixed = {}, 0
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            notes.append(f"ignored non-tensor entry {key!r}")
            continue
        name = str(key)
        if name.startswith("module."):
            name, prefixed = name[len("module."):], prefixed + 1
        if name in out:
            raise WeightsError(f"{path.name} holds '{name}' both with and without the 'module.' prefix; "
                               f"the file is not a plain checkpoint.")
        out[name] = value
    if prefixed:
        notes.append(f"'module.' prefix stripped from {prefixed} keys")
    if not out:
        raise WeightsError(f"{path.name} contains no weight tensors.")
    return out, notes


# ----------------------------------------------------------------------------------------------------------
# Matching tensors against this project's models

def _match(source: dict, expected: dict, report: ModelReport, required=lambda name: True, fill=None,
           unused_prefixes=()) -> dict:
    """expected {release name: (our name, shape)} -> {our name: tensor}; fills the report."""
    import torch

    out = {}
    for rname, (ours, shape) in expected.items():
        t = source.get(rname)
        if t is None:
            if required(rname) or fill is None:
                report.missing.append(rname)
            else:
                value, how = fill(rname, shape)
                out[ours] = value
                report.filled.append([rname, how])
            continue
        if tuple(t.shape) != tuple(shape):
            report.misshaped.append([rname, list(shape), list(t.shape)])
            continue
        if t.dtype != torch.float32 and t.is_floating_point():
            report.notes.append(f"{rname} stored as {t.dtype}, converted to float32")
        if t.is_floating_point():
            t = t.to(torch.float32)
        out[ours] = t.contiguous()
        report.loaded += 1
    for rname in source:
        if rname in expected:
            continue
        if rname.startswith(tuple(unused_prefixes)):
            report.ignored_unused += 1
        else:
            report.unexpected.append(rname)
    return out


def paper_config():
    """The `paper` ModelConfig with the release's speech input (HuBERT projected to 256-d, both levels)."""
    from ..model.config import get_config

    cfg = get_config("paper")
    cfg.generator.speech_backend = "hubert"
    cfg.generator.speech_low_dim = cfg.generator.speech_high_dim = 256
    return cfg


def _generator_expectation(cfg) -> dict:
    """{release name: (our name, shape)} for every generator tensor that has a release counterpart, plus
    {our name: shape} of those that have none (filled with defaults)."""
    import torch

    from ..model.generator import EchoMaskGenerator, official_key

    with torch.device("meta"):
        gen = EchoMaskGenerator(cfg)
    expected, own = {}, {}
    for name, t in gen.state_dict().items():
        rname = official_key(name)
        if rname is None:
            own[name] = tuple(t.shape)
        else:
            expected[rname] = (name, tuple(t.shape))
    return expected, own


def _generator_fill(rname: str, shape):
    import torch

    from ..model.gen_layers import periodic_table

    if rname in POSITION_TABLES:
        return periodic_table(shape[-1], 64, shape[1]).reshape(shape), "recomputed sinusoid table (period 64)"
    return torch.zeros(shape), "training-only head, zero (not used at inference)"


def _own_generator_tensor(name: str, shape):
    """Tensors of this project's model with no release counterpart: the speech standardisation buffers
    (identity: the release feeds projected HuBERT features as they are)."""
    import torch

    if name.endswith(".mean"):
        return torch.zeros(shape)
    if name.endswith(".std"):
        return torch.ones(shape)
    raise WeightsError(f"internal: no release counterpart and no default for generator tensor {name}")


def convert_release(release_dir: str | os.PathLike, out_dir: str | os.PathLike, hubert_dir: str | None = None,
                    verify: bool = True, log=print) -> ConversionReport:
    """Convert the release in `release_dir` into `out_dir`/model.safetensors (+ conversion_report.json).

    Raises WeightsError (after writing the report when possible) if a tensor inference needs is missing or
    has the wrong shape. `hubert_dir`: the local HuBERT-large folder, recorded in the bundle (checked to
    exist; its weights are not copied). verify: load the written bundle back with core.model.checkpoint.load_model.
    """
    import torch
    from safetensors.torch import save_file

    from ..model.checkpoint import MODEL_KIND
    from ..model.config import MODEL_FORMAT_VERSION
    from ..model.tokenizer import RVQVAE
    from ..motion.motion_repr import NormStats
    from .global_motion import GlobalMotionNet

    started = time.perf_counter()
    release_dir = pathlib.Path(release_dir)
    if not release_dir.is_dir():
        raise WeightsError(f"{release_dir} is not a folder. Give the folder of the unpacked official release.")
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise WeightsError(f"{out_dir} exists and is not a folder; choose an output folder.")
    if hubert_dir is not None:
        from ..speech.hubert import check_hubert_folder

        hubert_dir = str(check_hubert_folder(hubert_dir))
    paths = {what: find_release_file(release_dir, what) for what in RELEASE_FILES}
    report = ConversionReport(release_dir=str(release_dir.resolve()), output=str((out_dir / BUNDLE_NAME).resolve()))
    cfg = paper_config()
    tensors: dict = {}

    # Tokenizers (RVQ-VAEs): the names are the release's own. The encoders only tokenise training data.
    for part in PARTS:
        log(f"reading {paths[part].name}")
        sd, notes = load_release_state_dict(paths[part])
        rep = ModelReport(file=str(paths[part]), notes=notes)
        with torch.device("meta"):
            model = RVQVAE(cfg.tokenizer_config(part))
        expected = {k: (k, tuple(v.shape)) for k, v in model.state_dict().items()}
        got = _match(sd, expected, rep, required=lambda n: not n.startswith("encoder."),
                     fill=lambda n, s: (torch.zeros(s), "encoder: only tokenises training motion; zero"))
        report.models[f"rvq_{part}"] = rep
        tensors.update({f"tokenizer.{part}.{k}": v for k, v in got.items()})
    for name, arr in NormStats.identity().to_arrays().items():
        tensors[name] = torch.from_numpy(arr.copy())

    log(f"reading {paths['global_motion'].name}")
    sd, notes = load_release_state_dict(paths["global_motion"])
    rep = ModelReport(file=str(paths["global_motion"]), notes=notes)
    with torch.device("meta"):
        gm = GlobalMotionNet()
    got = _match(sd, {k: (k, tuple(v.shape)) for k, v in gm.state_dict().items()}, rep)
    report.models["global_motion"] = rep
    tensors.update({GLOBAL_MOTION_PREFIX + k: v for k, v in got.items()})

    log(f"reading {paths['projection'].name}")
    tensors[HUBERT_PROJECTION_KEY] = load_projection(paths["projection"])
    report.models["projection"] = ModelReport(file=str(paths["projection"]), loaded=1)

    log(f"reading {paths['generator'].name} (about 1.2 GB)")
    sd, notes = load_release_state_dict(paths["generator"])
    rep = ModelReport(file=str(paths["generator"]), notes=notes)
    expected, own = _generator_expectation(cfg)
    got = _match(sd, expected, rep, required=lambda n: not n.startswith(TRAINING_ONLY_PREFIXES)
                 and n not in POSITION_TABLES, fill=_generator_fill, unused_prefixes=UNUSED_GENERATOR_PREFIXES)
    for name in POSITION_TABLES:  # stored tables should be the deterministic sinusoid; say so if not
        if name in sd and tuple(sd[name].shape) == expected[name][1]:
            from ..model.gen_layers import periodic_table

            ref = periodic_table(sd[name].shape[-1], 64, sd[name].shape[1])
            dev = float((sd[name].float() - ref).abs().max())
            if dev > 1e-5:
                rep.notes.append(f"{name} differs from the sinusoid table by {dev:.2g}; the file's table is used")
    report.models["generator"] = rep
    tensors.update({f"generator.{k}": v for k, v in got.items()})
    for name, shape in own.items():
        tensors[f"generator.{name}"] = _own_generator_tensor(name, shape)

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_report(out_dir, report)
    if not report.ok:
        raise WeightsError("The official release does not fit this version's 'paper' model:\n"
                           + "\n".join(report.summary_lines())
                           + f"\nFull list: {out_dir / REPORT_NAME}. Check that the files come from the "
                             f"official EchoMask release (docs/OFFICIAL_RELEASE.md).")

    info = {"pipeline": PIPELINE, "source": "official EchoMask release (converted)",
            "licence": "the release's own terms (non-commercial research use); see docs/OFFICIAL_RELEASE.md",
            "release_files": {k: {"name": p.name, "bytes": p.stat().st_size} for k, p in paths.items()},
            "hubert_dir": hubert_dir, "speaker_id": cfg.generator.speaker_id,
            "converted": time.strftime("%Y-%m-%d %H:%M:%S")}
    header = {"kind": MODEL_KIND, "format_version": str(MODEL_FORMAT_VERSION), "config_name": cfg.name,
              "config": json.dumps(cfg.to_dict()), "info": json.dumps(info)}
    path = out_dir / BUNDLE_NAME
    tmp = str(path) + ".partial"
    log(f"writing {path}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=header)
    os.replace(tmp, path)
    del tensors, sd
    if verify:
        log("checking the written bundle loads")
        from ..model.checkpoint import load_model

        load_model(path, expected_config="paper")
        load_official_extras(path)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return report


def _write_report(out_dir: pathlib.Path, report: ConversionReport) -> None:
    tmp = out_dir / (REPORT_NAME + ".partial")
    tmp.write_text(json.dumps(report.to_dict(), indent=1))
    os.replace(tmp, out_dir / REPORT_NAME)


# ----------------------------------------------------------------------------------------------------------
# Reading the release-only parts of a converted bundle

def is_official_bundle(model) -> bool:
    """True for an EchoMaskModel loaded from a converted release bundle."""
    return bool(getattr(model, "meta", None)) and model.meta.get("pipeline") == PIPELINE


def load_official_extras(path: str | os.PathLike, device="cpu"):
    """(GlobalMotionNet in eval mode, projection (1024, 256) tensor) from a converted bundle."""
    from safetensors import safe_open

    from .global_motion import GlobalMotionNet

    path = os.fspath(path)
    with safe_open(path, framework="pt", device="cpu") as f:
        keys = [k for k in f.keys() if k.startswith("official.")]
        tensors = {k: f.get_tensor(k) for k in keys}
    if HUBERT_PROJECTION_KEY not in tensors:
        raise WeightsError(f"{os.path.basename(path)} lacks the official release's HuBERT projection; "
                           f"convert the release again with `python -m core convert-official`.")
    net = GlobalMotionNet()
    sd = {k[len(GLOBAL_MOTION_PREFIX):]: v for k, v in tensors.items() if k.startswith(GLOBAL_MOTION_PREFIX)}
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{os.path.basename(path)}: the translation predictor does not fit "
                           f"({str(exc).splitlines()[0][:200]}); convert the release again.") from None
    return net.eval().to(device), tensors[HUBERT_PROJECTION_KEY].to(device)


def run_cli(args) -> int:
    report = convert_release(args.release_dir, args.out, hubert_dir=args.hubert, verify=not args.no_verify,
                             log=lambda m: print(m, flush=True))
    print("Converted the official EchoMask release:")
    for line in report.summary_lines():
        print(line)
    print(f"Model: {report.output}")
    print(f"Use it with: python -m core generate SPEECH.wav -o OUT --weights {report.output}")
    print("The official release is for non-commercial research use only (docs/OFFICIAL_RELEASE.md).")
    return 0
