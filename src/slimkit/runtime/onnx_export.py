"""Write ``.onnx``: the dynamo exporter (opset 18, dynamic batch), optionally int8 through onnxruntime."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.data import Batch
from slimkit.core.device import int8_saturates
from slimkit.core.errors import InvalidConfigError, require
from slimkit.core.lowering import export_standins, rewrite_graph, translation_table
from slimkit.runtime.inputs import flat_tensors, input_names
from slimkit.runtime.onnx_fusions import fusable_gelu
from slimkit.runtime.tracing import calibration_batches, contiguous_views, trace, unsupported_op_error

OPSET = 18
ONNX_QUANTIZE = ("int8", "int8-dynamic")
"""``quantize=`` values for ``.onnx``: static QDQ (calibrated) or dynamic (weights int8, activations at run time)."""
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
"""``MatMulNBits`` ``accuracy_level`` values: 0 unset (float), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations."""


def _fp32(model: nn.Module, batch: Batch, path: Path, opset: int, accuracy_level: int = 0) -> None:
    require("onnxscript", "onnx")
    # the exporter warns once per missing torchvision op, which slimkit models never use
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with export_standins(model, "onnx"):  # e.g. quantized layers as MatMulNBits / MatMulInteger
        program = contiguous_views(trace(model, batch, fmt="ONNX"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program,
                batch.args,
                input_names=input_names(model, batch),
                opset_version=opset,
                dynamo=True,
                verbose=False,
                optimize=True,
                custom_translation_table=translation_table("onnx", accuracy_level=accuracy_level),
            )
    except Exception as exc:  # the exporter raises ConversionError / OnnxExporterError / RuntimeError
        raise unsupported_op_error(exc, program, "ONNX") from exc
    model_proto = onnx_program.model_proto
    strip_debug_info(model_proto)
    fusable_gelu(model_proto)
    rewrite_graph("onnx", model_proto)  # e.g. int8 matmuls sharing one input merged into one
    require("onnx", "onnx").save(model_proto, str(path))


def strip_debug_info(model: Any) -> None:
    """Drop the exporter's per-node debug metadata (source stack traces, module paths): it
    does not change the graph and would otherwise be most of a small model's file."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in (*model.graph.value_info, *model.graph.input, *model.graph.output, *model.graph.initializer):
        del value.metadata_props[:]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over slimkit batches."""

    def __init__(self, names: list[str], batches: list[Batch]):
        self.feeds = iter([dict(zip(names, (t.numpy() for t in flat_tensors(b)), strict=True)) for b in batches])

    def get_next(self) -> dict[str, Any] | None:
        return next(self.feeds, None)


def quantize_with_onnxruntime(
    fp32: Path, path: Path, mode: str, model: nn.Module, batch: Batch, data: Iterable[Any] | None = None
) -> None:
    """Write onnxruntime's own int8 quantization of the float graph ``fp32`` at ``path``.

    Args:
        fp32: a float ONNX file.
        path: the file to write.
        mode: ``"int8-dynamic"`` (``quantize_dynamic``) or ``"int8"`` (``quantize_static``,
            QDQ, calibrated on ``data``); per-channel int8 weights either way.
        model: the float model ``fp32`` was exported from (it names the inputs).
        batch: its sample batch (the calibration default).
        data: calibration batches for ``"int8"``.
    """
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_dynamic, quantize_static

    prepared = fp32.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    if mode == "int8-dynamic":
        quantize_dynamic(
            str(prepared), str(path), per_channel=True, reduce_range=int8_saturates(), weight_type=QuantType.QInt8
        )
        return
    names = input_names(model, batch)
    reader = _Reader(names, calibration_batches(model, data, batch))
    quantize_static(
        str(prepared),
        str(path),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=int8_saturates(),
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": False},
    )


def export_onnx(
    model: nn.Module,
    batch: Batch,
    path: Path,
    *,
    quantize: str | None = None,
    data: Iterable[Any] | None = None,
    opset: int = OPSET,
    accuracy_level: int = 0,
) -> None:
    """Write the model as ONNX at ``path`` (batch dimension dynamic).

    Args:
        model: the eval-mode model (a slimkit-quantized model exports its own quantized ops:
            `slimkit.quantization.onnx_lowering` for weight-only and int8-dynamic layers).
        batch: positional sample inputs (batch of at least 2).
        path: the file to write.
        quantize: None (as the model is), ``"int8"`` (onnxruntime static QDQ, per-channel
            weights, calibrated on ``data``) or ``"int8-dynamic"`` (onnxruntime dynamic).
        data: calibration batches for ``"int8"`` (default: the sample batch).
        opset: ONNX opset (>= 17).
        accuracy_level: ``accuracy_level`` of the ``MatMulNBits`` nodes written for slimkit's
            weight-only linears: 0 computes in float (default), 4 quantizes activations to int8
            per block (faster on CPU, less exact).
    """
    if opset < 17:
        raise InvalidConfigError(f"opset must be >= 17 for slimkit's ONNX export, got {opset}")
    if accuracy_level not in ACCURACY_LEVELS:
        raise InvalidConfigError(f"accuracy_level must be one of {ACCURACY_LEVELS}, got {accuracy_level!r}")
    if quantize is not None and quantize not in ONNX_QUANTIZE:
        raise InvalidConfigError(f"unknown quantize={quantize!r} for .onnx; valid: {', '.join(ONNX_QUANTIZE)}")
    if quantize is None:
        _fp32(model, batch, path, opset, accuracy_level)
        return
    with tempfile.TemporaryDirectory(prefix="slimkit-onnx-", dir=path.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        _fp32(model, batch, fp32, opset, accuracy_level)
        quantize_with_onnxruntime(fp32, path, quantize, model, batch, data)
