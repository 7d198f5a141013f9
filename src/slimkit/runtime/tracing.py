"""torch.export for deployment: dynamic batch, calibration batches, and clear errors for unsupported ops."""

from __future__ import annotations

import contextlib
import copy
import inspect
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.data import Batch, iter_batches, resize_batch
from slimkit.core.errors import UnsupportedModelError, first_line
from slimkit.core.lowering import refuse_unexpressible
from slimkit.runtime.inputs import input_names, positional

MAX_BATCH = 1024
_OP = re.compile(r"(?:torch\.ops\.|torch\._ops\.)?(aten|quantized_decomposed|prims|[a-z_]+)(?:\.|::)(\w+)(?:\.(\w+))?")
_OP_HINTS = re.compile(
    r"(target=torch\.ops\.[\w.]+|torch\._ops\.[\w.]+|Lowering not found: [\w.]+|aten::\w+|aten\.\w+\.\w+)"
)


def export_batch(model: nn.Module, batch: Batch, min_size: int = 2) -> Batch:
    """The sample batch used for tracing: positional inputs, at least ``min_size`` samples.

    A batch of 1 would make ``torch.export`` specialize the batch dimension, so the
    sample is tiled to 2 when the batch dimension is to stay dynamic.
    """
    batch = positional(model, batch).to("cpu")
    return resize_batch(batch, min_size) if batch.size < min_size else Batch(batch.args, batch.kwargs)


def dynamic_shapes(model: nn.Module, batch: Batch, max_batch: int = MAX_BATCH, max_sequence: int | None = None) -> Any:
    """One shared dynamic batch dimension (up to ``max_batch``; static when that is 1) for every
    input that has one, and a shared sequence dimension for integer inputs of rank >= 2 (token
    ids, masks): ``Dim.AUTO`` (kept static where the model needs it), or bounded by
    ``max_sequence`` when given. Keyword inputs get theirs by parameter name."""
    batch_dim = torch.export.Dim("batch", min=1, max=max_batch) if max_batch > 1 else None
    sequence = torch.export.Dim("sequence", min=2, max=max_sequence) if max_sequence else torch.export.Dim.AUTO

    def spec(t: torch.Tensor) -> dict[int, Any] | None:
        if not t.dim():
            return None
        dims: dict[int, Any] = {0: batch_dim} if batch_dim is not None else {}
        if is_sequence_input(t):
            dims[1] = sequence
        return dims or None

    if not batch.kwargs:
        return tuple(spec(t) for t in batch.args)
    names = input_names(model, batch)
    return {name: spec(t) for name, t in zip(names, (*batch.args, *batch.kwargs.values()), strict=True)}


def is_sequence_input(t: torch.Tensor) -> bool:
    """Whether ``t`` looks like token ids or a mask: integer (or bool), rank >= 2, length > 1."""
    return t.dim() >= 2 and not t.is_floating_point() and t.shape[1] > 1


def sequence_length(batch: Batch) -> int | None:
    """The longest sequence among the batch's token inputs (`is_sequence_input`), or None."""
    tensors = [t for t in (*batch.args, *batch.kwargs.values()) if isinstance(t, torch.Tensor)]
    return max((t.shape[1] for t in tensors if is_sequence_input(t)), default=None)


class Stateless(nn.Module):
    """The model called with ``use_cache=False``: a transformers decoder's forward without the
    key/value cache, whose cache object no exporter can return (the graph recomputes instead)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, use_cache=False, **kwargs)


def without_cache(model: nn.Module) -> nn.Module:
    """``model`` wrapped in `Stateless` when its forward takes ``use_cache``, else ``model``.

    The wrapper's forward shows the model's own parameters (without ``use_cache``), so
    torch.export binds inputs, and dynamic shapes, to the same names as for the model."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return model
    if "use_cache" not in signature.parameters:
        return model
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p for name, p in signature.parameters.items() if name != "use_cache"]

    def forward(self: Stateless, *args: Any, **kwargs: Any) -> Any:
        return Stateless.forward(self, *args, **kwargs)

    forward.__signature__ = signature.replace(parameters=[self_param, *params])  # type: ignore[attr-defined]
    named = type(Stateless.__name__, (Stateless,), {"forward": forward})
    return named(model)


POSITION_ATTRS = ("max_position_embeddings", "n_positions", "max_seq_len")
"""Config attributes holding the longest sequence a transformers model takes."""


def longest_sequence(model: nn.Module) -> int | None:
    """The longest sequence ``model`` declares (its config's position count), or None."""
    config = getattr(model, "config", None)
    found = (getattr(config, attr, None) for attr in POSITION_ATTRS)
    return next((value for value in found if isinstance(value, int) and value >= 2), None)


