"""Graph capture shared by slimkit: a torch.fx graph of a model, with tensor shapes.

`capture` traces ``model`` with `torch.fx.symbolic_trace` (``torch.nn`` layers stay leaf
``call_module`` nodes, so passes can reason about layers, not ATen ops) and runs it once on
the example inputs to annotate every node with its output shape
(``node.meta["tensor_meta"]``). Models fx cannot trace (data-dependent control flow,
Python-level iteration over tensors, ...) raise `UnsupportedModelError` naming the
construct, with a hint from the caller on how to proceed without a graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from slimkit.core.errors import UnsupportedModelError, first_line


def capture(model: nn.Module, example_inputs: tuple[Any, ...] | Mapping[str, Any], *, hint: str = "") -> fx.GraphModule:
    """Trace ``model`` into an fx graph annotated with the shapes seen on ``example_inputs``.

    Args:
        model: the model (not modified; the graph shares its submodules and parameters).
        example_inputs: positional inputs (a tuple) or keyword inputs (a dict).
        hint: appended to the error message, telling the user what to do instead.

    Returns:
        A `torch.fx.GraphModule` whose nodes carry ``meta["tensor_meta"]`` where they are tensors;
        ``gm.meta["root"]`` is ``model`` (the graph module only holds the layers it calls, and
        bare containers for the parameters it reads).

    Raises:
        UnsupportedModelError: when the model cannot be traced or does not run on the inputs.
    """
    kwargs = dict(example_inputs) if isinstance(example_inputs, Mapping) else {}
    args = tuple(example_inputs) if not isinstance(example_inputs, Mapping) else ()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ... for untraceable code
        suffix = f"; {hint}" if hint else ""
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__} with torch.fx: {type(exc).__name__}: {first_line(exc)}{suffix}"
        ) from exc
    gm.meta["root"] = model
    names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    ordered = args + tuple(kwargs[name] for name in names[len(args) :] if name in kwargs)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*ordered)
    except Exception as exc:  # a failing forward inside the interpreter
        raise UnsupportedModelError(
            f"{type(model).__name__} does not run on the example inputs while capturing its graph: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc
    return gm


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The output shape recorded for ``node`` by `capture` (``None`` when not a tensor)."""
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None
