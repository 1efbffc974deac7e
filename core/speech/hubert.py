"""HuBERT speech features exactly as the official release was trained (docs/OFFICIAL_RELEASE_FORMAT.md §7), and the
`hubert` backend of core.speech.

* Model: HuBERT-large (`facebook/hubert-large-ls960-ft`, the CTC head unused) as a transformers
  `HubertModel`, from a LOCAL folder or the local Hugging Face cache only: loading never downloads
  (local_files_only=True, HF_HUB_OFFLINE=1). Folder: the `hubert_dir` argument, else $ECHOMASK_HUBERT_DIR,
  else the Hugging Face cache ($HF_HOME / ~/.cache/huggingface).
* Sample-rate quirk: the release reads speech at 22 050 Hz (librosa's default: soxr_hq) and hands that
  array to HuBERT as if it were 16 kHz, so HuBERT hears speech slowed to 72.6 %. The released weights
  expect it, so it is reproduced: 16 kHz speech -> 22 050 Hz -> HuBERT.
* The whole waveform is z-normalised at once (the processor's do_normalize; eps 1e-7).
* Chunks that each give 1000 frames: [320 000 k, 320 000 k + 320 080) for k < L // 320 000, plus the
  remainder [320 000 (L // 320 000), L) when it has >= 400 samples; frames concatenated, then truncated
  or zero-padded to (L - 80) // 320.
* Levels: low = hidden_states[11] (residual stream after 11 of 24 layers, no LayerNorm), high =
  last_hidden_state. Both are linearly interpolated (align_corners=True) to the target frame count
  (the release: floor(N16 / 533) with N16 the 16 kHz length, ~30.02 fps; the product: the take's own
  30 fps frame count, which keeps sound and motion in sync) and multiplied by the release's fixed
  (1024, 256) projection.
"""
from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from ..errors import EchoMaskError, WeightsError
from ..paths import WEIGHTS_DIR

HUBERT_REPO_ID = "facebook/hubert-large-ls960-ft"
ENV_DIR = "ECHOMASK_HUBERT_DIR"
ENV_PROJECTION = "ECHOMASK_HUBERT_PROJECTION"
LOW_LAYER = 11
HEARD_RATE = 22050            # the rate the release reads speech at (then declares as 16 kHz)
CHUNK, CHUNK_SPAN, MIN_REMAINDER = 320_000, 320_080, 400
FRAME_HOP, FRAME_OFFSET = 320, 80
MEL_HOP = 533                 # int(16000 / 30): the release's frame count comes from a mel with this hop
TRANSFORMERS_PIN = "transformers==4.57.6"


def require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise EchoMaskError(f"HuBERT speech features (used by the official EchoMask release) need the "
                            f"'transformers' package, which is not installed in this Python. Install it with "
                            f"`pip install {TRANSFORMERS_PIN}` in the generator's Python, or use the default "
                            f"model, which needs no HuBERT.") from None
    return transformers


def check_hubert_folder(path: str | os.PathLike) -> pathlib.Path:
    """A local HuBERT folder with config.json and weights, or WeightsError saying what is missing."""
    folder = pathlib.Path(path).expanduser()
    if not folder.is_dir():
        raise WeightsError(f"HuBERT folder not found: {folder}. Download {HUBERT_REPO_ID} once yourself "
                           f"(docs/OFFICIAL_RELEASE.md) and give its folder.")
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder} has no config.json: it is not a Hugging Face HuBERT model folder.")
    if not any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        raise WeightsError(f"{folder} has no model weights (model.safetensors or pytorch_model.bin); "
                           f"the download is incomplete.")
    return folder.resolve()


def find_hubert_folder(hubert_dir: str | os.PathLike | None = None, cache_dir: str | None = None) -> pathlib.Path:
    """The argument, else $ECHOMASK_HUBERT_DIR, else the snapshot in the local Hugging Face cache
    (`cache_dir`, default the hub's own)."""
    for candidate in (hubert_dir, os.environ.get(ENV_DIR)):
        if candidate:
            return check_hubert_folder(candidate)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from huggingface_hub import snapshot_download

        return check_hubert_folder(snapshot_download(HUBERT_REPO_ID, local_files_only=True, cache_dir=cache_dir))
    except ImportError:
        pass
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        pass
    raise WeightsError(f"HuBERT-large was not found on this computer (looked at ${ENV_DIR} and the Hugging Face "
                       f"cache). The official release needs it for its speech features: download "
                       f"{HUBERT_REPO_ID} once (docs/OFFICIAL_RELEASE.md), then set {ENV_DIR} to its folder "
                       f"or convert with --hubert FOLDER. EchoMask never downloads it by itself.")


