"""LiteRT (TFLite): run and time a ``.tflite`` model with ``ai_edge_litert``'s interpreter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.core.data import Batch
from slimkit.core.errors import InvalidConfigError, UnsafeFileError, require
from slimkit.runtime.base import SessionRuntime
from slimkit.runtime.inputs import InputSpec, flat_tensors, pack_outputs, run_chunked, synthetic_batch


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float input -> the integer type a full-integer model expects (its scale / zero point)."""
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32) if scale else y


def _sorted_keys(names: Any) -> list[str]:
    """Signature names in index order (``args_10`` after ``args_9``)."""
    return sorted(names, key=lambda n: (len(n), n))


class TFLiteRuntime(SessionRuntime):
    """A ``.tflite`` model's serving signature, run by ``ai_edge_litert.interpreter.Interpreter``.

    The batch size the model was converted with is fixed; other batch sizes are resized
    when the graph allows it and otherwise run as consecutive calls of the fixed size.

    Args:
        path: the ``.tflite`` file.
        example: default inputs for `bench` (default: synthesized from the input details).
        threads: interpreter threads (None: LiteRT's default).
    """

    name = "tflite"

    def __init__(self, path: str | os.PathLike[str], example: Batch | None = None, threads: int | None = None):
        self.litert = require("ai_edge_litert.interpreter", "tflite")
        self.path = Path(path)
        self.rebuild(threads)
        details = self.runner.get_input_details()
        self.input_keys = _sorted_keys(details)
        self.output_keys = _sorted_keys(self.runner.get_output_details())
        self.inputs = [
            InputSpec(k, tuple(int(d) for d in details[k]["shape"]), np.dtype(details[k]["dtype"]))
            for k in self.input_keys
        ]
        self.static_batch = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else 1
        self._resizable: dict[int, bool] = {}
        super().__init__(example if example is not None else synthetic_batch(self.inputs, self.static_batch))

    def rebuild(self, threads: int | None) -> None:
        """A new interpreter with ``num_threads=threads``."""
        try:
            self.interpreter = self.litert.Interpreter(model_path=str(self.path), num_threads=threads)
            self.runner = self.interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as exc:
            raise UnsafeFileError(f"{self.path} is not a loadable TFLite model: {exc}") from None
        self.threads = threads

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        in_details, out_details = self.runner.get_input_details(), self.runner.get_output_details()
        feeds = {}
        for key, array in zip(self.input_keys, arrays, strict=True):
            detail = in_details[key]
            wants_int = np.issubdtype(detail["dtype"], np.integer) and np.issubdtype(array.dtype, np.floating)
            feeds[key] = _quantize(array, detail) if wants_int else array.astype(detail["dtype"], copy=False)
        out = self.runner(**feeds)
        return [_dequantize(out[k], out_details[k]) for k in self.output_keys]

    def _chunked(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return run_chunked(self._invoke, arrays, self.static_batch, pad=True)

    def run_batch(self, batch: Batch) -> Any:
        arrays = [t.numpy() for t in flat_tensors(batch)]
        if len(arrays) != len(self.input_keys):
            raise InvalidConfigError(f"{self.path.name} takes {len(self.input_keys)} inputs, got {len(arrays)}")
        size = arrays[0].shape[0] if arrays[0].ndim else 1
        if size == self.static_batch or self._resizable.get(size) is False:
            outs = self._invoke(arrays) if size == self.static_batch else self._chunked(arrays)
            return pack_outputs(outs)
        try:
            outs = self._invoke(arrays)
            self._resizable[size] = True
        except (RuntimeError, ValueError):  # the graph has this batch size baked in
            self._resizable[size] = False
            self.rebuild(self.threads)
            outs = self._chunked(arrays)
        return pack_outputs(outs)
