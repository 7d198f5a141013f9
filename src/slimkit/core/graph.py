"""Graph capture shared by slimkit: a torch.fx graph of a model, with tensor shapes.

`capture` traces ``model`` with torch.fx (``torch.nn`` layers stay leaf ``call_module``
nodes, so passes can reason about layers, not ATen ops) and runs it once on the example
inputs to annotate every node with its output shape (``node.meta["tensor_meta"]``).

Models fx cannot trace (data-dependent control flow, Python-level iteration over tensors,
...) are exported instead (``torch.export``, non-strict: the Python code runs as written on
the example inputs) and the ATen graph is folded back to the same form: the ops of each
call of a ``torch.nn`` layer become one ``call_module`` node, the other ops stay ATen calls.
When both fail, `UnsupportedModelError` names each tracer's error, the module that was
running and a hint from the caller on how to proceed without a graph.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, _extract_tensor_metadata

from slimkit.core.errors import UnsupportedModelError, first_line

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class _Tracer(fx.Tracer):
    """The default fx tracer, remembering which module it was in when tracing failed; modules of
    ``leaf_types`` stay whole like ``torch.nn``'s own layers."""

    def __init__(self, leaf_types: tuple[type[nn.Module], ...] = ()) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.failed_in: str | None = None
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """``torch.nn`` layers, subclasses of them that keep their ``forward`` (not containers),
        and ``leaf_types``."""
        inherited = type(m).forward.__module__.startswith("torch.nn.") and not isinstance(m, _CONTAINERS)
        return inherited or isinstance(m, self.leaf_types) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.stack.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            self.failed_in = self.failed_in or self.stack[-1]
            raise
        finally:
            self.stack.pop()


def _where(name: str | None, model: nn.Module) -> str:
    if not name:
        return f"in {type(model).__name__}.forward"
    return f"in module {name} ({type(model.get_submodule(name)).__name__})"


def _fx_trace(model: nn.Module, leaf_types: tuple[type[nn.Module], ...]) -> fx.GraphModule:
    """``torch.fx.symbolic_trace``, with the failing module named in the error.

    Raises:
        RuntimeError: (chained to fx's error) naming the module being traced when it failed.
    """
    tracer = _Tracer(leaf_types)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ... for untraceable code
        raise RuntimeError(f"{type(exc).__name__}: {first_line(exc)} ({_where(tracer.failed_in, model)})") from exc
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


@contextlib.contextmanager
def _running_modules(model: nn.Module) -> Iterator[list[str]]:
    """Yields the stack of module names running right now (forward hooks on every module)."""
    stack: list[str] = []

    def enter(name: str) -> None:
        stack.append(name)

    def leave() -> None:
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda *_, n=name: enter(n)))
        handles.append(module.register_forward_hook(lambda *_: leave()))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def _leaves(model: nn.Module, leaf_types: tuple[type[nn.Module], ...]) -> set[str]:
    """Names of the modules fx keeps whole: ``torch.nn``'s own layers and ``leaf_types``."""
    tracer = _Tracer(leaf_types)
    return {name for name, module in model.named_modules() if name and tracer.is_leaf_module(module, name)}


def _leaf_of(node: fx.Node, leaves: set[str]) -> str | None:
    """The outermost ``torch.nn`` layer whose call produced ``node`` (``None`` for the model's own code)."""
    for path, _ in (node.meta.get("nn_module_stack") or {}).values():
        name = str(path).partition("@")[0]
        if name in leaves:
            return name
    return None


def _meta(node: fx.Node, source: fx.Node) -> fx.Node:
    val = source.meta.get("val")
    if isinstance(val, torch.Tensor):
        node.meta["tensor_meta"] = _extract_tensor_metadata(val)
    return node


