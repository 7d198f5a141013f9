"""Layer surgery: rebuild layers with only the kept channels (physically smaller tensors).

`plan_keeps` turns each group's kept channels into per-layer index lists (JSON-ready, so
`load` can replay them without data); `apply_keeps` slices the layers in place.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError
from slimkit.pruning.groups import Group, axis_length

Keeps = dict[str, dict[str, list[int]]]
"""``{module name: {"out" | "in": kept indices}}``."""


def plan_keeps(groups: list[Group], kept: list[torch.Tensor], modules: dict[str, nn.Module]) -> Keeps:
    """Per-layer kept indices from each group's kept channels (sorted, ascending)."""
    removed: dict[tuple[str, str], list[torch.Tensor]] = {}
    for group, keep in zip(groups, kept, strict=True):
        drop = torch.ones(group.size, dtype=torch.bool)
        drop[keep.cpu()] = False
        channels = drop.nonzero().flatten()
        for member in group.members:
            idx = member.offset + (channels[:, None] * member.repeat + torch.arange(member.repeat)).flatten()
            removed.setdefault((member.module, member.axis), []).append(idx)
    keeps: Keeps = {}
    for (name, axis), parts in removed.items():
        mask = torch.ones(axis_length(modules[name], axis), dtype=torch.bool)
        mask[torch.cat(parts)] = False
        keeps.setdefault(name, {})[axis] = mask.nonzero().flatten().tolist()
    return keeps


def _param(old: torch.Tensor | None, dim: int, index: torch.Tensor) -> Any:
    if old is None:
        return None
    new = old.detach().index_select(dim, index.to(old.device)).clone()
    return nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new


def _set(module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    value = getattr(module, name, None)
    if isinstance(value, torch.Tensor):
        setattr(module, name, _param(value, dim, index))


def shrink(module: nn.Module, axis: str, keep: list[int]) -> None:
    """Keep only ``keep`` along ``axis`` of ``module`` (in place).

    Raises:
        UnsupportedModelError: for a layer type that cannot be shrunk.
    """
    index = torch.as_tensor(keep, dtype=torch.long)
    n = len(keep)
    if isinstance(module, nn.Linear):
        _set(module, "weight", 0 if axis == "out" else 1, index)
        if axis == "out":
            _set(module, "bias", 0, index)
            module.out_features = n
        else:
            module.in_features = n
    elif isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        _set(module, "weight", 0 if axis == "out" else 1, index)
        if axis == "out":
            _set(module, "bias", 0, index)
            module.out_channels = n
            if depthwise:
                module.in_channels = module.groups = n
        else:
            module.in_channels = n
    elif isinstance(module, nn.Embedding):
        _set(module, "weight", 1, index)
        module.embedding_dim = n
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            _set(module, name, 0, index)
        if isinstance(module, nn.LayerNorm):
            module.normalized_shape = (n,)
        elif isinstance(module, nn.GroupNorm):
            module.num_channels = module.num_groups = n
        else:
            module.num_features = n
    else:
        raise UnsupportedModelError(f"cannot shrink a {type(module).__name__} layer")


def apply_keeps(model: nn.Module, keeps: Keeps, attrs: dict[str, dict[str, int]] | None = None) -> nn.Module:
    """Slice every layer named in ``keeps``, then set attributes (e.g. head counts)."""
    for name, axes in keeps.items():
        module = model.get_submodule(name)
        for axis, keep in axes.items():
            shrink(module, axis, keep)
    for name, values in (attrs or {}).items():
        module = model.get_submodule(name)
        for attr, value in values.items():
            setattr(module, attr, value)
    return model
