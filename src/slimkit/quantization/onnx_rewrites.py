"""Rewrites of an exported ONNX graph of an int8-dynamic model (``onnx.ModelProto``, in place).

`merge_shared_int8_matmuls` merges the int8 matmuls reading one quantized input into one;
`fold_scales_into_layernorms` folds a per-channel scale multiplication into the LayerNorm
before it. Both leave a graph of any other shape as it is; `rewrite_int8_dynamic` runs them
after every ONNX export (registered with the format's `Lowering`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.core.onnx_graph import GraphIndex, replace_nodes

FLOAT = 1
"""``TensorProto.FLOAT``."""


def _int8_chain(node: Any, index: GraphIndex) -> Any:
    """``MatMulInteger(a, B[, a_zero]) -> Cast -> Mul(., Mul(a_scale, w_scale)) [-> Add(., bias)]``
    as `int8_dynamic_nodes` writes it, B, w_scale and bias initializers and each value read once:
    ``(nodes, a_scale, B, w_scale, bias or None)``; None for any other shape."""
    inits = index.inits
    if len(node.input) > 3 or node.input[1] not in inits or (len(node.input) == 3 and not node.input[2]):
        return None
    cast = index.only_reader(node.output[0], "Cast")
    mul = cast and index.only_reader(cast.output[0], "Mul")
    if mul is None:
        return None
    factor = index.producer.get(next((i for i in mul.input if i != cast.output[0]), ""))
    scales = [i for i in factor.input if i in inits] if factor is not None and factor.op_type == "Mul" else []
    if len(scales) != 1 or len(index.consumers[factor.output[0]]) != 1 or len(inits[node.input[1]].dims) != 2:
        return None
    a_scale = next(i for i in factor.input if i != scales[0])
    add = index.only_reader(mul.output[0], "Add")
    bias = next((i for i in add.input if i != mul.output[0] and i in inits), None) if add is not None else None
    nodes = [node, cast, factor, mul] + ([add] if bias is not None else [])
    return nodes, a_scale, node.input[1], scales[0], bias


def merge_shared_int8_matmuls(model: Any) -> None:
    """Merge the int8-dynamic matmuls that read one quantized input (e.g. an attention's query,
    key and value projections) into one ``MatMulInteger`` over their concatenated weights, scales
    and biases, then ``Split`` its output back (in place). The same integer products, computed
    in one kernel call: onnxruntime fuses the chain into one ``MatMulIntegerToFloat`` instead of
    one per layer. A chain that differs from `int8_dynamic_nodes`' pattern is left as it is."""
    from onnx import helper, numpy_helper

    graph = model.graph
    index = GraphIndex(graph)
    inits = index.inits
    groups: dict[tuple[str, ...], list[Any]] = {}
    for node in graph.node:
        if node.op_type == "MatMulInteger" and node.domain in ("", "ai.onnx"):
            chain = _int8_chain(node, index)
            if chain is not None:
                key = (node.input[0], node.input[2] if len(node.input) > 2 else "", chain[1], str(chain[4] is None))
                groups.setdefault(key, []).append(chain)
    replaced: dict[int, list[Any]] = {}
    dropped: set[int] = set()
    for (a, a_zero, a_scale, _), chains in groups.items():
        if len(chains) < 2:
            continue
        weights = [numpy_helper.to_array(inits[c[2]]) for c in chains]
        prefix = chains[0][0][0].output[0] + "_merged"
        arrays = {
            "weight": np.concatenate(weights, axis=1),
            "scale": np.concatenate([numpy_helper.to_array(inits[c[3]]) for c in chains]),
            "split": np.array([w.shape[1] for w in weights], dtype=np.int64),
        }
        if chains[0][4] is not None:
            arrays["bias"] = np.concatenate([numpy_helper.to_array(inits[c[4]]) for c in chains])
        graph.initializer.extend(numpy_helper.from_array(v, f"{prefix}_{k}") for k, v in arrays.items())
        outputs = [c[0][-1].output[0] for c in chains]
        y = f"{prefix}_y"
        nodes = [
            helper.make_node("MatMulInteger", [a, f"{prefix}_weight"] + ([a_zero] if a_zero else []), [f"{prefix}_i"]),
            helper.make_node("Cast", [f"{prefix}_i"], [f"{prefix}_f"], to=FLOAT),
            helper.make_node("Mul", [a_scale, f"{prefix}_scale"], [f"{prefix}_s"]),
            helper.make_node("Mul", [f"{prefix}_f", f"{prefix}_s"], [y]),
        ]
        if "bias" in arrays:
            nodes.append(helper.make_node("Add", [y, f"{prefix}_bias"], [f"{prefix}_yb"]))
        nodes.append(helper.make_node("Split", [nodes[-1].output[0], f"{prefix}_split"], outputs, axis=-1))
        replaced[id(chains[0][0][0])] = nodes
        dropped.update(id(n) for c in chains for n in c[0])
    if replaced:
        replace_nodes(graph, replaced, dropped)


