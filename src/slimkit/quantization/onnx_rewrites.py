"""Rewrites of an exported ONNX graph of an int8-dynamic model (``onnx.ModelProto``, in place).

`merge_shared_int8_matmuls` merges the int8 matmuls reading one quantized input into one;
`fold_channel_scales` folds a per-channel scale multiplication into a scalar constant of the
product before it. Both leave a graph of any other shape as it is; `rewrite_int8_dynamic` runs
them after every ONNX export (registered with the format's `Lowering`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT = 1
"""``TensorProto.FLOAT``."""


def _graph_index(graph: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[Any]]]:
    """``graph``'s initializers by name, producing node by output, consuming nodes by input."""
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return inits, producer, consumers


def _only_consumer(consumers: dict[str, list[Any]], value: str, op_type: str) -> Any:
    """The single node reading ``value`` when it is an ``op_type``, else None."""
    readers = consumers.get(value, [])
    return readers[0] if len(readers) == 1 and readers[0].op_type == op_type else None


def _int8_chain(node: Any, inits: dict[str, Any], producer: dict[str, Any], consumers: dict[str, list[Any]]) -> Any:
    """``MatMulInteger(a, B[, a_zero]) -> Cast -> Mul(., Mul(a_scale, w_scale)) [-> Add(., bias)]``
    as `int8_dynamic_nodes` writes it, B, w_scale and bias initializers and each value read once:
    ``(nodes, a_scale, B, w_scale, bias or None)``; None for any other shape."""
    if len(node.input) > 3 or node.input[1] not in inits or (len(node.input) == 3 and not node.input[2]):
        return None
    cast = _only_consumer(consumers, node.output[0], "Cast")
    mul = cast and _only_consumer(consumers, cast.output[0], "Mul")
    if mul is None:
        return None
    factor = producer.get(next((i for i in mul.input if i != cast.output[0]), ""))
    scales = [i for i in factor.input if i in inits] if factor is not None and factor.op_type == "Mul" else []
    if len(scales) != 1 or len(consumers[factor.output[0]]) != 1 or len(inits[node.input[1]].dims) != 2:
        return None
    a_scale = next(i for i in factor.input if i != scales[0])
    add = _only_consumer(consumers, mul.output[0], "Add")
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
    inits, producer, consumers = _graph_index(graph)
    groups: dict[tuple[str, ...], list[Any]] = {}
    for node in graph.node:
        if node.op_type == "MatMulInteger" and node.domain in ("", "ai.onnx"):
            chain = _int8_chain(node, inits, producer, consumers)
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
    if not replaced:
        return
    kept = [new for node in graph.node for new in replaced.get(id(node), []) + ([] if id(node) in dropped else [node])]
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused_initializers(graph)


def _drop_unused_initializers(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _constant(name: str, inits: dict[str, Any], producer: dict[str, Any]) -> np.ndarray | None:
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = producer.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def _last_dim(model: Any, name: str) -> int | None:
    """The static last dimension of value ``name`` (from the exporter's shapes), None if unknown."""
    graph = model.graph
    for info in (*graph.value_info, *graph.input, *graph.output):
        if info.name == name:
            dims = info.type.tensor_type.shape.dim
            return dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    return None


def _scalar_slot(node: Any, inits: dict[str, Any], producer: dict[str, Any]) -> int | None:
    """The input index of ``node``'s one-element constant, None when it has none."""
    for slot, name in enumerate(node.input):
        value = _constant(name, inits, producer)
        if value is not None and value.size == 1:
            return slot
    return None


def fold_channel_scales(model: Any) -> None:
    """Fold ``Mul(p, c)`` (``c`` a constant float vector over the last axis, e.g. an
    smoothquant layer's ``inv_scale``) into a scalar constant factor of the product
    ``p`` when ``p = Mul(u, Mul(k, v))`` (each read once; e.g. GELU's ``x * (0.5 * (1 + erf(.)))``):
    ``k`` becomes the vector ``k * c``, one multiplication fewer, the same numbers up to float
    rounding. Anything else is left as it is."""
    from onnx import numpy_helper

    graph = model.graph
    inits, producer, consumers = _graph_index(graph)
    outputs = {o.name for o in graph.output}
    dropped: set[int] = set()
    for node in list(graph.node):
        if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or node.output[0] in outputs:
            continue
        vectors = [(i, c) for i in node.input if (c := _constant(i, inits, producer)) is not None and c.ndim == 1]
        if len(vectors) != 1 or vectors[0][1].dtype != np.float32:
            continue
        name, scale = vectors[0]
        product = producer.get(next(i for i in node.input if i != name))
        if product is None or product.op_type != "Mul" or len(consumers[product.output[0]]) != 1:
            continue
        for inner in (producer.get(i) for i in product.input):
            if inner is None or inner.op_type != "Mul" or len(consumers[inner.output[0]]) != 1:
                continue
            slot = _scalar_slot(inner, inits, producer)
            if slot is None or _last_dim(model, inner.input[1 - slot]) != scale.shape[0]:
                continue
            k = _constant(inner.input[slot], inits, producer)
            folded = f"{name}_folded_{len(graph.initializer)}"
            graph.initializer.append(numpy_helper.from_array((k.reshape(()) * scale).astype(np.float32), folded))
            inner.input[slot] = folded
            for reader in consumers.get(node.output[0], []):
                reader.input[:] = [product.output[0] if i == node.output[0] else i for i in reader.input]
            dropped.add(id(node))
            break
    if dropped:
        kept = [n for n in graph.node if id(n) not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
        _drop_unused_initializers(graph)


def rewrite_int8_dynamic(model: Any) -> None:
    """The ONNX graph rewrites of int8-dynamic exports: `fold_channel_scales`, then
    `merge_shared_int8_matmuls`."""
    fold_channel_scales(model)
    merge_shared_int8_matmuls(model)
