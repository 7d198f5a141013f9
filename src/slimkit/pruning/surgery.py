"""Layer surgery: rebuild layers with only the kept channels (physically smaller tensors).

`plan_keeps` turns each group's kept channels into per-layer index lists (JSON-ready, so
`load` can replay them without data); `apply_keeps` slices the layers in place.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError
from slimkit.pruning.groups import TENSOR_AXIS, Group, axis_length

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


def _param(old: torch.Tensor | None, dim: int, index: torch.Tensor) -> Any:
    if old is None:
        return None
    new = old.detach().index_select(dim, index.to(old.device)).clone()
    return nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new


def _set(module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    value = getattr(module, name, None)
    if isinstance(value, torch.Tensor):
        setattr(module, name, _param(value, dim, index))


def _grouped_positions(conv: nn.modules.conv._ConvNd, keep: list[int]) -> torch.Tensor:
    """Per weight row, the positions of its group's kept inputs (``keep``: input channels kept).

    Each group keeps the same number of its inputs (the dependency graph asks for it), so
    group ``g``'s rows keep the positions of its own kept inputs.

    Raises:
        UnsupportedModelError: when the groups would keep different numbers of inputs.
    """
    groups, per = conv.groups, conv.weight.shape[1]
    k = len(keep) // groups
    if k * groups != len(keep) or any(c // per != i // k for i, c in enumerate(keep)):
        raise UnsupportedModelError(f"a grouped convolution must keep as many inputs in each of its {groups} groups")
    positions = torch.tensor([c % per for c in keep], device=conv.weight.device).view(groups, k)
    return positions.repeat_interleave(conv.weight.shape[0] // groups, dim=0)


def _shrink_grouped_in(conv: nn.modules.conv._ConvNd, keep: list[int]) -> None:
    """Keep input channels ``keep`` of a grouped (not depthwise) convolution."""
    weight = conv.weight
    positions = _grouped_positions(conv, keep)
    gather = positions.view(*positions.shape, *(1,) * (weight.dim() - 2)).expand(-1, -1, *weight.shape[2:])
    conv.weight = nn.Parameter(weight.detach().gather(1, gather).clone(), requires_grad=weight.requires_grad)
    conv.in_channels = len(keep)


def _shrink_conv(module: nn.modules.conv._ConvNd, axis: str, keep: list[int]) -> None:
    depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
    if axis == "in" and module.groups > 1 and not depthwise:
        _shrink_grouped_in(module, keep)
        return
    index = torch.as_tensor(keep, dtype=torch.long)
    _set(module, "weight", 0 if axis == "out" else 1, index)
    if axis == "out":
        _set(module, "bias", 0, index)
        module.out_channels = len(index)
        if depthwise:
            module.in_channels = module.groups = len(index)
    else:
        module.in_channels = len(index)


def _shrink_tensor(model: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    _set(model.get_submodule(owner), attr, dim, index)


def shrink(module: nn.Module, axis: str, keep: list[int]) -> None:
    """Keep only ``keep`` along ``axis`` of ``module`` (in place).

    Raises:
        UnsupportedModelError: for a layer type that cannot be shrunk.
    """
    index = torch.as_tensor(keep, dtype=torch.long)
    n = len(keep)
    if isinstance(module, nn.modules.conv._ConvNd):
        _shrink_conv(module, axis, keep)
    elif isinstance(module, nn.Linear):
        _set(module, "weight", 0 if axis == "out" else 1, index)
        if axis == "out":
            _set(module, "bias", 0, index)
            module.out_features = n
        else:
            module.in_features = n
    elif isinstance(module, nn.Embedding):
        _set(module, "weight", 1, index)
        module.embedding_dim = n
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            _set(module, name, 0, index)
        if isinstance(module, nn.LayerNorm):
            module.normalized_shape = (n,)
        elif isinstance(module, nn.GroupNorm):  # per-channel groups follow the channels, others stay
            module.num_groups = n if module.num_groups == module.num_channels else module.num_groups
            module.num_channels = n
        else:
            module.num_features = n
    else:
        raise UnsupportedModelError(f"cannot shrink a {type(module).__name__} layer")


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