def _scaled_layernorm(index: GraphIndex, node: Any) -> tuple[Any, np.ndarray, np.ndarray] | None:
    """For ``Mul(y, c)``, ``y`` a last-axis ``LayerNormalization`` with constant scale and bias
    and ``c`` a float32 vector over that axis: ``(layernorm, its scale * c, its bias * c)``;
    None otherwise."""
    if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return None
    for slot in (0, 1):
        scale = index.constant(node.input[slot])
        norm = index.producer.get(node.input[1 - slot])
        if scale is None or scale.ndim != 1 or scale.dtype != np.float32 or norm is None:
            continue
        axis = next((a.i for a in norm.attribute if a.name == "axis"), -1)
        if norm.op_type != "LayerNormalization" or len(norm.input) != 3 or len(norm.output) != 1 or axis != -1:
            continue
        gamma, beta = index.constant(norm.input[1]), index.constant(norm.input[2])
        if gamma is not None and beta is not None and gamma.shape == beta.shape == scale.shape:
            return norm, (gamma * scale).astype(np.float32), (beta * scale).astype(np.float32)
    return None


def fold_scales_into_layernorms(model: Any) -> None:
    """Fold ``Mul(LayerNorm(x), c)`` (``c`` a constant vector over the last axis, e.g. a
    smoothquant layer's ``inv_scale``) into a LayerNorm of ``x`` whose scale and bias are
    multiplied by ``c`` (in place): the same numbers up to float rounding. When something else
    reads the LayerNorm too (a residual), it stays and ``x`` is normalized twice instead of
    multiplied once; more than two normalizations are never written. On onnxruntime's CPU
    provider two are the cheaper graph: a LayerNorm whose input ``Add`` has one reader is fused
    into ``SkipLayerNormalization``, whose CPU kernel is a scalar loop (51 x 384, onnxruntime
    1.32: 131 µs, against 24 µs for ``Add`` + ``LayerNormalization``), and the second
    normalization keeps that ``Add`` unfused."""
    from onnx import helper, numpy_helper

    graph = model.graph
    index = GraphIndex(graph)
    scaled: dict[int, list[tuple[Any, Any, np.ndarray, np.ndarray]]] = {}
    for node in graph.node:
        found = _scaled_layernorm(index, node)
        if found is not None:
            scaled.setdefault(id(found[0]), []).append((node, *found))
    replaced: dict[int, list[Any]] = {}
    dropped: set[int] = set()
    for muls in scaled.values():
        norm = muls[0][1]
        others = len(index.consumers[norm.output[0]]) - len(muls) + (norm.output[0] in index.outputs)
        if len(muls) + min(others, 1) > 2:
            continue
        for node, _, gamma, beta in muls:
            prefix = f"{node.output[0]}_scaled"
            graph.initializer.extend(
                numpy_helper.from_array(value, f"{prefix}_{name}") for name, value in (("scale", gamma), ("bias", beta))
            )
            copy = helper.make_node(
                "LayerNormalization", [norm.input[0], f"{prefix}_scale", f"{prefix}_bias"], [node.output[0]]
            )
            copy.attribute.extend(norm.attribute)
            replaced[id(node)] = [copy]
            dropped.add(id(node))
        if not others:
            dropped.add(id(norm))
    if replaced:
        replace_nodes(graph, replaced, dropped)


def rewrite_int8_dynamic(model: Any) -> None:
    """The ONNX graph rewrites of int8-dynamic exports: `fold_scales_into_layernorms`, then
    `merge_shared_int8_matmuls`."""
    fold_scales_into_layernorms(model)
    merge_shared_int8_matmuls(model)
