"""Groups of coupled channels: what structured pruning removes together.

A `Group` is a set of `Member` slices, one per (layer, axis) that must lose the same
channels: the output channels of a conv, the matching BatchNorm entries, the input
channels of every consumer, across residual adds and concatenations. An `Importance`
scores a group's channels; the plan keeps the best ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import InvalidConfigError
from slimkit.pruning.layers import axis_length as layer_axis_length
from slimkit.pruning.layers import layer_pruner

AXES = ("out", "in")
TENSOR_AXIS = "dim"
"""Prefix of a raw tensor member's axis: ``"dim0"`` slices dimension 0 of a parameter or buffer."""


@dataclass(frozen=True)
class Member:
    """One slice of one layer coupled to a group.

    Attributes:
        module: dotted module name.
        axis: ``"out"`` (output channels/features, embedding dim, norm or depthwise
            channels), ``"in"`` (input channels/features), or ``"dimK"`` when ``module``
            names a parameter or buffer (e.g. a layer scale) sliced along dimension ``K``.
        offset: where the group's channels start along that axis (concatenation).
        repeat: consecutive entries per channel (a Linear after flatten, or a head's
            ``head_dim`` features).
    """

    module: str
    axis: str
    offset: int = 0
    repeat: int = 1

    def span(self, size: int) -> tuple[int, int]:
        """The ``[start, stop)`` range the group's ``size`` channels cover on this axis."""
        return self.offset, self.offset + size * self.repeat

    @property
    def tensor_dim(self) -> int | None:
        """The sliced dimension of a raw tensor member (``None`` for a layer's axis)."""
        return int(self.axis[len(TENSOR_AXIS) :]) if self.axis.startswith(TENSOR_AXIS) else None


@dataclass
class Group:
    """Channels that are pruned together.

    Attributes:
        size: number of channels.
        members: the coupled slices.
        label: a readable name (the producing layers).
        blocked: why the group cannot be pruned (``None`` when it can).
        heads: attention modules whose head count follows this group (``name -> attribute``).
        blocks: the channels form this many equal consecutive blocks (the groups of a grouped
            convolution or a GroupNorm) that must each keep the same number of channels.
        space: the dependency graph's id of the group's channel space.
        router: for a group blocked only because the model moves its channels by the tensor's
            size (split, shuffle), the `slimkit.pruning.routing.Router` that may prune it exactly.
    """

    size: int
    members: list[Member] = field(default_factory=list)
    label: str = ""
    blocked: str | None = None
    heads: dict[str, list[str]] = field(default_factory=dict)
    blocks: int = 1
    space: int = -1
    router: Any = None

    @property
    def producers(self) -> list[str]:
        """Modules whose output axis carries the group."""
        return list(dict.fromkeys(m.module for m in self.members if m.axis == "out"))


def axis_length(module: nn.Module | torch.Tensor, axis: str) -> int:
    """Length of ``axis`` of a prunable layer or raw tensor (see `Member`)."""
    if isinstance(module, torch.Tensor):
        return module.shape[int(axis[len(TENSOR_AXIS) :])]
    return layer_axis_length(module, axis)


def parse_groups(model: nn.Module, specs: list[list[str]]) -> list[Group]:
    """Explicit groups from ``[["fc1:out", "fc2:in"], ...]`` (``name:axis``, optional ``*repeat``).

    Raises:
        InvalidConfigError: for unknown modules/axes or members of different lengths.
    """
    modules = dict(model.named_modules())
    groups = []
    for spec in specs:
        members, sizes = [], set()
        for item in spec:
            name, _, rest = item.rpartition(":")
            axis, _, repeat = rest.partition("*")
            if name not in modules or axis not in AXES:
                raise InvalidConfigError(
                    f"group member {item!r} must be 'module:out' or 'module:in' naming a layer of the model"
                )
            member = Member(name, axis, 0, int(repeat or 1))
            sizes.add(axis_length(modules[name], axis) // member.repeat)
            members.append(member)
        if len(sizes) != 1:
            raise InvalidConfigError(f"group {spec} couples axes of different lengths {sorted(sizes)}")
        blocks = math.lcm(*(axis_blocks(modules[m.module]) for m in members))
        groups.append(Group(sizes.pop(), members, label=",".join(spec), blocks=blocks))
    return groups


def axis_blocks(module: nn.Module) -> int:
    """Equal blocks a layer's channels come in: a grouped (not depthwise) conv's groups, a GroupNorm's."""
    pruner = layer_pruner(module)
    return 1 if pruner is None else pruner.blocks(module)


def layer_table(model: nn.Module) -> dict[str, nn.Module | torch.Tensor]:
    """Every member a group can name: the modules, parameters and buffers of ``model`` by dotted name."""
    table: dict[str, nn.Module | torch.Tensor] = dict(model.named_modules())
    table.update(model.named_parameters())
    table.update(model.named_buffers())
    return table
