"""Groups of coupled channels: what structured pruning removes together.

A `Group` is a set of `Member` slices, one per (layer, axis) that must lose the same
channels: the output channels of a conv, the matching BatchNorm entries, the input
channels of every consumer, across residual adds and concatenations. An `Importance`
scores a group's channels; the plan keeps the best ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from slimkit.core.errors import InvalidConfigError

AXES = ("out", "in")


@dataclass(frozen=True)
class Member:
    """One slice of one layer coupled to a group.

    Attributes:
        module: dotted module name.
        axis: ``"out"`` (output channels/features, embedding dim, norm or depthwise
            channels) or ``"in"`` (input channels/features).
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


@dataclass
class Group:
    """Channels that are pruned together.

    Attributes:
        size: number of channels.
        members: the coupled slices.
        label: a readable name (the producing layers).
        blocked: why the group cannot be pruned (``None`` when it can).
        heads: attention modules whose head count follows this group (``name -> attribute``).
    """

    size: int
    members: list[Member] = field(default_factory=list)
    label: str = ""
    blocked: str | None = None
    heads: dict[str, list[str]] = field(default_factory=dict)

    @property
    def producers(self) -> list[str]:
        """Modules whose output axis carries the group."""
        return list(dict.fromkeys(m.module for m in self.members if m.axis == "out"))


def axis_length(module: nn.Module, axis: str) -> int:
    """Length of ``axis`` of a prunable layer (see `Member`)."""
    if isinstance(module, nn.Linear):
        return module.out_features if axis == "out" else module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels if axis == "out" else module.in_channels
    if isinstance(module, nn.Embedding):
        return module.embedding_dim
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
        return module.num_features if hasattr(module, "num_features") else module.num_channels
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    raise InvalidConfigError(f"{type(module).__name__} has no prunable axis {axis!r}")


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
        groups.append(Group(sizes.pop(), members, label=",".join(spec)))
    return groups
