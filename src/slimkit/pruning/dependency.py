"""The dependency graph: which channels of which layers must be pruned together.

Channel flow is propagated through the model's fx graph (`slimkit.core.graph.capture`).
Every conv/linear/embedding output starts a *space* of channels; ops that pass channels
through (activations, BatchNorm, pooling, depthwise convs, reshapes that keep the channel
axis) carry it along, residual adds merge spaces, concatenation lays spaces side by side
(split/chunk along another axis pass them on), and a Linear after flatten sees each channel as
``H*W`` features. A space reaching anything it cannot follow (the model output, a
grouped conv, a view that splits the channel axis into heads, an unknown op) is blocked,
with the reason. Each space becomes one `Group`. This module holds the spaces and the layers
(``call_module`` nodes); tensor functions are read by `slimkit.pruning.tensor_ops`, and what
both track is in `slimkit.pruning.flows`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from torch import fx, nn

from slimkit.core.graph import node_shape
from slimkit.pruning.flows import (
    NORMS,
    PASS_MODULES,
    Flow,
    Items,
    Seg,
    ShapeOf,
    ndim_of,
    op_name,
)
from slimkit.pruning.groups import Group, Member
from slimkit.pruning.layers import LayerPruner, custom_pruner, depthwise
from slimkit.pruning.routing import Router
from slimkit.pruning.tensor_ops import TensorOps


class DependencyGraph(TensorOps):
    """Channel coupling of a captured model; `groups()` lists one `Group` per space."""

    def __init__(self, gm: fx.GraphModule):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: dict[int, list[Member]] = {}
        self.blocked: dict[int, str] = {}
        self.blocks: dict[int, int] = {}
        """Equal blocks a space's channels must keep the same count in (grouped layers)."""
        self.label: dict[int, str] = {}
        self.routed: set[int] = set()
        """Spaces blocked because the model moves their channels by the tensor's size (a split along
        the channel axis, a channel shuffle): `slimkit.pruning.routing` may still prune them."""
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

    def _block(self, value: Any, reason: str, routed: bool = False) -> None:
        reason += self._location()
        for flow in self._flows(value):
            for seg in flow.segs:
                self.blocked.setdefault(self._find(seg.space), reason)
                if routed:
                    self.routed.add(seg.space)

    def _location(self) -> str:
        """`` (size, in stage2.0: InvertedResidual)``: the op and the module whose code does what
        blocks, for a function or method call inside a submodule ('' otherwise)."""
        node = self.node
        if node is None or node.op not in ("call_function", "call_method"):
            return ""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return f" ({op_name(node)})"
        path, kind = list(stack.values())[-1]
        kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        return f" ({op_name(node)}, in {path}: {kind.rpartition('.')[2]})"

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
        return self._function(node, op_name(node))

    def _module(self, node: fx.Node, name: str, mod: nn.Module) -> Flow | None:
        self._block_shapes(node)
        flow = self._flow(node.args[0]) if node.args else None
        shape = node_shape(node)
        custom = custom_pruner(mod)
        if custom is not None and shape is not None and node.args:
            return self._custom(name, mod, custom, flow, ndim_of(node.args[0]), len(shape))
        if isinstance(mod, nn.modules.conv._ConvNd) and not mod.transposed:
            return self._conv(name, mod, flow)
        if isinstance(mod, nn.Linear) and shape is not None:
            if flow is not None:
                if flow.dim == ndim_of(node.args[0]) - 1:
                    self._attach(flow, name, "in")
                else:
                    self._block(flow, f"{name} is applied along another axis")
            return self._produce(name, mod.out_features, len(shape) - 1)
        if isinstance(mod, nn.Embedding) and shape is not None:
            return self._produce(name, mod.embedding_dim, len(shape) - 1)
        if flow is not None and self._norm_follows(mod, flow, node):
            self._attach(flow, name, "out")
            return flow
        if isinstance(mod, PASS_MODULES) or (flow is None and isinstance(mod, NORMS)):
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
        if depthwise(mod):
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
            return plain and len(mod.normalized_shape) == 1 and flow.dim == ndim_of(node.args[0]) - 1
        return False

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
            group.space = root
            result.append(group)
        return result

    def router(self, gm: fx.GraphModule, groups: list[Group]) -> Router | None:
        """A `Router` for the groups blocked only by channel routing (marked with it), if any."""
        routed = {self._find(s) for s in self.routed}
        candidates = [g for g in groups if g.space in routed and g.blocks == 1]
        if not candidates or not self.literal_shapes:  # torch.export fixes every view's sizes
            return None
        roots = {self._find(s) for s in range(len(self.parent))}
        router = Router(gm, self.env, self._find, {r: self.size[r] for r in roots})
        for group in candidates:
            group.router = router
        return router