def trace(
    model: nn.Module,
    batch: Batch,
    dynamic: bool = True,
    fmt: str = "torch.export",
    *,
    max_batch: int = MAX_BATCH,
    max_sequence: int | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the model on ``batch`` (dynamic batch dimension when ``dynamic``).

    Args:
        model: the model to capture.
        batch: positional sample inputs.
        dynamic: whether the batch (and any token sequence) dimension stays dynamic.
        fmt: the format, for messages and for the lowering table's refusals.
        max_batch: the batch dimension's upper bound (1: the batch is fixed at 1).
        max_sequence: a token sequence dimension's upper bound (None: ``Dim.AUTO``, unbounded
            or static where the model needs it). Bounds matter where memory is planned for the
            largest shape (ExecuTorch).

    Raises:
        UnsupportedModelError: when the model cannot be captured as a graph, or holds a layer
            a registered lowering refuses (`slimkit.core.lowering`).
    """
    refuse_unexpressible(model, fmt.split()[0].lower(), fmt)
    with contextlib.suppress(NotImplementedError):  # pt2e / torch.export modules refuse eval()
        model.eval()
    name = type(model).__name__
    model = without_cache(model)
    shapes = dynamic_shapes(model, batch, max_batch, max_sequence) if dynamic else None
    try:
        with torch.no_grad():
            return torch.export.export(model, batch.args, kwargs=batch.kwargs or None, dynamic_shapes=shapes)
    except Exception as exc:  # torch.export raises many error types (UserError, Unsupported, ...)
        first = first_line(exc)
        raise UnsupportedModelError(
            f"cannot capture {name} as a graph for {fmt} with torch.export: {first} -- "
            "make the forward traceable (no data-dependent Python control flow) or export a traceable submodule"
        ) from exc


def contiguous_weights(model: nn.Module) -> nn.Module:
    """``model``, or a copy of it whose parameters and buffers are contiguous (NCHW) when some
    are not (the input model is never changed). ``accelerate(..., "fuse")`` may leave a model's
    convolutions channels_last: XNNPACK's layout pass refuses such weights (.pte) and the
    LiteRT converter gets their numbers wrong (30 dB instead of exact, .tflite)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.is_contiguous() for t in tensors):
        return model
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for t in [*copied.parameters(), *copied.buffers()]:
            t.data = t.data.contiguous()
    return copied


def calibration_batches(
    model: nn.Module, data: Iterable[Any] | None, sample: Batch, limit: int = 8, dynamic: bool = False
) -> list[Batch]:
    """Up to ``limit`` batches of ``data`` as positional CPU batches; the sample batch alone when
    there is no data or the quantization is ``dynamic`` (only weight observers to feed)."""
    if data is None or dynamic:
        return [sample]
    return [positional(model, b).to("cpu") for b in iter_batches(data, limit=limit)]


def _layer_of(program: torch.export.ExportedProgram | None, op: str) -> str | None:
    """The module path of the first graph node calling ``op`` (before or after decomposition)."""
    if program is None:
        return None
    graphs = [program.graph]
    try:
        graphs.append(program.run_decompositions().graph)
    except Exception:  # noqa: BLE001 (decomposition is only a lookup aid here)
        pass
    for graph in graphs:
        for node in graph.nodes:
            if node.op == "call_function" and op in str(node.target):
                stack = list(node.meta.get("nn_module_stack", {}).values())
                return stack[-1][0] if stack and stack[-1][0] else "the model's own forward"
    return None


def unsupported_op_error(
    exc: BaseException, program: torch.export.ExportedProgram | None, fmt: str
) -> UnsupportedModelError:
    """Turn an exporter failure into an error naming the op, the layer and what to do."""
    text = str(exc)
    hint = _OP_HINTS.search(text)
    match = _OP.search(hint.group(0)) if hint else None
    if match is None:
        first = first_line(exc)
        return UnsupportedModelError(f"export to {fmt} failed: {first}")
    op = f"{match.group(1)}.{match.group(2)}"
    layer = _layer_of(program, op)
    where = f" in layer {layer!r}" if layer else ""
    return UnsupportedModelError(
        f"{fmt} cannot express the op {op}{where}: replace that layer with supported ops, "
        f"exclude it from compression, or export to another format"
    )


_VIEWS = (torch.ops.aten.view.default, torch.ops.aten.reshape.default)
CONTIGUOUS = torch.contiguous_format


def contiguous_views(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """A contiguous copy before every ``aten.view``/``aten.reshape`` of a tensor that is not contiguous.

    torch.export records a model's ``reshape`` of a transposed tensor as a ``view`` when its
    symbolic strides look viewable; the ONNX and ExecuTorch exporters' decompositions then
    fail on it ("Cannot view a tensor with shape [s0, s1, 4, 16] and strides ...": T5's
    attention). The exported graphs keep no strides, so the copy costs nothing there.
    """
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _VIEWS:
            continue
        source = node.args[0]
        value = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
        if not isinstance(value, torch.Tensor) or _contiguous(value):
            continue
        with graph.inserting_before(node):
            copy = graph.call_function(torch.ops.aten.clone.default, (source,), {"memory_format": CONTIGUOUS})
        copy.meta["val"] = value.clone(memory_format=torch.contiguous_format)
        node.replace_input_with(source, copy)
    program.graph_module.recompile()
    return program


def _contiguous(value: torch.Tensor) -> bool:
    try:
        return bool(value.is_contiguous())
    except Exception:  # a symbolic stride the shape environment cannot decide: copy to be safe
        return False
