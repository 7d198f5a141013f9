"""Device selection shared by every verb."""

from __future__ import annotations

import functools

import torch

from slimkit.core.errors import InvalidConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` (CUDA when present, else CPU) or an explicit name into a device.

    Raises:
        InvalidConfigError: for an unknown name or a device that is not available.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InvalidConfigError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidConfigError("device 'cuda' was asked for but no CUDA GPU is available: use 'auto' or 'cpu'")
    return resolved


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model with none)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def int8_saturates() -> bool:
    """True on an x86 CPU without VNNI/AMX, where int8 kernels saturate.

    There PyTorch's fbgemm and onnxruntime's MLAS multiply uint8 activations by int8 weights
    with 16-bit saturating adds (``vpmaddubsw``), so full 8-bit operands can overflow (an
    SQNR of ~18 dB instead of ~40 dB on a random linear layer); one operand on 7 bits
    (``reduce_range``) cannot. Read from ``/proc/cpuinfo``; other engines (qnnpack on ARM)
    and unreadable CPU info count as not saturating.
    """
    if torch.backends.quantized.engine not in ("fbgemm", "x86"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return bool(flags) and not any(flag in flags for flag in _VNNI_FLAGS)
