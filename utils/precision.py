"""Numeric precision and memory layout: one rule for autocast, channels_last, loss scaling and torch.compile."""
import contextlib
import sys
from typing import Any, Optional

import torch


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device, enabled: bool, cpu: bool = False) -> Optional[torch.dtype]:
    """bf16 on GPUs that support it, else fp16; on the CPU bf16 only when ``cpu`` is asked for and the CPU has
    native bf16 kernels; None (fp32) otherwise or when disabled."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu and cpu_bf16_supported():
        return torch.bfloat16
    return None


def fast_layout(device: torch.device, dtype: Optional[torch.dtype]) -> bool:
    """channels_last pays on GPUs and with CPU bf16 (oneDNN); plain fp32 CPU runs keep the default layout."""
    return device.type == "cuda" or dtype is not None


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    """Autocast context for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(dtype: Optional[torch.dtype]) -> Any:
    """A GradScaler that is active only for fp16 (bf16 and fp32 need no loss scaling)."""
    enabled = dtype == torch.float16
    try:
        return torch.amp.GradScaler("cuda", enabled=enabled)
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler(enabled=enabled)


def maybe_compile(model: torch.nn.Module, enabled: bool, backend: str = "inductor") -> torch.nn.Module:
    """``torch.compile(model)`` when asked and available, else ``model``. The compiled module shares the
    parameters, so optimizers and checkpoints keep using the original module (no ``_orig_mod.`` keys)."""
    if not enabled:
        return model
    if not hasattr(torch, "compile"):
        print("warning: --compile needs PyTorch 2; running uncompiled", file=sys.stderr)
        return model
    return torch.compile(model, backend=backend)
