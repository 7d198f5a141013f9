"""Importance criteria: small callables that score each channel of a `Group`.

``importance(group, modules) -> Tensor[group.size]``; higher means keep. Every criterion
reads the group's coupled slices with `member_slices`, so it sees the producing layer's
rows, the norm's scales and every consumer's columns at once (vectorized).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.calibration import Point, calibrate
from slimkit.core.data import iter_batches, primary_output, run_model
from slimkit.core.errors import InvalidConfigError
from slimkit.core.statistics import ChannelMean
from slimkit.core.tables import Table
from slimkit.pruning.groups import Group, Member
from slimkit.pruning.layers import layer_pruner


class Importance(Protocol):
    """Scores the channels of a group."""

    def __call__(self, group: Group, modules: dict[str, nn.Module]) -> torch.Tensor: ...


def member_slices(
    module: nn.Module | torch.Tensor, member: Member, size: int, grad: bool = False
) -> list[torch.Tensor]:
    """The member's parameter slices as ``[size, -1]`` matrices (``.grad`` when ``grad``).

    Output axes include the bias; input axes are columns of the weight; a raw tensor member
    is sliced along its dimension.
    """
    start, stop = member.span(size)
    pick = (lambda p: p.grad) if grad else (lambda p: p.detach())
    if isinstance(module, torch.Tensor):
        t = pick(module)
        return [] if t is None else [t.movedim(member.tensor_dim, 0)[start:stop].reshape(size, -1)]
    weight = getattr(module, "weight", None)
    if weight is None or pick(weight) is None:
        return []
    pruner = layer_pruner(module)
    if pruner is None:
        return []
    slices = [pruner.rows(module, member.axis, pick(weight))[start:stop].reshape(size, -1)]
    bias = getattr(module, "bias", None)
    if member.axis == "out" and isinstance(bias, torch.Tensor) and pick(bias) is not None:
        slices.append(pick(bias)[start:stop].reshape(size, -1))
    return slices


def _sum_over(
    group: Group, modules: dict[str, nn.Module], fn: Any, members: Iterable[Member] | None = None
) -> torch.Tensor:
    total = None
    for member in group.members if members is None else members:
        for part in member_slices(modules[member.module], member, group.size):
            score = fn(part.float()).sum(1)
            total = score if total is None else total + score.to(total.device)
    if total is None:
        raise InvalidConfigError(f"group {group.label} has no weights to score")
    return total


class Magnitude:
    """Lp norm (to the p) of every coupled weight of the channel (L1: ``p=1``, L2: ``p=2``)."""

    def __init__(self, p: int = 1):
        self.p = p

    def __call__(self, group: Group, modules: dict[str, nn.Module]) -> torch.Tensor:
        return _sum_over(group, modules, lambda t: t.abs().pow(self.p))


class RandomImportance:
    """Uniform random scores (a baseline), seeded."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, group: Group, modules: dict[str, nn.Module]) -> torch.Tensor:
        return torch.rand(group.size, generator=self.generator)


def _per_channel(layer: nn.Module | torch.Tensor) -> bool:
    """A norm-like layer: one scale per channel (``weight`` may be absent)."""
    pruner = layer_pruner(layer) if isinstance(layer, nn.Module) else None
    return pruner is not None and pruner.kind == "per-channel" and getattr(layer, "weight", None) is not None


class BNScale:
    """|gamma| of the group's normalization layers (network slimming); magnitude when it has none."""

    def __call__(self, group: Group, modules: dict[str, nn.Module]) -> torch.Tensor:
        norms = [m for m in group.members if m.axis == "out" and _per_channel(modules[m.module])]
        if not norms:
            return Magnitude(1)(group, modules)
        scales = [modules[m.module].weight.detach()[m.offset : m.offset + group.size].abs() for m in norms]
        return torch.stack(scales).sum(0)


class Taylor:
    """First-order Taylor: ``|sum(weight * grad)|`` per channel, gradients from ``data``.

    Call `prepare` once before scoring: it accumulates gradients of the task loss
    (cross-entropy on targets; the output's squared norm when the data has none).
    """

    def __init__(self, batches: int = 4):
        self.batches = batches

    def prepare(self, model: nn.Module, data: Iterable[Any] | None, device: torch.device) -> None:
        """Accumulate gradients on up to ``batches`` batches of ``data``."""
        if data is None:
            raise InvalidConfigError("importance='taylor' needs data=: gradients come from a few batches")
        model.zero_grad(set_to_none=True)
        for batch in iter_batches(data, device, limit=self.batches):
            out = primary_output(run_model(model, batch))
            if batch.target is not None and out.dim() == 2 and not batch.target.is_floating_point():
                loss = F.cross_entropy(out, batch.target)
            else:
                loss = out.float().pow(2).mean()
            loss.backward()

    def __call__(self, group: Group, modules: dict[str, nn.Module]) -> torch.Tensor:
        total = None
        for member in group.members:
            module = modules[member.module]
            for w, g in zip(
                member_slices(module, member, group.size),
                member_slices(module, member, group.size, grad=True),
                strict=False,
            ):
                score = (w * g).sum(1)
                total = score if total is None else total + score
        if total is None:
            raise InvalidConfigError(f"group {group.label} has no gradients: the data never reached it")
        return total.abs()


