"""Write ``.pte``: torch.export -> ExecuTorch edge dialect lowered to XNNPACK; int8 (static or
dynamic) through the XNNPACK quantizer."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.data import Batch, resize_batch
from slimkit.core.errors import InvalidConfigError, UnsafeFileError, UnsupportedModelError, first_line, require
from slimkit.runtime.executorch_runtime import load_quantized_kernels
from slimkit.runtime.tracing import (
    MAX_BATCH,
    calibration_batches,
    contiguous_views,
    contiguous_weights,
    longest_sequence,
    sequence_length,
    trace,
    unsupported_op_error,
)

PTE_QUANTIZE = ("int8", "int8-dynamic")
"""``quantize=`` values for ``.pte`` (pt2e with the XNNPACK quantizer, per-channel int8 weights):
int8 static (calibrated activations) or int8 dynamic (linear/conv activations quantized per call)."""


def _pt2e_int8(model: nn.Module, batch: Batch, data: Iterable[Any] | None, dynamic: bool) -> nn.Module:
    """The model with pt2e quantize/dequantize pairs from the XNNPACK quantizer: static ones
    calibrated on ``data``, or dynamic ones (one pass of ``batch`` sets the weight observers)."""
    quantizer_mod = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", "executorch")
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "executorch")
    to_eval = require("torchao.quantization.pt2e", "executorch").move_exported_model_to_eval
    quantizer = quantizer_mod.XNNPACKQuantizer().set_global(
        quantizer_mod.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    )
    captured = trace(model, batch, fmt="ExecuTorch int8").module()
    try:
        prepared = pt2e.prepare_pt2e(captured, quantizer)
        with torch.no_grad():
            for calib in calibration_batches(model, data, batch, dynamic=dynamic):
                prepared(*calib.args, **calib.kwargs)
        return to_eval(pt2e.convert_pt2e(prepared))
    except Exception as exc:  # pt2e raises IndexError / RuntimeError / AssertionError on graphs it mishandles
        first = first_line(exc)
        raise UnsupportedModelError(
            f"ExecuTorch's XNNPACK quantizer cannot quantize {type(model).__name__}: {first} -- export it "
            'without quantize= (fp32), or to .onnx (quantize="int8-dynamic" or a slimkit int8-dynamic model)'
        ) from exc


_SPLITS = (torch.ops.aten.split.Tensor, torch.ops.aten.split_with_sizes.default)


def _bounds(sizes: Any, length: int) -> list[tuple[int, int]] | None:
    """``[(start, end)]`` of the pieces of a split of ``length`` (None when not all static)."""
    if isinstance(sizes, int):
        return [(start, min(start + sizes, length)) for start in range(0, length, sizes)] if sizes > 0 else None
    if not all(isinstance(s, int) for s in sizes):
        return None
    ends = list(itertools.accumulate(sizes))
    return list(zip([0, *ends[:-1]], ends, strict=True))


def split_as_slices(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Every ``aten.split`` along a static dimension as one ``aten.slice`` per piece used.

    ExecuTorch's edge verifier takes the first piece of a list-returning op for the list and
    asks its length, which pins a dynamic batch dimension to the sample's size (GPT-2's
    ``c_attn(x).split(width, dim=2)``): the program then fails at any other batch size with
    error 0x12. Slices say the same without a list.
    """
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _SPLITS:
            continue
        source, sizes = node.args[0], node.args[1]
        value = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
        if not isinstance(value, torch.Tensor) or any(u.target is not operator.getitem for u in node.users):
            continue
        dim = (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)) % value.dim()
        length = value.shape[dim]
        bounds = _bounds(sizes, length) if isinstance(length, int) else None
        if bounds is None:
            continue
        for user in list(node.users):
            start, end = bounds[user.args[1]]
            with graph.inserting_before(user):
                piece = graph.call_function(torch.ops.aten.slice.Tensor, (source, dim, start, end))
            piece.meta.update(user.meta)
            user.replace_all_uses_with(piece)
            graph.erase_node(user)
        graph.erase_node(node)
    program.graph_module.recompile()
    return program


def _backend_config(exir: Any) -> Any:
    """Memory planning by each dynamic tensor's upper bound (the traced batch range), not by the
    sample's size: an ``arange(batch)`` (transformers' mask code) is then resizable at run time."""
    passes = require("executorch.exir.passes.sym_shape_eval_pass", "executorch")
    return exir.ExecutorchBackendConfig(sym_shape_eval_pass=passes.ConstraintBasedSymShapeEvalPass())


def _is_count(value: Any, low: int, high: int | None = None) -> bool:
    return type(value) is int and value >= low and (high is None or value <= high)


