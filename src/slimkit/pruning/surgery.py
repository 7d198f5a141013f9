"""Layer surgery: rebuild layers with only the kept channels (physically smaller tensors).

`plan_keeps` turns each group's kept channels into per-layer index lists (JSON-ready, so
`load` can replay them without data); `apply_keeps` slices the layers in place.
"""

from __future__ import annotations

import torch
from torch import nn

from slimkit.pruning.groups import TENSOR_AXIS, Group, axis_length
from slimkit.pruning.layers import shrink, slice_attr

Keeps = dict[str, dict[str, list[int]]]
"""``{module name: {"out" | "in": kept indices}}``."""


def plan_keeps(groups: list[Group], kept: list[torch.Tensor], modules: dict[str, nn.Module | torch.Tensor]) -> Keeps:
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


def _shrink_tensor(model: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    slice_attr(model.get_submodule(owner), attr, dim, index)


def apply_keeps(model: nn.Module, keeps: Keeps, attrs: dict[str, dict[str, int]] | None = None) -> nn.Module:
    """Slice every layer named in ``keeps``, then set attributes (e.g. head counts)."""
    for name, axes in keeps.items():
        for axis, keep in axes.items():
            if axis.startswith(TENSOR_AXIS):
                _shrink_tensor(model, name, int(axis[len(TENSOR_AXIS) :]), torch.as_tensor(keep, dtype=torch.long))
            else:
                shrink(model.get_submodule(name), axis, keep)
    for name, values in (attrs or {}).items():
        module = model.get_submodule(name)
        for attr, value in values.items():
            setattr(module, attr, value)
    return model
