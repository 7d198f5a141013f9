"""The dependency graph: which channels of which layers must be pruned together.

Channel flow is propagated through the model's fx graph (`slimkit.core.graph.capture`).
Every conv/linear/embedding output starts a *space* of channels; ops that pass channels
through (activations, BatchNorm, pooling, depthwise convs, reshapes that keep the channel
axis) carry it along, residual adds merge spaces, concatenation lays spaces side by side
(split/chunk along another axis pass them on), and a Linear after flatten sees each channel as
``H*W`` features. A space reaching anything it cannot follow (the model output, a
grouped conv, a view that splits the channel axis into heads, an unknown op) is blocked,
with the reason. Each space becomes one `Group`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from slimkit.core.graph import node_shape
from slimkit.pruning.groups import TENSOR_AXIS, Group, Member
from slimkit.pruning.layers import LayerPruner, custom_pruner


@dataclass(frozen=True)
class Seg:
    """A run of ``length`` channels of one space; each channel spans ``repeat`` entries."""

    space: int
    length: int
    repeat: int = 1


@dataclass(frozen=True)
class Flow:
    """Channel spaces laid along axis ``dim`` of a tensor."""

    segs: tuple[Seg, ...]
    dim: int


@dataclass(frozen=True)
class ShapeOf:
    """The shape of a tensor whose axis ``flow.dim`` carries channels (``x.shape``, ``x.size()``).

    Reading its other entries is harmless; reading the channel count, or using the whole
    shape, blocks the channels (the model's code would still see the old count).
    """

    flow: Flow
    ndim: int


@dataclass(frozen=True)
class Items:
    """A tuple of values (from split/chunk)."""

    items: tuple[Flow | None, ...]


_UNARY = {
    "relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardtanh", "leaky_relu", "elu",
    "hardsigmoid", "mish", "softplus", "selu", "celu", "sigmoid_", "hardswish_", "hardsigmoid_", "silu_",
    "dropout", "dropout2d", "stochastic_depth", "drop_path", "contiguous", "clone", "float", "to", "type_as",
    "detach", "abs", "neg", "sqrt", "rsqrt", "exp", "log", "erf", "square", "reciprocal", "sin", "cos",
    "clamp", "clamp_min", "clamp_max", "gelu_", "relu6_",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool1d", "avg_pool2d",
    "max_pool1d", "max_pool2d", "interpolate", "pad", "upsample_nearest2d", "upsample_bilinear2d",
    "upsample_bicubic2d", "_upsample_bilinear2d_aa", "constant_pad_nd",
}  # fmt: skip
_BINARY = {
    "add", "sub", "mul", "truediv", "div", "iadd", "imul", "isub", "__add__", "__mul__", "__sub__", "add_", "mul_",
    "pow", "rsub",
}  # fmt: skip
_FUNCTIONAL_NORMS = {"batch_norm", "layer_norm", "group_norm", "instance_norm"}
_REDUCE = {"mean", "sum", "amax", "amin"}
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Identity,
    nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.SELU, nn.CELU,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample,
)  # fmt: skip


_MOVES = {"transpose", "permute", "view", "reshape", "expand", "unsqueeze", "squeeze", "_unsafe_view", "unflatten"}
_CHECKS = {"_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range_for_size"}
"""Ops torch.export adds to check values; they compute nothing the channels flow through."""

_ATEN_ALIASES = {"split_with_sizes": "split", "sym_size": "size", "_to_copy": "to", "alias": "clone"}
"""ATen ops (graphs captured by torch.export) that mean what a torch function of another name does."""


def _name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    target = node.target
    if target in (operator.add, operator.iadd):
        return "add"
    if isinstance(target, torch._ops.OpOverload):
        name = target.overloadpacket.__name__
        return _ATEN_ALIASES.get(name, name)
    return getattr(target, "__name__", str(target))


def _ndim(arg: Any) -> int | None:
    shape = node_shape(arg) if isinstance(arg, fx.Node) else None
    return len(shape) if shape is not None else None


def _parameter_behind(value: Any) -> fx.Node | None:
    """The parameter/buffer node a value is an expanded or cast view of (``cls_token.expand(b, -1, -1)``)."""
    while isinstance(value, fx.Node) and value.op != "get_attr":
        if _name(value) not in ("expand", "repeat", "to", "contiguous", "clone", "type_as") or not value.args:
            return None
        value = value.args[0]
    return value if isinstance(value, fx.Node) else None


def _arg(node: fx.Node, index: int, key: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(key, default)


class DependencyGraph:
    """Channel coupling of a captured model; `groups()` lists one `Group` per space."""

    def __init__(self, gm: fx.GraphModule):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: dict[int, list[Member]] = {}
        self.blocked: dict[int, str] = {}
        self.blocks: dict[int, int] = {}
        """Equal blocks a space's channels must keep the same count in (grouped layers)."""
        self.label: dict[int, str] = {}
        self.opaque: dict[str, str] = {}
        """Layers with weights the analysis cannot prune, with why."""
        self.env: dict[fx.Node, Flow | Items | ShapeOf | None] = {}
        self.modules = dict(gm.meta.get("root", gm).named_modules())
        self.literal_shapes = gm.meta.get("tracer", "fx") == "fx"
        """Whether an int in a view's target shape is written in the model's code (fx) rather than
        a size torch.export specialized."""
        self.node: fx.Node | None = None
        """The node being visited (where a block happens)."""
        for node in gm.graph.nodes:
            self.node = node
            self.env[node] = self._visit(node)

    # --- spaces -------------------------------------------------------------------------
    def _new(self, size: int, module: str, axis: str = "out") -> int:
        space = len(self.parent)
        self.parent.append(space)
        self.size.append(size)
        self.members[space] = [Member(module, axis)]
        self.label[space] = module
        return space

    def _find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        self.members[ra] += self.members.pop(rb)
        self.label[ra] = f"{self.label[ra]}+{self.label.pop(rb)}"
        if rb in self.blocked:
            self.blocked.setdefault(ra, self.blocked.pop(rb))
        self._constrain(ra, self.blocks.pop(rb, 1), "a coupled grouped layer")

    def _constrain(self, space: int, blocks: int, why: str) -> None:
        """Ask ``space`` to keep as many channels in each of ``blocks`` equal blocks."""
        root = self._find(space)
        merged = math.lcm(self.blocks.get(root, 1), blocks)
        if self.size[root] % merged or (merged == self.size[root] > 1):
            self.blocked.setdefault(root, f"{why} needs {merged} equal blocks of its {self.size[root]} channels")
        elif merged > 1:
            self.blocks[root] = merged

    def _block(self, value: Any, reason: str) -> None:
        reason += self._location()
        for flow in self._flows(value):
            for seg in flow.segs:
                self.blocked.setdefault(self._find(seg.space), reason)

    def _location(self) -> str:
        """`` (size, in stage2.0: InvertedResidual)``: the op and the module whose code does what
        blocks, for a function or method call inside a submodule ('' otherwise)."""
        node = self.node
        if node is None or node.op not in ("call_function", "call_method"):
            return ""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return f" ({_name(node)})"
        path, kind = list(stack.values())[-1]
        kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        return f" ({_name(node)}, in {path}: {kind.rpartition('.')[2]})"

    def _attach(self, flow: Flow, module: str, axis: str) -> None:
        offset = 0
        for seg in flow.segs:
            self.members[self._find(seg.space)].append(Member(module, axis, offset, seg.repeat))
            offset += seg.length * seg.repeat

    def _produce(self, module: str, size: int, dim: int, blocks: int = 1) -> Flow:
        space = self._new(size, module)
        self._constrain(space, blocks, module)
        return Flow((Seg(space, size),), dim)

    # --- values -------------------------------------------------------------------------
    def _flows(self, value: Any) -> Iterator[Flow]:
        if isinstance(value, fx.Node):
            value = self.env.get(value)
        if isinstance(value, Flow):
            yield value
        elif isinstance(value, ShapeOf):
            yield value.flow
        elif isinstance(value, Items):
            for item in value.items:
                yield from self._flows(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from self._flows(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from self._flows(item)

    def _flow(self, arg: Any) -> Flow | None:
        value = self.env.get(arg) if isinstance(arg, fx.Node) else None
        return value if isinstance(value, Flow) else None

    def _block_all(self, node: fx.Node, reason: str) -> None:
        self._block(list(node.args) + list(node.kwargs.values()), reason)

    # --- nodes --------------------------------------------------------------------------
    def _visit(self, node: fx.Node) -> Flow | Items | ShapeOf | None:
        if node.op in ("placeholder", "get_attr"):
            return None
        if node.op == "output":
            self._block(node.args, "reaches the model output")
            return None
        if node.op == "call_module":
            return self._module(node, str(node.target), self.modules[str(node.target)])
        return self._function(node, _name(node))

    def _module(self, node: fx.Node, name: str, mod: nn.Module) -> Flow | None:
        self._block_shapes(node)
        flow = self._flow(node.args[0]) if node.args else None
        shape = node_shape(node)
        custom = custom_pruner(mod)
        if custom is not None and shape is not None and node.args:
            return self._custom(name, mod, custom, flow, _ndim(node.args[0]), len(shape))
        if isinstance(mod, nn.modules.conv._ConvNd) and not mod.transposed:
            return self._conv(name, mod, flow)
        if isinstance(mod, nn.Linear) and shape is not None:
            if flow is not None:
                if flow.dim == _ndim(node.args[0]) - 1:
                    self._attach(flow, name, "in")
                else:
                    self._block(flow, f"{name} is applied along another axis")
            return self._produce(name, mod.out_features, len(shape) - 1)
        if isinstance(mod, nn.Embedding) and shape is not None:
            return self._produce(name, mod.embedding_dim, len(shape) - 1)
        if flow is not None and self._norm_follows(mod, flow, node):
            self._attach(flow, name, "out")
            return flow
        if isinstance(mod, _PASS_MODULES) or (flow is None and isinstance(mod, _NORMS)):
            return flow
        if isinstance(mod, nn.Flatten):
            return self._flatten(node, flow, mod.start_dim, mod.end_dim)
        if any(True for _ in mod.parameters()):
            self.opaque[name] = f"{type(mod).__name__} is a layer channel pruning cannot follow"
        self._block_all(node, f"{name} ({type(mod).__name__}) is a layer channel pruning cannot follow")
        return None

    def _custom(
        self, name: str, mod: nn.Module, pruner: LayerPruner, flow: Flow | None, in_ndim: int | None, out_ndim: int
    ) -> Flow | None:
        """A layer type registered with `register_layer_pruner`: as its `LayerPruner` says."""
        follows = flow is not None and in_ndim is not None and flow.dim == pruner.channel_dim % in_ndim
        if pruner.kind == "per-channel":
            if follows and all(s.repeat == 1 for s in flow.segs):
                self._attach(flow, name, "out")
                return flow
            if flow is not None:
                self._block(flow, f"{name} ({type(mod).__name__}) is applied along another axis")
            return None
        if follows:
            self._attach(flow, name, "in")
        elif flow is not None:
            self._block(flow, f"{name} ({type(mod).__name__}) is applied along another axis")
        return self._produce(name, pruner.length(mod, "out"), pruner.channel_dim % out_ndim, pruner.blocks(mod))

    def _conv(self, name: str, mod: nn.modules.conv._ConvNd, flow: Flow | None) -> Flow | None:
        """A convolution: depthwise ones carry their input's channels, others start a space.

        A grouped convolution keeps its groups: each must keep as many inputs and outputs as
        the others, so both its input and output spaces are cut into ``groups`` equal blocks.
        """
        depthwise = mod.groups == mod.in_channels == mod.out_channels
        if depthwise and mod.groups > 1:
            if flow is not None:
                self._attach(flow, name, "out")  # depthwise: channel i in -> channel i out
            return flow
        if flow is not None and mod.groups > 1 and not self._single(flow):
            self._block(flow, f"{name} is a grouped convolution (groups={mod.groups}) of concatenated channels")
        elif flow is not None:
            self._attach(flow, name, "in")
            self._constrain(flow.segs[0].space, mod.groups, f"{name} (groups={mod.groups})")
        return self._produce(name, mod.out_channels, 1, mod.groups)

    @staticmethod
    def _single(flow: Flow) -> bool:
        return len(flow.segs) == 1 and flow.segs[0].repeat == 1

    def _norm_follows(self, mod: nn.Module, flow: Flow, node: fx.Node) -> bool:
        plain = all(s.repeat == 1 for s in flow.segs)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            return plain and flow.dim == 1
        if isinstance(mod, nn.GroupNorm):
            if mod.num_groups in (1, mod.num_channels):
                return plain and flow.dim == 1
            if not (flow.dim == 1 and self._single(flow)):
                return False
            self._constrain(flow.segs[0].space, mod.num_groups, "a GroupNorm")
            return True
        if isinstance(mod, nn.LayerNorm):
            return plain and len(mod.normalized_shape) == 1 and flow.dim == _ndim(node.args[0]) - 1
        return False

    def _function(self, node: fx.Node, name: str) -> Flow | Items | ShapeOf | None:
        first = node.args[0] if node.args else None
        flow = self._flow(first)
        if name in ("getattr", "size", "dim") and flow is not None:
            return self._shape(node, name, flow)
        if name == "getitem":
            return self._getitem(node, first, flow)
        if name in _CHECKS:
            return None
        self._block_shapes(node)
        if name in _FUNCTIONAL_NORMS and flow is not None:
            return self._functional_norm(node, name, flow)
        if name in ("softmax", "log_softmax") and flow is not None:
            if _arg(node, 1, "dim") % _ndim(first) != flow.dim:
                return flow
        elif name in _UNARY:
            return flow
        if name in _BINARY:
            return self._binary(node)
        if name in _REDUCE and flow is not None:
            return self._reduce(node, flow)
        if name == "flatten":
            return self._flatten(node, flow, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
        if name in _MOVES:
            return self._move(node, name, flow)
        if name in ("select", "slice") and flow is not None:
            return self._index(node, name, flow, {_arg(node, 1, "dim", 0) % _ndim(first): name == "select"})
        if name in ("cat", "concat"):
            return self._cat(node)
        if name in ("split", "chunk"):
            return self._split(node, name, flow)
        self._block_all(node, f"it goes through {name}, which channel pruning cannot follow")
        return None

    def _shape(self, node: fx.Node, name: str, flow: Flow) -> ShapeOf | None:
        """``x.shape`` / ``x.size()`` (a `ShapeOf`), ``x.size(i)``, ``x.dim()``, ``x.ndim``, ``x.dtype``."""
        index = _arg(node, 1, "dim")
        ndim = _ndim(node.args[0])
        if name == "dim" or (name == "getattr" and index != "shape"):
            return None
        if name == "size" and isinstance(index, int):
            if index % ndim == flow.dim:
                self._block(flow, "its channel count is read by the model's code (e.g. to reshape)")
            return None
        return ShapeOf(flow, ndim)

    def _getitem(self, node: fx.Node, first: Any, flow: Flow | None) -> Flow | None:
        """An item of split/chunk results, or entries of a shape; anything else indexed blocks."""
        value = self.env.get(first) if isinstance(first, fx.Node) else None
        index = node.args[1]
        if isinstance(value, Items) and isinstance(index, int):
            return value.items[index]
        if isinstance(value, ShapeOf) and isinstance(index, (int, slice)):
            read = range(value.ndim)[index]
            if value.flow.dim in (read if isinstance(read, range) else (read,)):
                self._block(value.flow, "its channel count is read by the model's code (e.g. to reshape)")
            return None
        if flow is not None and isinstance(index, (tuple, int, slice)) and not isinstance(index, bool):
            return self._index_items(node, first, flow, index if isinstance(index, tuple) else (index,))
        self._block(flow, "it is indexed or sliced")
        return None

    def _index_items(self, node: fx.Node, first: Any, flow: Flow, index: tuple[Any, ...]) -> Flow | None:
        """``x[:, 0]``, ``x[..., 1:]``: ints drop an axis, slices keep it, ``None`` adds one."""
        ndim = _ndim(first)
        if any(isinstance(i, fx.Node) for i in index) or index.count(Ellipsis) > 1 or ndim is None:
            self._block(flow, "it is indexed with a tensor")
            return None
        fill = ndim - sum(1 for i in index if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for item in index:
            expanded.extend([slice(None)] * fill if item is Ellipsis else [item])
        expanded += [slice(None)] * (ndim - sum(1 for i in expanded if i is not None))
        axes, axis = {}, 0
        for item in expanded:
            if item is not None:
                axes[axis] = isinstance(item, int) if item != slice(None) else None
                axis += 1
        touched = {a: dropped for a, dropped in axes.items() if dropped is not None}
        moved = self._index(node, "getitem", flow, touched)
        if moved is None:
            return None
        added = sum(1 for i in expanded[: self._position(expanded, flow.dim)] if i is None)
        return Flow(moved.segs, moved.dim + added)

    @staticmethod
    def _position(expanded: list[Any], axis: int) -> int:
        """Index in ``expanded`` (which may hold ``None``) of input axis ``axis``."""
        seen = -1
        for pos, item in enumerate(expanded):
            seen += item is not None
            if seen == axis:
                return pos
        return len(expanded)

    def _index(self, node: fx.Node, name: str, flow: Flow, axes: dict[int, bool]) -> Flow | None:
        """Pick along ``axes`` (``True``: the axis is dropped, as by ``select``; ``False``: sliced)."""
        if flow.dim in axes:
            self._block(flow, f"it is indexed along the channel axis ({name})")
            return None
        return Flow(flow.segs, flow.dim - sum(1 for a, dropped in axes.items() if dropped and a < flow.dim))

    def _block_shapes(self, node: fx.Node) -> None:
        """A whole shape passed on (``x.view(y.shape)``) fixes the channel count."""
        for arg in (*node.args, *node.kwargs.values()):
            if isinstance(self.env.get(arg) if isinstance(arg, fx.Node) else None, ShapeOf):
                self._block(arg, "its whole shape is used by the model's code")

    def _functional_norm(self, node: fx.Node, name: str, flow: Flow) -> Flow | None:
        """``F.batch_norm(x, self.running_mean, ..., self.weight, ...)`` written in a norm layer's own
        forward (a BatchNorm subclass that also applies an activation, a channels-first LayerNorm)."""
        params = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node) and a.op == "get_attr"]
        owners = {str(p.target).rpartition(".")[0] for p in params}
        owner = owners.pop() if len(owners) == 1 else None
        mod = self.modules.get(owner) if owner is not None else None
        if isinstance(mod, _NORMS) and self._norm_follows(mod, flow, node):
            self._attach(flow, owner, "out")
            return flow
        self._block(flow, f"it goes through {name} with parameters that are not one norm layer's ({sorted(owners)})")
        return None

    def _tensor_member(self, flow: Flow, node: fx.Node, pos: int) -> bool:
        """Couple a parameter or buffer multiplying/added to the channels (e.g. a layer scale)."""
        if node.op != "get_attr":
            return False
        shape = node_shape(node) or ()
        dim = len(shape) + pos
        if dim < 0 or shape[dim] != sum(s.length * s.repeat for s in flow.segs):
            return False
        self._attach(flow, str(node.target), f"{TENSOR_AXIS}{dim}")
        return True

    def _binary(self, node: fx.Node) -> Flow | None:
        shape = node_shape(node)
        if shape is None:
            self._block_all(node, "it is combined with a non-tensor")
            return None
        a, b = node.args[0], node.args[1] if len(node.args) > 1 else None
        fa, fb = self._flow(a), self._flow(b)
        if fa is None and fb is None:
            return None
        if fa is None:
            a, b, fa, fb = b, a, fb, fa
        pos = fa.dim - _ndim(a)
        if fb is not None:
            same = fb.dim - _ndim(b) == pos and [(s.length, s.repeat) for s in fa.segs] == [
                (s.length, s.repeat) for s in fb.segs
            ]
            if not same:
                self._block([fa, fb], "it is added to channels laid out differently")
                return None
            for sa, sb in zip(fa.segs, fb.segs, strict=True):
                self._union(sa.space, sb.space)
        elif isinstance(b, fx.Node):
            other = node_shape(b) or ()
            if -pos <= len(other) and other[pos] != 1 and not self._tensor_member(fa, b, pos):
                self._block(fa, "it is combined with a tensor that cannot be pruned along with it")
                return None
        return Flow(fa.segs, len(shape) + pos)

    def _reduce(self, node: fx.Node, flow: Flow) -> Flow | None:
        ndim = _ndim(node.args[0])
        dims = _arg(node, 1, "dim")
        if dims is None:
            self._block(flow, "it is reduced over all axes")
            return None
        dims = {d % ndim for d in ((dims,) if isinstance(dims, int) else dims)}
        if flow.dim in dims:  # a statistic over the channels (RMSNorm's mean square): it holds none
            return None
        keep = _arg(node, 2, "keepdim", False)
        return Flow(flow.segs, flow.dim if keep else flow.dim - sum(d < flow.dim for d in dims))

    def _flatten(self, node: fx.Node, flow: Flow | None, start: int, end: int) -> Flow | None:
        if flow is None:
            return None
        shape = node_shape(node.args[0])
        start, end = start % len(shape), end % len(shape)
        if flow.dim < start:
            return flow
        if flow.dim > end:
            return Flow(flow.segs, flow.dim - (end - start))
        if math.prod(shape[start : flow.dim]) != 1:
            self._block(flow, "it is flattened behind another axis")
            return None
        inner = math.prod(shape[flow.dim + 1 : end + 1])
        return Flow(tuple(Seg(s.space, s.length, s.repeat * inner) for s in flow.segs), start)

    def _move(self, node: fx.Node, name: str, flow: Flow | None) -> Flow | None:
        if flow is None:
            return None
        before, after = node_shape(node.args[0]), node_shape(node)
        if name == "transpose":
            d0, d1 = (d % len(before) for d in node.args[1:3])
            return Flow(flow.segs, {d0: d1, d1: d0}.get(flow.dim, flow.dim))
        if name == "permute":
            dims = node.args[1] if isinstance(node.args[1], (tuple, list)) else node.args[1:]
            return Flow(flow.segs, [d % len(before) for d in dims].index(flow.dim))
        tail = len(before) - flow.dim
        head = flow.dim + 1  # or axes after the channels merged or split (``(n, c, h, w) -> (n, c, h*w)``)
        if len(after) >= tail and tuple(after[-tail:]) == tuple(before[-tail:]):
            moved = Flow(flow.segs, len(after) - tail)
        elif len(after) >= head and tuple(after[:head]) == tuple(before[:head]) and len(before) > head:
            moved = Flow(flow.segs, flow.dim)
        else:
            self._block(flow, f"a {name} changes its channel axis (e.g. splits it into heads)")
            return None
        if name in ("view", "reshape") and self._written_size(node, moved.dim):
            self._block(flow, f"a {name} writes its channel count in the model's code")
            return None
        return moved

    def _written_size(self, node: fx.Node, dim: int) -> bool:
        """Whether entry ``dim`` of a view's target shape is a number in the model's code."""
        if not self.literal_shapes:
            return False
        sizes = node.args[1:]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        entry = sizes[dim] if dim < len(sizes) else None
        return isinstance(entry, int) and entry != -1
        return None

    def _cat(self, node: fx.Node) -> Flow | None:
        tensors = list(node.args[0])
        shape = node_shape(node)
        dim = _arg(node, 1, "dim", 0) % len(shape)
        flows = [self._flow(t) for t in tensors]
        if all(f is None for f in flows):
            return None
        if any(f is not None and f.dim != dim for f in flows):
            return self._stack(node, tensors, flows, dim)
        segs: list[Seg] = []
        for tensor, flow in zip(tensors, flows, strict=True):
            if flow is None:  # a fixed slice: its own blocked space
                length = node_shape(tensor)[dim]
                space = self._new(length, f"{node.name}[fixed]", "fixed")
                self.blocked[space] = "concatenated with a tensor that cannot be pruned"
                self.members[space] = []
                segs.append(Seg(space, length))
            else:
                segs += flow.segs
        return Flow(tuple(segs), dim)

    def _stack(self, node: fx.Node, tensors: list[Any], flows: list[Flow | None], dim: int) -> Flow | None:
        """Concatenation along another axis (a class token before the patches): every input holds
        the same channels; an input without channels must be a parameter, coupled as a member."""
        known = [(t, f) for t, f in zip(tensors, flows, strict=True) if f is not None]
        ref_tensor, ref = known[0]
        pos = ref.dim - _ndim(ref_tensor)
        layout = [(s.length, s.repeat) for s in ref.segs]
        for tensor, flow in known[1:]:
            if flow.dim - _ndim(tensor) != pos or [(s.length, s.repeat) for s in flow.segs] != layout:
                self._block(flows, "it is concatenated with channels laid out differently")
                return None
            for a, b in zip(ref.segs, flow.segs, strict=True):
                self._union(a.space, b.space)
        for tensor, flow in zip(tensors, flows, strict=True):
            source = _parameter_behind(tensor) if flow is None else None
            if flow is None and (source is None or not self._tensor_member(ref, source, pos)):
                self._block(flows, "it is concatenated with a tensor that cannot be pruned along with it")
                return None
        return Flow(ref.segs, len(node_shape(node)) + pos)

    def _split(self, node: fx.Node, name: str, flow: Flow | None) -> Items | None:
        if flow is None:
            return None
        shape = node_shape(node.args[0])
        dim = _arg(node, 2, "dim", 0) % len(shape)
        arg = node.args[1]
        if name == "chunk":
            step = -(-shape[dim] // arg)
            sizes = [min(step, shape[dim] - i) for i in range(0, shape[dim], step)]
        else:
            sizes = [arg] * -(-shape[dim] // arg) if isinstance(arg, int) else list(arg)
        if dim == flow.dim:  # the split sizes are written in the model's code
            self._block(flow, f"a {name} along the channel axis has fixed sizes")
            return None
        return Items(tuple(flow for _ in sizes))

    # --- result -------------------------------------------------------------------------
    def _merge_shared(self) -> None:
        """A layer or parameter used more than once holds the same channels every time: the spaces
        reaching the same slice of it merge (or are blocked when their channels differ)."""
        first: dict[tuple[str, str, int], tuple[int, Member]] = {}
        for root in sorted({self._find(s) for s in range(len(self.parent))}):
            for member in list(self.members[root]):
                key = (member.module, member.axis, member.offset)
                seen, other = first.setdefault(key, (root, member))
                a, b = self._find(root), self._find(seen)
                if a == b:
                    continue
                if other.repeat == member.repeat and self.size[a] == self.size[b]:
                    self._union(a, b)
                else:
                    for space in (a, b):
                        self.blocked.setdefault(space, f"{member.module} is used again with other channels")

    def groups(self) -> list[Group]:
        """One `Group` per channel space, blocked ones included (with their reason)."""
        self._merge_shared()
        roots = sorted({self._find(s) for s in range(len(self.parent))})
        result = []
        for root in roots:
            members = list(dict.fromkeys(self.members[root]))
            if not any(m.axis == "out" for m in members):
                continue
            group = Group(self.size[root], members, self.label[root], self.blocked.get(root))
            group.blocks = self.blocks.get(root, 1)
            result.append(group)
        return result
