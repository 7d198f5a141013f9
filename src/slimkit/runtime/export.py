"""`export`: write a model as ``.onnx`` / ``.pte`` / ``.tflite`` / ``.pt2``, verified in its own runtime."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.atomic import write_file
from slimkit.core.data import Batch, DataSplits
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError, require
from slimkit.core.formats import SUFFIXES, by_suffix, load_attribute, refusal
from slimkit.core.record import get_record
from slimkit.runtime.tracing import export_batch, trace
from slimkit.runtime.verify import check_parity, parity

FORMATS = SUFFIXES
"""File suffixes `export` writes (from `slimkit.core.formats`)."""
FP32_MIN_SQNR_DB = 35.0
"""Parity floor of an export of the model as it is (against the PyTorch model)."""
QUANTIZED_MIN_SQNR_DB = 25.0
"""Parity floor of a slimkit-quantized model's export (against slimkit's own quantized model)."""
RUNTIME_INT8_MIN_SQNR_DB = 15.0
"""Parity floor of an export quantized by the runtime's own int8 path (against the float model)."""


def _writer(suffix: str) -> Callable[..., None]:
    exporter = by_suffix(suffix).exporter
    return _export_pt2 if exporter is None else load_attribute(exporter)


def _export_pt2(
    model: nn.Module, batch: Batch, path: Path, *, quantize: str | None = None, data: Iterable[Any] | None = None
) -> None:
    if quantize is not None:
        raise InvalidConfigError("quantize= is not available for .pt2: quantize the model with sk.quantize first")
    torch.export.save(trace(model, batch, fmt=".pt2"), str(path))


def format_options(suffix: str) -> list[str]:
    """The names of the format options the ``suffix``'s exporter takes (``opset``, ``max_batch``, ...)."""
    writer = _writer(suffix.lower())
    return [n for n in inspect.signature(writer).parameters if n not in ("model", "batch", "path", "quantize", "data")]


def check_format_options(suffix: str, options: Iterable[str], where: str) -> None:
    """Refuse an option the ``suffix``'s exporter does not take.

    Raises:
        InvalidConfigError: ``"WHERE: unknown [...]; valid: [...]"``.
    """
    known = format_options(suffix)
    if unknown := sorted(set(options) - set(known)):
        raise InvalidConfigError(f"{where}: unknown {unknown}; valid: {known or 'none'}")


def _check_target(path: Path, overwrite: bool) -> None:
    by_suffix(path.suffix)  # the format must be known
    if path.is_dir():
        raise InvalidConfigError(f"{path} is a folder: give a file path such as {path / ('model' + path.suffix)}")
    if path.exists() and not overwrite:
        raise InvalidConfigError(f"{path} already exists: pass overwrite=True (CLI: --overwrite) to replace it")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidConfigError(f"cannot write {path}: {exc.strerror or exc} -- choose a writable folder") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidConfigError(f"cannot write {path}: folder {parent} is not writable -- choose a writable folder")


def _is_slimkit_quantized(model: nn.Module) -> bool:
    return any(t.verb == "quantize" for t in get_record(model).transforms)


def export(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_inputs: Any = None,
    data: Iterable[Any] | DataSplits | str | None = None,
    overwrite: bool = False,
    verify: bool = True,
    quantize: str | None = None,
    min_sqnr_db: float | None = None,
    **options: Any,
) -> Path:
    """Write ``model`` to ``path`` in the format its suffix names, verify it, then publish it atomically.

    The artifact is written to a temporary file, loaded in its own runtime (onnxruntime,
    ExecuTorch, LiteRT, torch), run at batch sizes 1 and 3 and compared with the PyTorch
    model; only an artifact within ``min_sqnr_db`` is moved onto ``path``.

    Args:
        model: the model (plain, pruned, decomposed or slimkit-quantized; a slimkit
            ``int8-dynamic`` model exports to ``.onnx`` only: for ``.pte`` / ``.tflite``
            export the float model with ``quantize="int8-dynamic"``).
        path: ``*.onnx`` (dynamic batch), ``*.pte`` (ExecuTorch + XNNPACK, dynamic batch),
            ``*.tflite`` (LiteRT, fixed batch size ``batch_size=1``) or ``*.pt2``.
        example_inputs: sample inputs (default: the first ``data`` batch cut to one
            sample, else the model's ``example_inputs()``, else its bundled example's).
        data: batches (an iterable, `DataSplits` -> its calibration split, or a data spec):
            the source of sample inputs when ``example_inputs`` is None, and the
            calibration batches for ``quantize="int8"``.
        overwrite: replace an existing file.
        verify: run the parity check (on by default).
        quantize: the runtime's own int8 path: ``"int8"`` (static, calibrated on ``data``;
            all formats but ``.pt2``) or ``"int8-dynamic"`` (int8 weights, activations
            quantized at run time, no calibration; ``.onnx``, ``.pte``, ``.tflite``).
        min_sqnr_db: parity floor (default 35 dB; 25 dB for slimkit-quantized models;
            15 dB against the float model when ``quantize`` is given).
        **options: format options (`format_options` lists a format's): ``opset`` and
            ``accuracy_level`` (ONNX; see `export_onnx`), ``max_batch`` and ``max_sequence``
            (ExecuTorch: the bounds memory is planned for; see `export_pte`), ``batch_size``
            (TFLite).

    Returns:
        The written path.

    Raises:
        InvalidConfigError: unknown suffix or option, existing file, unwritable folder.
        UnsupportedModelError: an op the format cannot express, or failed parity.
        MissingExtraError: the format's optional dependency is not installed.
    """
    from slimkit.core.samples import example_batch
    from slimkit.runtime import load as load_runtime

    path = Path(path)
    _check_target(path, overwrite)
    fmt = by_suffix(path.suffix)
    if reason := refusal(fmt, {t.method for t in get_record(model).transforms if t.verb == "quantize"}):
        raise UnsupportedModelError(reason)
    for module in fmt.modules:
        require(module, fmt.extra)  # fail before the slow work when an optional dependency is missing
    if isinstance(data, (str, os.PathLike)):
        from slimkit.core.specs import load_data

        data = load_data(str(data))
    if isinstance(data, DataSplits):
        data = data.calibration
    model = model.eval()
    sample = export_batch(model, example_batch(model, example_inputs, data, "export"))
    if min_sqnr_db is None:
        min_sqnr_db = (
            RUNTIME_INT8_MIN_SQNR_DB
            if quantize
            else QUANTIZED_MIN_SQNR_DB
            if _is_slimkit_quantized(model)
            else FP32_MIN_SQNR_DB
        )
    writer = _writer(path.suffix.lower())

    check_format_options(path.suffix, options, f"export options for {path.suffix}")

    def write(staged: Path) -> None:
        writer(model, sample, staged, quantize=quantize, data=data, **options)
        if verify:
            runtime = load_runtime(staged)
            result = parity(runtime, model, sample)
            against = "the float model" if quantize else "the PyTorch model"
            check_parity(result, min_sqnr_db, path, runtime.name, against)

    return write_file(path, write)
