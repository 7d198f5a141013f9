"""onnxruntime: run and time an ``.onnx`` file (CPU; CUDA / TensorRT execution providers when present)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.core.data import Batch
from slimkit.core.errors import InvalidConfigError, UnsafeFileError, require
from slimkit.runtime.base import SessionRuntime
from slimkit.runtime.inputs import InputSpec, flat_tensors, pack_outputs, synthetic_batch

_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def default_providers() -> list[str]:
    """TensorRT, CUDA and CPU execution providers, those this onnxruntime build has, in that order."""
    available = require("onnxruntime", "onnx").get_available_providers()
    return [p for p in PREFERRED_PROVIDERS if p in available]


class OnnxRuntime(SessionRuntime):
    """An ``.onnx`` file in an ``onnxruntime.InferenceSession``.

    Args:
        path: the ``.onnx`` file.
        example: default inputs for `bench` (default: synthesized from the graph's inputs).
        providers: execution providers (default: `default_providers`).
        threads: intra-op threads of the session (None: onnxruntime's default, all cores).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        example: Batch | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ):
        self.ort = require("onnxruntime", "onnx")
        self.path = Path(path)
        available = self.ort.get_available_providers()
        self.providers = list(providers) if providers else default_providers()
        unknown = [p for p in self.providers if p not in available]
        if unknown:
            raise InvalidConfigError(f"execution providers {unknown} are missing; this onnxruntime has {available}")
        self.threads = threads
        self.session = self._session(threads)
        inputs = self.session.get_inputs()
        self.inputs = [
            InputSpec(i.name, tuple(d if isinstance(d, int) else 1 for d in i.shape), _TYPES.get(i.type, np.float32))
            for i in inputs
        ]
        super().__init__(example if example is not None else synthetic_batch(self.inputs))
        if "CPUExecutionProvider" not in self.providers[:1]:
            self.name = f"onnxruntime[{self.providers[0].removesuffix('ExecutionProvider')}]"

    def _session(self, threads: int | None) -> Any:
        options = self.ort.SessionOptions()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            return self.ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise UnsafeFileError(f"{self.path} is not a valid ONNX model for onnxruntime: {exc}") from None

    def feeds(self, batch: Batch) -> dict[str, np.ndarray]:
        """The session's input dict: keyword inputs by name, positional ones in order."""
        names = [spec.name for spec in self.inputs]
        by_name = {k: v for k, v in batch.kwargs.items() if k in names}
        tensors = flat_tensors(Batch(batch.args, {k: v for k, v in batch.kwargs.items() if k not in by_name}))
        free = [n for n in names if n not in by_name]
        if len(tensors) + len(by_name) != len(names):
            raise InvalidConfigError(
                f"{self.path.name} takes inputs {names} but got {len(tensors) + len(by_name)} ({batch.shapes()})"
            )
        feeds = {n: t.cpu().numpy() for n, t in by_name.items()}
        feeds.update({n: t.numpy() for n, t in zip(free, tensors, strict=True)})
        return {spec.name: feeds[spec.name].astype(spec.dtype, copy=False) for spec in self.inputs}

    def run_batch(self, batch: Batch) -> Any:
        return pack_outputs(self.session.run(None, self.feeds(batch)))

    def rebuild(self, threads: int | None) -> None:
        """A new session with ``intra_op_num_threads=threads``."""
        self.session, self.threads = self._session(threads), threads
