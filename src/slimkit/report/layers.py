"""Per-layer facts for reports: parameter count, sparsity and storage bit width."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerInfo:
    """One weight-carrying layer."""

    name: str
    kind: str
    params: int
    sparsity: float
    bits: int


def _weights(module: nn.Module) -> list[torch.Tensor]:
    logical = getattr(module, "logical_weights", None)
    if callable(logical):
        return [t.detach() for t in logical()]
    weight = getattr(module, "weight", None)
    return [weight.detach()] if isinstance(weight, torch.Tensor) else []


def _bits(module: nn.Module) -> int:
    """Storage bits per weight: the module's ``bits`` attribute, else the narrowest dtype among
    its own tensors named ``weight*`` (so an int8 buffer ``weight_int8`` reads as 8)."""
    bits = getattr(module, "bits", None)
    if isinstance(bits, int):
        return bits
    own = [t for name, t in module.state_dict(keep_vars=True).items() if "." not in name and name.startswith("weight")]
    widths = [torch.finfo(t.dtype).bits if t.dtype.is_floating_point else torch.iinfo(t.dtype).bits for t in own]
    return min(widths, default=32)


def layer_infos(model: nn.Module) -> list[LayerInfo]:
    """Every leaf module with weights, in module order."""
    infos = []
    for name, module in model.named_modules():
        weights = _weights(module)
        is_leaf = next(module.children(), None) is None or hasattr(module, "logical_weights")
        if not name or not weights or not is_leaf:
            continue
        total = sum(w.numel() for w in weights)
        zeros = sum(int((w == 0).sum()) for w in weights)
        infos.append(LayerInfo(name, type(module).__name__, total, zeros / total if total else 0.0, _bits(module)))
    return infos


def weight_sample(model: nn.Module, limit: int = 200_000) -> torch.Tensor:
    """Up to ``limit`` weight values from all layers (evenly strided), for histograms."""
    tensors = [w.float().flatten() for info in layer_infos(model) for w in _weights(model.get_submodule(info.name))]
    values = torch.cat(tensors) if tensors else torch.zeros(0)
    step = max(1, values.numel() // limit)
    return values[::step]
