"""Rewrites of every exported ONNX graph into the forms onnxruntime fuses (``onnx.ModelProto``, in place).

`fusable_gelu` reorders the exporter's exact GELU, ``x * (0.5 * (1 + erf(x / sqrt 2)))``, into
``(x * 0.5) * (1 + erf(x / sqrt 2))``: the same products, in the order onnxruntime's
``GeluFusion`` matches, so its five elementwise nodes run as one ``Gelu`` kernel (MiniLM's
feed-forward, 51 tokens x 1536, onnxruntime 1.32 CPU: 113 µs -> 74 µs). Other runtimes compute
the same numbers either way.
"""

from __future__ import annotations

from typing import Any

from slimkit.core.onnx_graph import GraphIndex

SQRT2 = 2**0.5


def _gelu_nodes(index: GraphIndex, div: Any) -> tuple[Any, Any, str, str] | None:
    """For ``Div(x, sqrt 2)`` starting the exporter's GELU: ``(half_mul, outer_mul, the 0.5,
    1 + erf(.))``, each intermediate value read once; None for any other shape."""
    if div.op_type != "Div" or len(div.input) != 2 or not index.is_scalar(div.input[1], SQRT2):
        return None
    x = div.input[0]
    erf = index.only_reader(div.output[0], "Erf")
    add = erf and index.only_reader(erf.output[0], "Add")
    if add is None or not any(index.is_scalar(i, 1.0) for i in add.input if i != erf.output[0]):
        return None
    half_mul = index.only_reader(add.output[0], "Mul")
    half = half_mul and next((i for i in half_mul.input if i != add.output[0]), None)
    if half is None or not index.is_scalar(half, 0.5):
        return None
    outer = index.only_reader(half_mul.output[0], "Mul")
    if outer is None or x not in outer.input:
        return None
    return half_mul, outer, half, add.output[0]


def fusable_gelu(model: Any) -> int:
    """Reorder each exact GELU of ``model`` into the product onnxruntime fuses (in place).

    Returns:
        How many were reordered.
    """
    index = GraphIndex(model.graph)
    count = 0
    for div in list(model.graph.node):
        found = _gelu_nodes(index, div)
        if found is None:
            continue
        half_mul, outer, half, one_plus_erf = found
        half_mul.input[:] = [div.input[0], half]  # x * 0.5: still after its inputs in node order
        outer.input[:] = [half_mul.output[0], one_plus_erf]
        count += 1
    return count
