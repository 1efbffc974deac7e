"""Training precision (--precision): fp32, or mixed precision with torch.autocast on CUDA.

auto = bf16 on a CUDA device that supports it, else fp16 (with a GradScaler, as fp16 gradients underflow);
fp32 on the CPU and MPS, so the default CPU behaviour is unchanged. bf16 also runs on the CPU (CPU autocast),
which is how the mixed-precision path is tested without a GPU. Parameters, optimiser state, EMA teachers and
codebooks, losses and checkpoints stay float32 whatever the choice: only the forward's matmuls and
convolutions run in the lower precision.
"""
from __future__ import annotations

import contextlib

from .errors import EchoMaskError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _device_type(device) -> str:
    return str(device).split(":")[0]


def resolve_precision(precision: str, device) -> str:
    """'auto' | 'fp32' | 'bf16' | 'fp16' on `device` -> the precision to train in (fp32, bf16 or fp16)."""
    kind = _device_type(device)
    if precision not in PRECISIONS:
        raise EchoMaskError(f"Unknown precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        if kind != "cuda":
            return "fp32"
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and kind != "cuda":
        raise EchoMaskError(f"--precision fp16 needs a CUDA device (training on {device}); use fp32, or bf16 "
                            f"(CPU autocast) on the CPU.")
    if precision == "bf16" and kind not in ("cuda", "cpu"):
        raise EchoMaskError(f"--precision bf16 runs on CUDA or the CPU, not on {device}; use fp32.")
    if precision == "bf16" and kind == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise EchoMaskError("This CUDA device does not support bf16; use --precision fp16 (or auto).")
    return precision


def autocast(precision: str, device):
    """The autocast context of a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(_device_type(device), dtype=dtype)


def grad_scaler(precision: str, device):
    """A GradScaler for fp16 (gradients would underflow without it); None otherwise."""
    if precision != "fp16":
        return None
    import torch

    return torch.amp.GradScaler(_device_type(device))
