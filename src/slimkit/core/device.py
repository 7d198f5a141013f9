"""Device selection shared by every verb."""

from __future__ import annotations

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
