"""What channel pruning needs to know of each layer type, in one table.

A `LayerPruner` says how long a layer's channel axes are, how to slice them, how its weight
reads as one row per channel (for importance), and how the dependency graph meets it. The
built-in ``torch.nn`` layers are registered here; `register_layer_pruner` adds your own, so
a custom layer is pruned like the built-in ones instead of blocking its channels::

    sk.pruning.register_layer_pruner(MyLinear, sk.pruning.LayerPruner(
        length=lambda m, axis: m.out_features if axis == "out" else m.in_features,
        shrink=my_shrink))                       # (layer, axis, kept indices) -> None, in place

Lookup follows the class's MRO, so a subclass of ``nn.Linear`` is pruned as a Linear unless
its own type (or a closer base) is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from slimkit.core.errors import InvalidConfigError, UnsupportedModelError

Axis = Literal["out", "in"]


def _weight_rows(layer: nn.Module, axis: str, weight: torch.Tensor) -> torch.Tensor:
    """A weight's rows along ``axis``: dim 0 for ``out``, dim 1 for ``in``."""
    return weight if axis == "out" else weight.transpose(0, 1)


def _one_block(layer: nn.Module) -> int:
    return 1


@dataclass(frozen=True)
class LayerPruner:
    """How channel pruning treats one layer type.

    Attributes:
        length: ``(layer, axis) -> int``: channels along ``"out"`` or ``"in"``.
        shrink: ``(layer, axis, keep) -> None``: keep only the channels ``keep`` (a ``LongTensor``,
            in the order the pruned layer holds them: ascending, except where channel routing
            reorders them) along ``axis``, in place, updating the layer's size attributes.
        rows: ``(layer, axis, weight) -> Tensor``: the weight as one row per channel of
            ``axis`` (importance scores read it); by default dim 0 for ``out``, dim 1 for ``in``.
        blocks: ``layer -> int``: equal blocks its channels come in (a grouped conv's groups).
        kind: how the dependency graph meets a registered custom layer: ``"transform"``
            consumes channels (``in``) and produces new ones (``out``), like a Linear;
            ``"per-channel"`` carries its input's channels through with one parameter per
            channel (``out`` is its only axis), like a norm.
        channel_dim: the tensor axis that carries channels in the layer's input and output
            (``-1`` Linear-like, ``1`` convolution-like).
    """

    length: Callable[[nn.Module, str], int]
    shrink: Callable[[nn.Module, str, torch.Tensor], None]
    rows: Callable[[nn.Module, str, torch.Tensor], torch.Tensor] = _weight_rows
    blocks: Callable[[nn.Module], int] = _one_block
    kind: Literal["transform", "per-channel"] = "transform"
    channel_dim: int = -1


_PRUNERS: dict[type[nn.Module], LayerPruner] = {}
_BUILTIN: set[type[nn.Module]] = set()


def register_layer_pruner(layer_type: type[nn.Module], pruner: LayerPruner) -> None:
    """Teach channel pruning a layer type (replaces an earlier registration of that type).

    Raises:
        InvalidConfigError: when ``layer_type`` is not an ``nn.Module`` subclass or ``pruner``
            is not a `LayerPruner`.
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise InvalidConfigError(f"register_layer_pruner needs an nn.Module subclass, got {layer_type!r}")
    if not isinstance(pruner, LayerPruner):
        raise InvalidConfigError(f"register_layer_pruner needs a LayerPruner, got {type(pruner).__name__}")
    _PRUNERS[layer_type] = pruner
    _BUILTIN.discard(layer_type)


def layer_pruner(layer: nn.Module) -> LayerPruner | None:
    """The pruner of ``layer``'s type or its closest registered base; ``None`` when there is none."""
    return next((_PRUNERS[k] for k in type(layer).__mro__ if k in _PRUNERS), None)


def custom_pruner(layer: nn.Module) -> LayerPruner | None:
    """The pruner of a layer whose type (or closest registered base) was registered by a user."""
    owner = next((k for k in type(layer).__mro__ if k in _PRUNERS), None)
    return None if owner is None or owner in _BUILTIN else _PRUNERS[owner]


