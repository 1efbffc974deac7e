"""Compute device choice: 'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device, with clear errors."""
from __future__ import annotations

from ..errors import DeviceError

CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | None = "auto"):
    import torch

    name = (name or "auto").strip().lower()
    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if has_cuda else "mps" if has_mps else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not has_cuda:
            raise DeviceError("A CUDA (NVIDIA) GPU was asked for, but this machine or this PyTorch build has "
                              "none. Choose device 'cpu' or 'auto' (EchoMask's small model runs faster than "
                              "real time on a CPU), or install a CUDA build of PyTorch.")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"GPU {dev.index} was asked for, but only {torch.cuda.device_count()} CUDA "
                              f"device(s) exist; choose 'cuda' or 'cuda:0'.")
        return dev
    if name == "mps":
        if not has_mps:
            raise DeviceError("An Apple GPU (MPS) was asked for, but it is not available here (it needs an "
                              "Apple-silicon Mac and a PyTorch build with MPS). Choose 'cpu' or 'auto'.")
        return torch.device("mps")
    raise DeviceError(f"Unknown device '{name}'; choose one of: auto, cpu, cuda, mps.")
