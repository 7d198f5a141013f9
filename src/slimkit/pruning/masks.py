"""Weight masks: magnitude (local or global), random, N:M, and the mask parametrization.

Masks are applied with `torch.nn.utils.parametrize`: the layer keeps its dense
``original`` weight and sees ``original * mask``, so it can be fine-tuned with the
pruned weights held at zero.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.core.errors import InvalidConfigError

PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)


class MaskedWeight(nn.Module):
    """Parametrization ``weight = original * mask`` (``mask`` is a bool buffer)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.bool())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask of ``scores``' shape with exactly its ``keep`` largest entries set."""
    flat = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    flat[scores.flatten().topk(keep).indices] = True
    return flat.view_as(scores)


def sparsity_masks(scores: dict[str, torch.Tensor], sparsity: float, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Masks zeroing the ``sparsity`` fraction of lowest ``scores``, per layer or globally."""
    if scope == "layer":
        return {n: keep_top(s, s.numel() - int(s.numel() * sparsity)) for n, s in scores.items()}
    flat = torch.cat([s.flatten().to(torch.float32) for s in scores.values()])
    mask = keep_top(flat, flat.numel() - int(flat.numel() * sparsity))
    parts = mask.split([s.numel() for s in scores.values()])
    return {n: m.view_as(scores[n]) for n, m in zip(scores, parts, strict=True)}


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool mask keeping the ``n`` largest of every ``m`` consecutive weights along the input axis.

    The input axis is dim 1 (Linear ``[out, in]``, Conv ``[out, in, *k]``).

    Raises:
        InvalidConfigError: when the input size is not a multiple of ``m``.
    """
    if weight.dim() < 2 or weight.shape[1] % m:
        raise InvalidConfigError(f"N:M needs an input size divisible by m={m}, got shape {tuple(weight.shape)}")
    moved = weight.detach().abs().movedim(1, -1)
    groups = moved.reshape(-1, m)
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(n, dim=1).indices, True)
    return mask.view(moved.shape).movedim(-1, 1)


def masked_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers whose weight is parametrized by a `MaskedWeight`."""
    return {
        name: module
        for name, module in model.named_modules()
        if parametrize.is_parametrized(module, "weight")
        and any(isinstance(p, MaskedWeight) for p in module.parametrizations.weight)
    }


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Set each named layer's mask (registering the parametrization the first time)."""
    for name, mask in masks.items():
        module = model.get_submodule(name)
        if name in masked_layers(model):
            next(p for p in module.parametrizations.weight if isinstance(p, MaskedWeight)).mask.copy_(mask)
        else:
            parametrize.register_parametrization(module, "weight", MaskedWeight(mask.to(module.weight.device)))
