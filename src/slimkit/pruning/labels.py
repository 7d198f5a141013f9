"""Label replays: a captured model's own graph run on tensors that hold channel numbers.

Every element of a label tensor holds the label of the channel it belongs to (0: none, such as
an input or a constant). Convs and linears start new labels (at the width asked of their
space), BatchNorm and depthwise convs carry them, ops that only move elements (``chunk``,
``cat``, ``view``, ``transpose``, indexing) run as written, and the width-reading arithmetic of
the model's code runs on the label tensors' real sizes. A `Run` records, for every layer axis,
the labels of the channels that meet it in order, and which labels met an op that mixes
channels (lost). `slimkit.pruning.routing` compares two runs.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import torch
from torch import fx, nn
from torch.utils._pytree import tree_leaves

from slimkit.core.graph import node_shape
from slimkit.pruning.flows import BINARY, PASS_MODULES, REDUCE, UNARY, op_name
from slimkit.pruning.layers import depthwise, layer_pruner

Key = tuple[str, str]
"""``(module name, "in" | "out")``: a layer axis a channel meets."""

NATIVE = {
    "getitem", "chunk", "split", "cat", "concat", "stack", "view", "reshape", "transpose", "permute", "contiguous",
    "flatten", "unflatten", "unsqueeze", "squeeze", "size", "getattr", "dim", "expand", "narrow", "_unsafe_view",
    "clone", "roll", "flip",
}  # fmt: skip
"""Ops that only move elements: they run as written on label tensors (at any width)."""


class _Poison:
    """The value of an op that mixes channels in a way routing cannot follow."""


POISON = _Poison()
GRAPH_INPUTS = ("placeholder", "get_attr")
"""fx's node kinds for a graph's inputs and for the parameters and buffers it reads: they start
with no channel labels (zeros of their shape)."""


class Run:
    """What one label replay saw: each layer axis' channel labels, and labels lost on the way.

    Args:
        owner: the root space of each label.
    """

    def __init__(self, owner: list[int]) -> None:
        self.owner = owner
        self.seen: dict[Key, list[torch.Tensor]] = {}
        self.lost: set[int] = set()
        self.where: dict[int, str] = {}
        """Where each lost label was lost (the first op)."""

    def lose(self, node: fx.Node, value: Any) -> None:
        """The channels in ``value`` meet ``node``, an op routing cannot follow (or the output)."""
        for label in _labels_in(value) - self.lost:
            self.where[label] = "the model output" if node.op == "output" else f"{op_name(node)} ({node.name})"
            self.lost.add(label)

    def record(self, key: Key, labels: torch.Tensor) -> None:
        self.seen.setdefault(key, []).append(labels)

    @functools.cached_property
    def routes(self) -> dict[int, frozenset[Key]]:
        """Each label's route: the layer axes it meets."""
        met: dict[int, set[Key]] = {}
        for key, calls in self.seen.items():
            for v in calls[0].long().tolist():
                if v > 0:
                    met.setdefault(v, set()).add(key)
        return {v: frozenset(keys) for v, keys in met.items()}

    @functools.cached_property
    def met(self) -> dict[int, set[Key]]:
        """The layer axes each root space's channels meet."""
        at: dict[int, set[Key]] = {}
        for label, keys in self.routes.items():
            at.setdefault(self.owner[label], set()).update(keys)
        return at


class Replay:
    """Runs ``gm`` on label tensors.

    Args:
        gm: the captured model (a graph whose view sizes follow the tensors, i.e. fx-traced).
        roots: the space each producing layer's node starts.
        base: each space's first label.
        sizes: each space's channels.
        owner: the space of each label.
    """

    def __init__(
        self,
        gm: fx.GraphModule,
        roots: dict[fx.Node, int],
        base: dict[int, int],
        sizes: dict[int, int],
        owner: list[int],
    ) -> None:
        self.gm = gm
        self.modules = dict(gm.meta.get("root", gm).named_modules())
        self.roots, self.base, self.sizes, self.owner = roots, base, sizes, owner

    def __call__(self, widths: dict[int, int]) -> Run:
        """Run the graph on label tensors, the roots in ``widths`` at those widths."""
        run, env = Run(self.owner), {}
        for node in self.gm.graph.nodes:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            try:
                env[node] = self._step(node, args, kwargs, widths, run)
            except Exception:  # an op that does not run at these widths: its channels are lost
                run.lose(node, (args, kwargs))
                env[node] = POISON
        return run

    def _step(self, node: fx.Node, args: tuple, kwargs: dict, widths: dict[int, int], run: Run) -> Any:
        if node.op in GRAPH_INPUTS:
            value = operator.attrgetter(str(node.target))(self.gm) if node.op == "get_attr" else None
            shape = value.shape if isinstance(value, torch.Tensor) else node_shape(node)
            return torch.zeros(shape, dtype=torch.float64) if shape is not None else value
        if node.op == "output":
            run.lose(node, args)
            return None
        if _has_poison((args, kwargs)):
            run.lose(node, (args, kwargs))
            return POISON
        if node.op == "call_module":
            return self._module(node, args, widths, run)
        name = op_name(node)
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        if name in NATIVE or not tensors:
            return _call(node, args, kwargs)
        labelled = any(_has_labels(t) for t in tensors)
        if name in UNARY:
            return tensors[0] if node_shape(node) == node_shape(node.args[0]) else _call(node, args, kwargs).round()
        if name in BINARY:
            return _combine(args[0], args[1] if len(args) > 1 else kwargs.get("other"))
        if name in REDUCE and labelled:
            return _reduce(node, args[0], args[1] if len(args) > 1 else kwargs.get("dim"), kwargs)
        if labelled:
            run.lose(node, tensors)
            return POISON
        shape = node_shape(node)
        return torch.zeros(shape, dtype=torch.float64) if shape is not None else _call(node, args, kwargs)

    def _module(self, node: fx.Node, args: tuple, widths: dict[int, int], run: Run) -> Any:
        name, x = str(node.target), args[0] if args else None
        mod, shape = self.modules[name], node_shape(node)
        pruner = layer_pruner(mod)
        if not isinstance(x, torch.Tensor) or shape is None:
            run.lose(node, args)
            return POISON
        if node in self.roots:  # a conv/linear: its input channels meet it, new ones start
            if _has_labels(x):
                grouped = isinstance(mod, nn.modules.conv._ConvNd) and mod.groups > 1
                labels = None if grouped else _channel_labels(x, pruner.channel_dim % x.dim())
                if labels is None:
                    run.lose(node, x)
                else:
                    run.record((name, "in"), labels)
            root = self.roots[node]
            labels = torch.arange(widths.get(root, self.sizes[root]), dtype=torch.float64) + self.base[root]
            run.record((name, "out"), labels)
            return _spread(labels, shape, pruner.channel_dim % len(shape))
        if _per_channel(mod):
            dim = pruner.channel_dim % x.dim()
            labels = _channel_labels(x, dim)
            if labels is None:
                run.lose(node, x)
                return POISON
            run.record((name, "out"), labels)
            return _spread(labels, shape, dim)
        if isinstance(mod, PASS_MODULES):
            return x if shape == node_shape(node.args[0]) else mod(x).round()
        if any(_has_labels(a) for a in tree_leaves(args)):
            run.lose(node, args)
            return POISON
        return torch.zeros(shape, dtype=torch.float64)