def _check_bounds(batch: Batch, max_batch: int, max_sequence: int | None) -> None:
    """Refuse bounds that are not counts, or a ``max_sequence`` shorter than the example inputs."""
    if not _is_count(max_batch, 1, MAX_BATCH):
        raise InvalidConfigError(f"max_batch must be an integer from 1 to {MAX_BATCH}, got {max_batch!r}")
    if max_sequence is None:
        return
    if not _is_count(max_sequence, 2):
        raise InvalidConfigError(f"max_sequence must be an integer >= 2, got {max_sequence!r}")
    length = sequence_length(batch)
    if length is None:
        raise InvalidConfigError("max_sequence bounds token inputs (integer, rank >= 2), and this model takes none")
    if length > max_sequence:
        raise InvalidConfigError(
            f"the example inputs hold a sequence of {length} tokens, longer than max_sequence={max_sequence}: "
            "give shorter example inputs (--data) or a larger max_sequence"
        )


def _bounded_trace(
    source: nn.Module, batch: Batch, max_batch: int, max_sequence: int | None, declared: int | None
) -> torch.export.ExportedProgram:
    """The program with the batch bounded by ``max_batch`` and a token sequence by
    ``max_sequence`` (else the model's ``declared`` maximum: a model that does not trace so is
    traced with ``Dim.AUTO``)."""
    if batch.size > max_batch:
        batch = resize_batch(batch, max_batch)
    if max_sequence is None and declared is not None:
        try:
            return trace(source, batch, fmt="ExecuTorch", max_batch=max_batch, max_sequence=declared)
        except UnsupportedModelError:
            pass  # the model fixes its length: Dim.AUTO below
    return trace(source, batch, fmt="ExecuTorch", max_batch=max_batch, max_sequence=max_sequence)


def export_pte(
    model: nn.Module,
    batch: Batch,
    path: Path,
    *,
    quantize: str | None = None,
    data: Iterable[Any] | None = None,
    max_batch: int = MAX_BATCH,
    max_sequence: int | None = None,
) -> None:
    """Write the model as an ExecuTorch program delegated to XNNPACK (batch dimension dynamic).

    ExecuTorch plans activation memory for the largest shape the program takes: the bounds
    set it (`planned_memory` reads it back). Bigger batches are run in slices at run time.

    Args:
        model: the eval-mode model.
        batch: positional sample inputs (batch of at least 2).
        path: the file to write.
        quantize: None, ``"int8"`` (XNNPACK quantizer through pt2e, calibrated on ``data``) or
            ``"int8-dynamic"`` (int8 weights, activations of linears and convolutions quantized
            per call: no calibration).
        data: calibration batches for ``"int8"`` (default: the sample batch).
        max_batch: the largest batch the program takes in one call (1: fixed at 1).
        max_sequence: the longest token sequence it takes (default: the model's declared
            maximum, e.g. ``max_position_embeddings``; unbounded when it declares none).

    Raises:
        InvalidConfigError: an unknown ``quantize``, or bounds that are not positive integers
            or are smaller than the example inputs.
        UnsupportedModelError: an op ExecuTorch cannot express, or slimkit int8-dynamic layers.
    """
    if quantize is not None and quantize not in PTE_QUANTIZE:
        raise InvalidConfigError(f"unknown quantize={quantize!r} for .pte; valid: {', '.join(PTE_QUANTIZE)}")
    _check_bounds(batch, max_batch, max_sequence)
    model = contiguous_weights(model)
    exir = require("executorch.exir", "executorch")
    load_quantized_kernels()
    partitioner = require("executorch.backends.xnnpack.partition.xnnpack_partitioner", "executorch")
    source = _pt2e_int8(model, batch, data, quantize == "int8-dynamic") if quantize else model
    program = _bounded_trace(source, batch, max_batch, max_sequence, longest_sequence(model))
    program = split_as_slices(contiguous_views(program))
    try:
        lowered = exir.to_edge_transform_and_lower(program, partitioner=[partitioner.XnnpackPartitioner()])
        buffer = lowered.to_executorch(_backend_config(exir)).buffer
    except Exception as exc:  # exir raises SpecViolationError, RuntimeError, ... for unsupported ops
        raise unsupported_op_error(exc, program, "ExecuTorch") from exc
    path.write_bytes(buffer)


def planned_memory(path: str | Path) -> int:
    """Bytes of activation memory an ExecuTorch program plans for its ``forward`` (weights not
    included): what a device must have free to run it at its largest shape.

    Raises:
        UnsafeFileError: the file is not an ExecuTorch program.
    """
    serialize = require("executorch.exir._serialize._program", "executorch")
    try:
        pte = serialize.deserialize_pte_binary(Path(path).read_bytes())
        plans = getattr(pte, "program", pte).execution_plan
    except Exception as exc:  # flatbuffer parsing raises many error types on a bad file
        raise UnsafeFileError(f"{path} is not an ExecuTorch program: {first_line(exc)}") from None
    forward = next((plan for plan in plans if plan.name == "forward"), None)
    return sum(forward.non_const_buffer_sizes) if forward is not None else 0