def _do_normalize(folder: pathlib.Path) -> bool:
    cfg = folder / "preprocessor_config.json"
    if cfg.is_file():
        try:
            return bool(json.loads(cfg.read_text()).get("do_normalize", True))
        except (OSError, ValueError):
            pass
    return True


_MODELS: dict = {}


def load_hubert(folder: str | os.PathLike, device="cpu"):
    """(HubertModel in eval mode, do_normalize) from a local folder (cached per folder and device)."""
    folder = check_hubert_folder(folder)
    key = (str(folder), str(device))
    if key not in _MODELS:
        require_transformers()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import HubertModel

        try:
            model = HubertModel.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise WeightsError(f"HuBERT could not be loaded from {folder} ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200]}).") from None
        _MODELS.clear()
        _MODELS[key] = (model.float().eval().to(device), _do_normalize(folder))
    return _MODELS[key]


# ----------------------------------------------------------------------------------------------------------
# The feature function

def to_heard_rate(audio16k: np.ndarray) -> np.ndarray:
    """16 kHz speech -> the 22 050 Hz array the release feeds HuBERT (librosa.load's soxr_hq resampling,
    length ceil(N * 22050 / 16000))."""
    import soxr

    y = np.ascontiguousarray(audio16k, np.float32)
    n = int(np.ceil(y.shape[-1] * (float(HEARD_RATE) / 16000)))
    out = soxr.resample(y, 16000, HEARD_RATE, quality="soxr_hq").astype(np.float32)
    return out[:n] if len(out) >= n else np.pad(out, (0, n - len(out)))


def release_frame_count(n_heard: int) -> int:
    """The release's target frame count for a 22 050 Hz array of n samples: floor(N16 / 533)."""
    n16 = int(np.ceil(n_heard * (float(16000) / HEARD_RATE)))
    return n16 // MEL_HOP


