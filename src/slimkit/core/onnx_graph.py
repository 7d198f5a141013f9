"""Reading and editing an ``onnx.ModelProto`` graph: the lookups every graph rewrite needs."""

from __future__ import annotations

from typing import Any

import numpy as np


class GraphIndex:
    """``graph``'s initializers by name, the node producing each value, the nodes reading it.

    Built once; a rewrite that changes the graph builds a new one."""

    def __init__(self, graph: Any):
        self.inits = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def only_reader(self, value: str, op_type: str) -> Any:
        """The single node reading ``value`` when it is an ``op_type`` and the graph does not
        output ``value``, else None."""
        readers = self.consumers.get(value, [])
        alone = len(readers) == 1 and value not in self.outputs
        return readers[0] if alone and readers[0].op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer or a ``Constant`` node's, else None."""
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def is_scalar(self, name: str, value: float) -> bool:
        """Whether ``name`` is a one-element constant equal to ``value`` (to float32 rounding)."""
        array = self.constant(name)
        return array is not None and array.size == 1 and abs(float(array.reshape(())) - value) <= 1e-6 * abs(value)


def replace_nodes(graph: Any, replaced: dict[int, list[Any]], dropped: set[int]) -> None:
    """Put ``replaced[id(node)]`` before each such node and drop the nodes in ``dropped`` (ids),
    keeping the order (in place), then the initializers no node reads any more."""
    kept = [new for node in graph.node for new in replaced.get(id(node), []) + ([] if id(node) in dropped else [node])]
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused_initializers(graph)


def _drop_unused_initializers(graph: Any) -> None:
    """Remove the initializers no node reads and the graph does not output (in place)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