class Activation:
    """Expected output change of removing each channel, from ``data``: for every layer reading
    the channel, ``E[x_j^2] * ||W[:, j]||^2`` (how much of the layer's output channel ``j``
    carries, as in FLAP / Wanda for structured pruning), summed over the group's readers.

    Call `prepare` once before scoring: it records each layer's mean squared input per channel
    over up to ``batches`` batches (no gradients). A group no layer reads on that data is scored
    by L2 weight magnitude.
    """

    def __init__(self, batches: int = 8):
        self.batches = batches
        self.energy: dict[str, torch.Tensor] = {}

    def prepare(self, model: nn.Module, data: Iterable[Any] | None, device: torch.device) -> None:
        """Record each transform layer's mean squared input channel over ``data``."""
        if data is None:
            raise InvalidConfigError("importance='activation' needs data=: it measures each layer's inputs")
        squares = {
            Point(name, "input"): ChannelMean(pruner.channel_dim, power=2)
            for name, module in model.named_modules()
            if (pruner := layer_pruner(module)) is not None and pruner.kind == "transform"
        }
        calibrate(model, data, squares, device=device, limit=self.batches, require_all=False)
        self.energy = {point.module: square.value for point, square in squares.items() if square.count}

    def __call__(self, group: Group, modules: dict[str, nn.Module]) -> torch.Tensor:
        total = None
        for member in group.members:
            module, energy = modules[member.module], self.energy.get(member.module)
            pruner = layer_pruner(module) if isinstance(module, nn.Module) else None
            if member.axis != "in" or energy is None or pruner is None:
                continue
            start, stop = member.span(group.size)
            rows = pruner.rows(module, "in", module.weight.detach())
            if rows.shape[0] != energy.numel():
                continue
            columns = rows[start:stop].float().pow(2).flatten(1).sum(1) * energy[start:stop].to(rows.device)
            score = columns.reshape(group.size, member.repeat).sum(1)
            total = score if total is None else total + score.to(total.device)
        return Magnitude(2)(group, modules) if total is None else total


IMPORTANCES: Table[Callable[[int], Importance]] = Table(
    "importance",
    [
        ("l1", lambda seed: Magnitude(1)),
        ("l2", lambda seed: Magnitude(2)),
        ("random", RandomImportance),
        ("bn-scale", lambda seed: BNScale()),
        ("taylor", lambda seed: Taylor()),
        ("activation", lambda seed: Activation()),
    ],
    hint="or an Importance object, or a name added with slimkit.pruning.register_importance",
)
"""Registered criteria: name -> factory taking the config's seed (`register_importance` adds)."""

OBJECT_PREFIX = "object:"
"""How the record names an `Importance` object passed directly (it is not saved, only named)."""


def register_importance(name: str, factory: Callable[[int], Importance]) -> None:
    """Make ``importance=name`` available to the structured pruning methods.

    Args:
        name: the name configs and recipes use.
        factory: ``factory(seed) -> Importance``; e.g. ``lambda seed: MyScore()``.
    """
    if not name or name.startswith(OBJECT_PREFIX):
        raise InvalidConfigError(f"cannot register an importance named {name!r}")
    IMPORTANCES.register(name, factory)


def check_importance(value: Any) -> Any:
    """A registered name or an `Importance` object (a callable); anything else is refused."""
    if isinstance(value, str):
        return value if value.startswith(OBJECT_PREFIX) else IMPORTANCES.check(value)
    if not callable(value):
        raise ValueError(f"importance must be a name or a callable (group, modules) -> scores, got {value!r}")
    return value


def importance_name(value: Any) -> str:
    """What the record stores for an importance: its name, or ``object:module.Class`` for an object."""
    return value if isinstance(value, str) else f"{OBJECT_PREFIX}{type(value).__module__}.{type(value).__qualname__}"


def make_importance(value: str | Importance, seed: int = 0) -> Importance:
    """The criterion ``value`` names (``l1``, ``l2``, ``random``, ``bn-scale``, ``taylor``,
    ``activation`` or a registered name), or ``value`` itself when it is an `Importance` object."""
    if not isinstance(value, str):
        return value
    if value.startswith(OBJECT_PREFIX):
        raise InvalidConfigError(
            f"the importance {value.removeprefix(OBJECT_PREFIX)} was an object, which a record does not keep: "
            "pass the object again (importance=MyImportance()) or register it by name"
        )
    return IMPORTANCES.lookup(value)(seed)