def produces(mod: nn.Module) -> bool:
    """Whether a layer starts new channels (a conv that is not depthwise, a Linear, an Embedding)."""
    pruner = layer_pruner(mod)
    return pruner is not None and pruner.kind == "transform" and not depthwise(mod)


def _per_channel(mod: nn.Module) -> bool:
    """A layer that keeps each channel apart (depthwise conv, BatchNorm, a registered per-channel
    layer); LayerNorm and GroupNorm mix channels' statistics."""
    pruner = layer_pruner(mod)
    norm_mixes = isinstance(mod, (nn.LayerNorm, nn.GroupNorm))
    return depthwise(mod) or (pruner is not None and pruner.kind == "per-channel" and not norm_mixes)


# --- label tensors ---------------------------------------------------------------------------


def _has_poison(value: Any) -> bool:
    return any(v is POISON for v in tree_leaves(value))


def _has_labels(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and bool((value > 0).any())


def _labels_in(value: Any) -> set[int]:
    """Channel labels (positive) held by the tensors in ``value``."""
    found: set[int] = set()
    for item in tree_leaves(value):
        if isinstance(item, torch.Tensor) and item.is_floating_point() and item.numel():
            found.update(int(v) for v in item.unique().tolist() if v > 0)
    return found


def _channel_labels(x: torch.Tensor, dim: int) -> torch.Tensor | None:
    """The label of each entry along ``dim`` (``None`` when an entry holds several)."""
    rows = x.movedim(dim, 0).reshape(x.shape[dim], -1)
    label = _one_label(rows, 1, keepdim=False)
    return None if label is None or (rows < 0).any() else label


def _spread(labels: torch.Tensor, shape: tuple[int, ...], dim: int) -> torch.Tensor:
    """A tensor of ``shape`` (its ``dim`` resized to the labels) holding each label along ``dim``."""
    full = list(shape)
    full[dim] = len(labels)
    view = [1] * len(full)
    view[dim] = len(labels)
    return labels.view(view).expand(full).clone()


def _combine(a: Any, b: Any) -> torch.Tensor:
    """An elementwise op of two label tensors: a channel with itself or with no channel keeps
    its label; two different channels mixed are lost."""
    if not isinstance(b, torch.Tensor):
        return a
    if not isinstance(a, torch.Tensor):
        return b
    a, b = torch.broadcast_tensors(a, b)
    out = torch.where(a == 0, b, a)
    if ((a > 0) & (b > 0) & (a != b)).any():
        raise ValueError("channels of different spaces combined")
    return out


def _reduce(node: fx.Node, x: torch.Tensor, dims: Any, kwargs: dict) -> torch.Tensor:
    """A mean/sum/max over other axes keeps each channel's label; over the channels it mixes them."""
    keep = node.args[2] if len(node.args) > 2 else kwargs.get("keepdim", False)
    dims = tuple(range(x.dim())) if dims is None else (dims,) if isinstance(dims, int) else tuple(dims)
    label = _one_label(x, dims, keep)
    if label is None:
        raise ValueError("reduced over the channels")
    return label


def _one_label(x: torch.Tensor, dims: Any, keepdim: bool) -> torch.Tensor | None:
    """The label each slice over ``dims`` holds (0 for none), ``None`` when a slice holds several."""
    hi = x.amax(dims, keepdim=keepdim)
    lo = torch.where(x > 0, x, torch.inf).amin(dims, keepdim=keepdim)
    return None if ((lo != hi) & (hi > 0)).any() else hi


def _call(node: fx.Node, args: tuple, kwargs: dict) -> Any:
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    return node.target(*args, **kwargs)
