"""Write ``.tflite``: litert-torch conversion (fixed batch size), int8 dynamic-range or full-integer via pt2e."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.data import Batch, resize_batch
from slimkit.core.errors import InvalidConfigError, require
from slimkit.core.lowering import refuse_unexpressible
from slimkit.runtime.inputs import flat_outputs
from slimkit.runtime.tracing import (
    calibration_batches,
    contiguous_weights,
    trace,
    unsupported_op_error,
    without_cache,
)

TFLITE_QUANTIZE = ("int8", "int8-dynamic")
"""``quantize=`` values for ``.tflite``: full-integer static (calibrated) or dynamic-range int8."""


def _quantized(model: nn.Module, batch: Batch, mode: str, data: Iterable[Any] | None) -> tuple[nn.Module, Any]:
    """(pt2e-quantized module, litert QuantConfig) for ``mode``."""
    pt2e_quantizer = require("litert_torch.quantize.pt2e_quantizer", "tflite")
    quant_config = require("litert_torch.quantize.quant_config", "tflite")
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e", "tflite")
    to_eval = require("torchao.quantization.pt2e", "tflite").move_exported_model_to_eval
    config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=mode == "int8-dynamic")
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(config)
    prepared = pt2e.prepare_pt2e(trace(model, batch, dynamic=False, fmt="TFLite int8").module(), quantizer)
    with torch.no_grad():
        for calib in calibration_batches(model, data, batch, dynamic=mode == "int8-dynamic"):
            calib = resize_batch(calib, batch.size)
            prepared(*calib.args, **calib.kwargs)
    converted = to_eval(pt2e.convert_pt2e(prepared, fold_quantize=False))
    return converted, quant_config.QuantConfig(pt2e_quantizer=quantizer)


def export_tflite(
    model: nn.Module,
    batch: Batch,
    path: Path,
    *,
    quantize: str | None = None,
    data: Iterable[Any] | None = None,
    batch_size: int = 1,
) -> None:
    """Write the model as a LiteRT flatbuffer with a fixed batch size.

    Args:
        model: the eval-mode model.
        batch: sample inputs (keyword inputs are passed by name).
        path: the file to write.
        quantize: None, ``"int8"`` (full-integer, calibrated on ``data``) or ``"int8-dynamic"``
            (dynamic-range: int8 weights, float activations).
        data: calibration batches for ``"int8"`` (default: the sample batch).
        batch_size: the batch size baked into the model (the runtime splits larger batches).
    """
    if quantize is not None and quantize not in TFLITE_QUANTIZE:
        raise InvalidConfigError(f"unknown quantize={quantize!r} for .tflite; valid: {', '.join(TFLITE_QUANTIZE)}")
    litert = require("litert_torch", "tflite")
    refuse_unexpressible(model, "tflite", "TFLite")
    model = contiguous_weights(model)
    sample = resize_batch(batch, batch_size)
    source, config = _quantized(model, sample, quantize, data) if quantize else (model.eval(), None)
    try:
        with _quiet():
            converted = litert.convert(
                FlatOutputs(without_cache(source)), sample.args, sample.kwargs or None, quant_config=config
            )
    except Exception as exc:  # litert-torch raises RuntimeError / jax errors for unsupported ops
        program = None
        with contextlib.suppress(Exception):
            program = trace(model, sample, dynamic=False, fmt="TFLite")
        raise unsupported_op_error(exc, program, "TFLite") from exc
    with _quiet():
        converted.export(str(path))


class FlatOutputs(nn.Module):
    """The model returning its output tensors as a flat tuple, so LiteRT names them
    ``output_0``, ``output_1``, ... in the model's own order (named fields such as
    ``last_hidden_state`` / ``pooler_output`` would come back sorted by name)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return tuple(flat_outputs(self.model(*args, **kwargs)))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence litert-torch's progress lines and warnings."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)