class _Folder:
    """Rebuilds an exported ATen graph with each ``torch.nn`` layer call as one ``call_module`` node."""

    def __init__(self, model: nn.Module, exported: fx.GraphModule, leaf_types: tuple[type[nn.Module], ...]):
        self.graph = fx.Graph()
        self.env: dict[fx.Node, fx.Node] = {}
        self.unit: list[fx.Node] = []
        self.unit_name: str | None = None
        leaves = _leaves(model, leaf_types)
        for node in exported.graph.nodes:
            leaf = _leaf_of(node, leaves) if node.op == "call_function" else None
            if leaf != self.unit_name or leaf is None:
                self._close()
            if leaf is not None:
                self.unit_name = leaf
                self.unit.append(node)
            elif node.op != "call_module":  # export's input guards
                self._copy(node)
        self._close()

    def _map(self, value: Any) -> Any:
        return fx.map_arg(value, lambda n: self.env[n])

    def _copy(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            new = self.graph.placeholder(node.target)
        elif node.op == "get_attr":
            new = self.graph.get_attr(node.target)
        elif node.op == "output":
            new = self.graph.output(self._map(node.args[0]))
        else:
            new = self.graph.call_function(node.target, self._map(node.args), self._map(node.kwargs))
        self.env[node] = _meta(new, node)

    def _close(self) -> None:
        """Emit the open layer call: its inputs are the tensors it reads from outside (in order)."""
        if not self.unit:
            return
        inside = set(self.unit)
        inputs: list[fx.Node] = []
        for node in self.unit:
            for arg in node.all_input_nodes:
                if arg not in inside and arg.op != "get_attr" and arg not in inputs:
                    inputs.append(arg)
        outputs = [n for n in self.unit if any(user not in inside for user in n.users)]
        call = self.graph.call_module(self.unit_name, tuple(self.env[a] for a in inputs))
        if len(outputs) == 1:
            self.env[outputs[0]] = _meta(call, outputs[0])
        for index, out in enumerate(outputs if len(outputs) > 1 else []):
            self.env[out] = _meta(self.graph.call_function(operator.getitem, (call, index)), out)
        self.unit, self.unit_name = [], None


def _export_trace(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], leaf_types: tuple[type[nn.Module], ...]
) -> fx.GraphModule:
    """The model as `torch.export` (non-strict) sees it, folded back to layer calls.

    Raises:
        RuntimeError: (chained to export's error) naming the module that was running.
    """
    with _running_modules(model) as stack:
        try:
            exported = torch.export.export(model, args, kwargs, strict=False).module()
        except Exception as exc:  # export raises many kinds (UserError, GuardOnDataDependentSymNode, ...)
            where = _where(stack[-1] if stack else None, model)
            raise RuntimeError(f"{type(exc).__name__}: {first_line(exc)} ({where})") from exc
    gm = fx.GraphModule(model, _Folder(model, exported, leaf_types).graph, type(model).__name__)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _with_shapes(gm: fx.GraphModule, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Run the fx graph once on the inputs so every node records its shape.

    Raises:
        UnsupportedModelError: when the model does not run on the inputs.
    """
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


def capture(
    model: nn.Module,
    example_inputs: tuple[Any, ...] | Mapping[str, Any],
    *,
    hint: str = "",
    tracer: Literal["auto", "fx", "export"] = "auto",
    leaf_types: tuple[type[nn.Module], ...] = (),
) -> fx.GraphModule:
    """Trace ``model`` into an fx graph annotated with the shapes seen on ``example_inputs``.

    Args:
        model: the model (not modified; the graph shares its submodules and parameters).
        example_inputs: positional inputs (a tuple) or keyword inputs (a dict).
        hint: appended to the error message, telling the user what to do instead.
        tracer: ``"auto"`` tries torch.fx, then torch.export; ``"fx"`` or ``"export"`` only that one.
        leaf_types: module types kept as one ``call_module`` node besides ``torch.nn``'s layers.

    Returns:
        A `torch.fx.GraphModule` whose nodes carry ``meta["tensor_meta"]`` where they are tensors;
        ``gm.meta["root"]`` is ``model`` (the graph module only holds the layers it calls, and
        bare containers for the parameters it reads); ``gm.meta["tracer"]`` is ``"fx"`` or ``"export"``.

    Raises:
        UnsupportedModelError: when no tracer captures the model, or it does not run on the inputs.
    """
    kwargs = dict(example_inputs) if isinstance(example_inputs, Mapping) else {}
    args = tuple(example_inputs) if not isinstance(example_inputs, Mapping) else ()
    errors = []
    for name in ("fx", "export") if tracer == "auto" else (tracer,):
        try:
            if name == "fx":
                gm = _fx_trace(model, leaf_types)
                _with_shapes(gm, model, args, kwargs)
            else:
                with torch.no_grad():
                    gm = _export_trace(model, args, kwargs, leaf_types)
        except RuntimeError as exc:
            errors.append(f"torch.{name}: {exc}")
            continue
        gm.meta.update(root=model, tracer=name)
        return gm
    suffix = f"; {hint}" if hint else ""
    raise UnsupportedModelError(f"cannot trace {type(model).__name__}: {'; '.join(errors)}{suffix}")


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The output shape recorded for ``node`` by `capture` (``None`` when not a tensor)."""
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None