def normalise_waveform(x: np.ndarray) -> np.ndarray:
    """Whole-waveform zero mean, unit variance (float32, eps 1e-7), as the processor does."""
    x = np.asarray(x, np.float32)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def chunk_ranges(n: int) -> list[tuple[int, int]]:
    ranges = [(k * CHUNK, min(n, k * CHUNK + CHUNK_SPAN)) for k in range(n // CHUNK)]
    rest = (n // CHUNK) * CHUNK
    if n - rest >= MIN_REMAINDER:
        ranges.append((rest, n))
    return ranges


def hubert_hidden(model, input_values: np.ndarray, device="cpu"):
    """Normalised waveform (L,) -> (last_hidden_state (F, 1024), hidden_states[11] (F, 1024)) torch float32,
    F = (L - 80) // 320 (chunked, truncated / zero-padded)."""
    import torch

    n = len(input_values)
    lasts, hids = [], []
    with torch.no_grad():
        for a, b in chunk_ranges(n):
            x = torch.from_numpy(np.ascontiguousarray(input_values[a:b]))[None].to(device)
            out = model(x, output_hidden_states=True)
            lasts.append(out.last_hidden_state[0].float())
            hids.append(out.hidden_states[LOW_LAYER][0].float())
    width = model.config.hidden_size
    want = max(0, (n - FRAME_OFFSET) // FRAME_HOP)

    def fit(chunks):
        x = torch.cat(chunks) if chunks else torch.zeros(0, width, device=device)
        if len(x) >= want:
            return x[:want]
        return torch.cat([x, x.new_zeros(want - len(x), width)])
    return fit(lasts), fit(hids)


def interpolate_frames(x, n_frames: int):
    """(F, C) -> (1, n_frames, C): linear, align_corners=True."""
    import torch.nn.functional as F

    if len(x) == 0:
        raise EchoMaskError("The speech is too short for HuBERT features (less than 25 ms).")
    if len(x) == 1:
        return x[None].expand(1, n_frames, -1).clone()
    return F.interpolate(x.T[None], size=n_frames, mode="linear", align_corners=True).transpose(1, 2)


def release_features_from_heard(audio_heard: np.ndarray, model, projection, n_frames: int | None = None,
                                normalize: bool = True, device="cpu") -> dict:
    """The release's feature function from the 22 050 Hz array; returns every stage (torch tensors):
    input_values (L,), raw_last / raw_hid (F, 1024), interp_last / interp_hid (1, T, 1024), hubert /
    hubert_hid (1, T, 256). T = n_frames, or the release's floor(N16 / 533)."""
    import torch

    values = normalise_waveform(audio_heard) if normalize else np.asarray(audio_heard, np.float32)
    last, hid = hubert_hidden(model, values, device)
    t = release_frame_count(len(audio_heard)) if n_frames is None else int(n_frames)
    proj = torch.as_tensor(projection, dtype=torch.float32, device=last.device)
    il, ih = interpolate_frames(last, t), interpolate_frames(hid, t)
    return {"input_values": torch.from_numpy(values), "raw_last": last, "raw_hid": hid, "interp_last": il,
            "interp_hid": ih, "hubert": il @ proj, "hubert_hid": ih @ proj}


def release_feature_fn(projection, hubert_dir: str | None = None, device="cpu"):
    """fn(audio16k, n_frames) -> (hubert_hid (n_frames, 256), hubert (n_frames, 256)) float32 numpy."""
    folder = find_hubert_folder(hubert_dir)

    def compute(audio16k: np.ndarray, n_frames: int):
        model, normalize = load_hubert(folder, device)
        out = release_features_from_heard(to_heard_rate(audio16k), model, projection, n_frames, normalize, device)
        return (out["hubert_hid"][0].cpu().numpy().astype(np.float32),
                out["hubert"][0].cpu().numpy().astype(np.float32))
    return compute


# ----------------------------------------------------------------------------------------------------------
# The release's projection and the core.speech backend

def regenerate_projection():
    """The documented recipe of rop_1024_256.pt (seed 42, Q of a 1024 x 1024 normal matrix, first 256
    columns). A fallback only: LAPACK builds may differ in the last bits; prefer the release's file."""
    import torch

    gen = torch.Generator().manual_seed(42)
    q, _ = torch.linalg.qr(torch.randn(1024, 1024, generator=gen))
    return q[:, :256].contiguous()


PROJECTION_KEY = "official.hubert_projection"    # the tensor's name inside a converted release bundle
CONVERTED_BUNDLE = WEIGHTS_DIR / "echomask_paper" / "model.safetensors"


def load_projection(path: str | os.PathLike):
    """The (1024, 256) projection from rop_1024_256.pt (a column-major view in the release; made contiguous) or
    from a converted bundle (.safetensors)."""
    import torch

    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            if PROJECTION_KEY not in f.keys():
                raise WeightsError(f"{path.name} lacks the official release's HuBERT projection; convert the "
                                   f"release again with `python -m core convert-official`.")
            return f.get_tensor(PROJECTION_KEY).float().contiguous()
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped: read them normally
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path.name} could not be read as a PyTorch tensor file ({type(exc).__name__}); "
                           f"fetch it again.") from None
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor) or tuple(obj.shape) != (1024, 256):
        got = tuple(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise WeightsError(f"{path.name} should hold the (1024, 256) HuBERT projection matrix, found {got}.")
    return obj.detach().to(torch.float32).contiguous().clone()


def find_projection(explicit=None):
    """The (1024, 256) projection: `explicit` (tensor or path), $ECHOMASK_HUBERT_PROJECTION (rop_1024_256.pt
    or a converted bundle), the converted bundle in weights/echomask_paper/, else the recipe (warns)."""
    import warnings

    import torch

    if isinstance(explicit, torch.Tensor):
        return explicit.float()
    for candidate in (explicit, os.environ.get(ENV_PROJECTION), CONVERTED_BUNDLE if CONVERTED_BUNDLE.is_file() else None):
        if candidate:
            return load_projection(candidate)
    warnings.warn("The official HuBERT projection (rop_1024_256.pt) was not found; regenerating it from its "
                  "recipe (may differ from the release's file in the last bits).")
    return regenerate_projection()


class HubertBackend:
    """core.speech backend: low = projected layer-11 HuBERT, high = projected last layer, (T, 256) each."""

    name = "hubert"
    version = "release-1"

    def __init__(self, hubert_dir=None, projection=None, device="cpu"):
        self._dir, self._projection, self.device = hubert_dir, projection, device

    def dims(self) -> tuple[int, int]:
        return 256, 256

    def compute(self, audio: np.ndarray, fps: float, n_frames: int):
        if self._projection is None or not hasattr(self._projection, "shape"):
            self._projection = find_projection(self._projection)
        fn = release_feature_fn(self._projection, self._dir, self.device)
        low, high = fn(audio, n_frames)
        return low, high, []