def custom_layer_types() -> tuple[type[nn.Module], ...]:
    """Layer types registered by users (graph capture keeps their calls whole)."""
    return tuple(k for k in _PRUNERS if k not in _BUILTIN)


def _known(layer: nn.Module, error: type[Exception], what: str) -> LayerPruner:
    pruner = layer_pruner(layer)
    if pruner is None:
        raise error(f"{what} a {type(layer).__name__} layer: teach it with sk.pruning.register_layer_pruner")
    return pruner


def axis_length(layer: nn.Module, axis: str) -> int:
    """Channels along ``axis`` of a prunable layer.

    Raises:
        InvalidConfigError: for a layer type no pruner is registered for.
    """
    return _known(layer, InvalidConfigError, f"no prunable axis {axis!r} in").length(layer, axis)


def shrink(layer: nn.Module, axis: str, keep: list[int]) -> None:
    """Keep only ``keep`` along ``axis`` of ``layer`` (in place).

    Raises:
        UnsupportedModelError: for a layer type no pruner is registered for.
    """
    _known(layer, UnsupportedModelError, "cannot shrink").shrink(
        layer, axis, torch.as_tensor(keep, dtype=torch.long, device="cpu")
    )


def slice_attr(layer: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    """Keep ``index`` along ``dim`` of the tensor attribute ``name`` (parameter or buffer), if set."""
    old = getattr(layer, name, None)
    if not isinstance(old, torch.Tensor):
        return
    new = old.detach().index_select(dim, index.to(old.device)).clone()
    setattr(layer, name, nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new)


def _register_builtin(layer_type: type[nn.Module], pruner: LayerPruner) -> None:
    _PRUNERS[layer_type] = pruner
    _BUILTIN.add(layer_type)


# --- Linear and Embedding ----------------------------------------------------------------------


def _linear_length(layer: nn.Linear, axis: str) -> int:
    return layer.out_features if axis == "out" else layer.in_features


def _shrink_linear(layer: nn.Linear, axis: str, keep: torch.Tensor) -> None:
    slice_attr(layer, "weight", 0 if axis == "out" else 1, keep)
    if axis == "out":
        slice_attr(layer, "bias", 0, keep)
        layer.out_features = len(keep)
    else:
        layer.in_features = len(keep)


def _shrink_embedding(layer: nn.Embedding, axis: str, keep: torch.Tensor) -> None:
    slice_attr(layer, "weight", 1, keep)
    layer.embedding_dim = len(keep)


_register_builtin(nn.Linear, LayerPruner(_linear_length, _shrink_linear))
_register_builtin(
    nn.Embedding,
    LayerPruner(lambda layer, axis: layer.embedding_dim, _shrink_embedding, rows=lambda layer, axis, w: w.t()),
)


# --- Convolutions ------------------------------------------------------------------------------


def depthwise(layer: nn.Module) -> bool:
    """Whether ``layer`` is a depthwise convolution (one filter per channel, channel ``i`` in -> ``i`` out)."""
    conv = isinstance(layer, nn.modules.conv._ConvNd)
    return conv and layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels


def _conv_blocks(conv: nn.modules.conv._ConvNd) -> int:
    """A grouped (not depthwise) convolution's channels come in ``groups`` equal blocks."""
    return 1 if depthwise(conv) else conv.groups


def _conv_rows(conv: nn.modules.conv._ConvNd, axis: str, w: torch.Tensor) -> torch.Tensor:
    """One row per channel; a grouped conv's input rows come from its own group only."""
    if axis == "out":
        return w
    groups = conv.groups
    if groups == 1 or groups == w.shape[0] == conv.in_channels:
        return w.transpose(0, 1)
    per = w.shape[1]
    return w.reshape(groups, w.shape[0] // groups, per, -1).permute(0, 2, 1, 3).reshape(groups * per, -1)


def _grouped_positions(conv: nn.modules.conv._ConvNd, keep: torch.Tensor) -> torch.Tensor:
    """Per weight row, the positions of its group's kept inputs (``keep``: input channels kept).

    Each group keeps the same number of its inputs (the dependency graph asks for it), so
    group ``g``'s rows keep the positions of its own kept inputs.

    Raises:
        UnsupportedModelError: when the groups would keep different numbers of inputs.
    """
    groups, per = conv.groups, conv.weight.shape[1]
    k = len(keep) // groups
    in_group = torch.arange(len(keep), device=keep.device) // max(k, 1)
    if k * groups != len(keep) or not torch.equal(keep // per, in_group):
        raise UnsupportedModelError(f"a grouped convolution must keep as many inputs in each of its {groups} groups")
    positions = (keep % per).to(conv.weight.device).view(groups, k)
    return positions.repeat_interleave(conv.weight.shape[0] // groups, dim=0)


def _shrink_grouped_in(conv: nn.modules.conv._ConvNd, keep: torch.Tensor) -> None:
    """Keep input channels ``keep`` of a grouped (not depthwise) convolution."""
    weight = conv.weight
    positions = _grouped_positions(conv, keep)
    gather = positions.view(*positions.shape, *(1,) * (weight.dim() - 2)).expand(-1, -1, *weight.shape[2:])
    conv.weight = nn.Parameter(weight.detach().gather(1, gather).clone(), requires_grad=weight.requires_grad)
    conv.in_channels = len(keep)


def _shrink_conv(conv: nn.modules.conv._ConvNd, axis: str, keep: torch.Tensor) -> None:
    is_depthwise = depthwise(conv)
    if axis == "in" and conv.groups > 1 and not is_depthwise:
        _shrink_grouped_in(conv, keep)
        return
    slice_attr(conv, "weight", 0 if axis == "out" else 1, keep)
    if axis == "out":
        slice_attr(conv, "bias", 0, keep)
        conv.out_channels = len(keep)
        if is_depthwise:
            conv.in_channels = conv.groups = len(keep)
    else:
        conv.in_channels = len(keep)


_register_builtin(
    nn.modules.conv._ConvNd,
    LayerPruner(
        lambda conv, axis: conv.out_channels if axis == "out" else conv.in_channels,
        _shrink_conv,
        rows=_conv_rows,
        blocks=_conv_blocks,
        channel_dim=1,
    ),
)


# --- Norms -------------------------------------------------------------------------------------

_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _slice_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    for name in _NORM_TENSORS:
        slice_attr(norm, name, 0, keep)


def _shrink_batch_norm(norm: nn.modules.batchnorm._BatchNorm, axis: str, keep: torch.Tensor) -> None:
    _slice_norm(norm, keep)
    norm.num_features = len(keep)


def _shrink_layer_norm(norm: nn.LayerNorm, axis: str, keep: torch.Tensor) -> None:
    _slice_norm(norm, keep)
    norm.normalized_shape = (len(keep),)


def _shrink_group_norm(norm: nn.GroupNorm, axis: str, keep: torch.Tensor) -> None:
    """Per-channel groups follow the channels; other group counts stay."""
    _slice_norm(norm, keep)
    norm.num_groups = len(keep) if norm.num_groups == norm.num_channels else norm.num_groups
    norm.num_channels = len(keep)


def _group_norm_blocks(norm: nn.GroupNorm) -> int:
    return norm.num_groups if norm.num_groups != norm.num_channels else 1


_register_builtin(
    nn.modules.batchnorm._BatchNorm,
    LayerPruner(lambda norm, axis: norm.num_features, _shrink_batch_norm, kind="per-channel", channel_dim=1),
)
_register_builtin(
    nn.LayerNorm,
    LayerPruner(lambda norm, axis: norm.normalized_shape[-1], _shrink_layer_norm, kind="per-channel"),
)
_register_builtin(
    nn.GroupNorm,
    LayerPruner(
        lambda norm, axis: norm.num_channels,
        _shrink_group_norm,
        blocks=_group_norm_blocks,
        kind="per-channel",
        channel_dim=1,
    ),
)
