"""How channels flow through the tensor functions and methods of a captured model (``x.view``,
``torch.cat``, ``x.chunk``, indexing, reductions, elementwise ops): the half of
`DependencyGraph` that reads ``call_function`` / ``call_method`` nodes. The layers' half
(``call_module`` nodes) and the channel spaces live in `slimkit.pruning.dependency`.
"""

from __future__ import annotations

import math
from typing import Any

from torch import fx

from slimkit.core.graph import node_shape
from slimkit.pruning.flows import (
    BINARY,
    CHECKS,
    FUNCTIONAL_NORMS,
    MOVES,
    NORMS,
    REDUCE,
    UNARY,
    Flow,
    Items,
    Seg,
    ShapeOf,
    arg_of,
    ndim_of,
    parameter_behind,
)
from slimkit.pruning.groups import TENSOR_AXIS


class TensorOps:
    """Channel flow through tensor functions; mixed into `DependencyGraph`, whose spaces
    (``_new``, ``_union``, ``_attach``, ``_block``, ``_flow``) it uses."""

    def _function(self, node: fx.Node, name: str) -> Flow | Items | ShapeOf | None:
        first = node.args[0] if node.args else None
        flow = self._flow(first)
        if name in ("getattr", "size", "dim") and flow is not None:
            return self._shape(node, name, flow)
        if name == "getitem":
            return self._getitem(node, first, flow)
        if name in CHECKS:
            return None
        self._block_shapes(node)
        if name in FUNCTIONAL_NORMS and flow is not None:
            return self._functional_norm(node, name, flow)
        if name in ("softmax", "log_softmax") and flow is not None:
            if arg_of(node, 1, "dim") % ndim_of(first) != flow.dim:
                return flow
        elif name in UNARY:
            return flow
        if name in BINARY:
            return self._binary(node)
        if name in REDUCE and flow is not None:
            return self._reduce(node, flow)
        if name == "flatten":
            return self._flatten(node, flow, arg_of(node, 1, "start_dim", 0), arg_of(node, 2, "end_dim", -1))
        if name in MOVES:
            return self._move(node, name, flow)
        if name in ("select", "slice") and flow is not None:
            return self._index(node, name, flow, {arg_of(node, 1, "dim", 0) % ndim_of(first): name == "select"})
        if name in ("cat", "concat"):
            return self._cat(node)
        if name in ("split", "chunk"):
            return self._split(node, name, flow)
        self._block_all(node, f"it goes through {name}, which channel pruning cannot follow")
        return None

    def _shape(self, node: fx.Node, name: str, flow: Flow) -> ShapeOf | None:
        """``x.shape`` / ``x.size()`` (a `ShapeOf`), ``x.size(i)``, ``x.dim()``, ``x.ndim``, ``x.dtype``."""
        index = arg_of(node, 1, "dim")
        ndim = ndim_of(node.args[0])
        if name == "dim" or (name == "getattr" and index != "shape"):
            return None
        if name == "size" and isinstance(index, int):
            if index % ndim == flow.dim:
                self._block(flow, "its channel count is read by the model's code (e.g. to reshape)", routed=True)
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
                self._block(value.flow, "its channel count is read by the model's code (e.g. to reshape)", routed=True)
            return None
        if flow is not None and isinstance(index, (tuple, int, slice)) and not isinstance(index, bool):
            return self._index_items(node, first, flow, index if isinstance(index, tuple) else (index,))
        self._block(flow, "it is indexed or sliced")
        return None

    def _index_items(self, node: fx.Node, first: Any, flow: Flow, index: tuple[Any, ...]) -> Flow | None:
        """``x[:, 0]``, ``x[..., 1:]``: ints drop an axis, slices keep it, ``None`` adds one."""
        ndim = ndim_of(first)
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
            self._block(flow, f"it is indexed along the channel axis ({name})", routed=True)
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
        if isinstance(mod, NORMS) and self._norm_follows(mod, flow, node):
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
        pos = fa.dim - ndim_of(a)
        if fb is not None:
            same = fb.dim - ndim_of(b) == pos and [(s.length, s.repeat) for s in fa.segs] == [
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
        ndim = ndim_of(node.args[0])
        dims = arg_of(node, 1, "dim")
        if dims is None:
            self._block(flow, "it is reduced over all axes")
            return None
        dims = {d % ndim for d in ((dims,) if isinstance(dims, int) else dims)}
        if flow.dim in dims:  # a statistic over the channels (RMSNorm's mean square): it holds none
            return None
        keep = arg_of(node, 2, "keepdim", False)
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
            self._block(flow, f"a {name} changes its channel axis (e.g. splits it into heads)", routed=True)
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

    def _cat(self, node: fx.Node) -> Flow | None:
        tensors = list(node.args[0])
        shape = node_shape(node)
        dim = arg_of(node, 1, "dim", 0) % len(shape)
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
        pos = ref.dim - ndim_of(ref_tensor)
        layout = [(s.length, s.repeat) for s in ref.segs]
        for tensor, flow in known[1:]:
            if flow.dim - ndim_of(tensor) != pos or [(s.length, s.repeat) for s in flow.segs] != layout:
                self._block(flows, "it is concatenated with channels laid out differently")
                return None
            for a, b in zip(ref.segs, flow.segs, strict=True):
                self._union(a.space, b.space)
        for tensor, flow in zip(tensors, flows, strict=True):
            source = parameter_behind(tensor) if flow is None else None
            if flow is None and (source is None or not self._tensor_member(ref, source, pos)):
                self._block(flows, "it is concatenated with a tensor that cannot be pruned along with it")
                return None
        return Flow(ref.segs, len(node_shape(node)) + pos)

    def _split(self, node: fx.Node, name: str, flow: Flow | None) -> Items | None:
        if flow is None:
            return None
        shape = node_shape(node.args[0])
        dim = arg_of(node, 2, "dim", 0) % len(shape)
        arg = node.args[1]
        if name == "chunk":
            step = -(-shape[dim] // arg)
            sizes = [min(step, shape[dim] - i) for i in range(0, shape[dim], step)]
        else:
            sizes = [arg] * -(-shape[dim] // arg) if isinstance(arg, int) else list(arg)
        if dim == flow.dim:  # the split sizes are written in the model's code
            self._block(flow, f"a {name} cuts the channel axis by position", routed=True)
            return None
        return Items(tuple(flow for _ in sizes))
