"""Write ``.pte``: torch.export -> ExecuTorch edge dialect lowered to XNNPACK; int8 (static or
dynamic) through the XNNPACK quantizer."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.data import Batch
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError, first_line, require
from slimkit.runtime.executorch_runtime import load_quantized_kernels
from slimkit.runtime.tracing import calibration_batches, contiguous_views, trace, unsupported_op_error

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


def export_pte(
    model: nn.Module, batch: Batch, path: Path, *, quantize: str | None = None, data: Iterable[Any] | None = None
) -> None:
    """Write the model as an ExecuTorch program delegated to XNNPACK (batch dimension dynamic).

    Args:
        model: the eval-mode model.
        batch: positional sample inputs (batch of at least 2).
        path: the file to write.
        quantize: None, ``"int8"`` (XNNPACK quantizer through pt2e, calibrated on ``data``) or
            ``"int8-dynamic"`` (int8 weights, activations of linears and convolutions quantized
            per call: no calibration).
        data: calibration batches for ``"int8"`` (default: the sample batch).

    Raises:
        UnsupportedModelError: an op ExecuTorch cannot express, or slimkit int8-dynamic layers.
    """
    if quantize is not None and quantize not in PTE_QUANTIZE:
        raise InvalidConfigError(f"unknown quantize={quantize!r} for .pte; valid: {', '.join(PTE_QUANTIZE)}")
    exir = require("executorch.exir", "executorch")
    load_quantized_kernels()
    partitioner = require("executorch.backends.xnnpack.partition.xnnpack_partitioner", "executorch")
    source = _pt2e_int8(model, batch, data, quantize == "int8-dynamic") if quantize else model
    program = contiguous_views(trace(source, batch, fmt="ExecuTorch"))
    try:
        lowered = exir.to_edge_transform_and_lower(program, partitioner=[partitioner.XnnpackPartitioner()])
        buffer = lowered.to_executorch().buffer
    except Exception as exc:  # exir raises SpecViolationError, RuntimeError, ... for unsupported ops
        raise unsupported_op_error(exc, program, "ExecuTorch") from exc
    path.write_bytes(buffer)
