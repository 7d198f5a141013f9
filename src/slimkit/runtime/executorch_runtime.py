"""ExecuTorch: run and time a ``.pte`` program (XNNPACK-delegated where it was lowered)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimkit.core.data import Batch
from slimkit.core.errors import DataError, InvalidConfigError, UnsafeFileError, require
from slimkit.runtime.base import Runtime
from slimkit.runtime.inputs import InputSpec, flat_tensors, pack_outputs, run_chunked, synthetic_batch

# ExecuTorch ScalarType codes (as in c10) -> numpy dtypes
_DTYPES = {6: np.float32, 5: np.float16, 7: np.float64, 4: np.int64, 3: np.int32, 1: np.int8, 0: np.uint8, 11: np.bool_}


def load_quantized_kernels() -> None:
    """Register ExecuTorch's quantized kernels (``quantize_per_tensor.out`` and friends) with
    both the exporter and the runtime of this process: a program whose quantize/dequantize
    nodes XNNPACK did not absorb (slimkit's int8 layers) needs them to lower and to load."""
    require("executorch.kernels.quantized", "executorch")


def _pybindings() -> Any:
    return require("executorch.extension.pybindings.portable_lib", "executorch")


class ExecuTorchRuntime(Runtime):
    """A ``.pte`` program's ``forward`` method, run by the ExecuTorch runtime.

    Args:
        path: the ``.pte`` file.
        example: default inputs for `bench` (default: synthesized from the method's metadata).
        method: the program method to run.
        threads: accepted like the other artifact runtimes' (their default thread count); the
            ExecuTorch pool is sized once per process, so timing reports the size it really
            used (`threads_used`).
    """

    name = "executorch"

    def __init__(
        self,
        path: str | os.PathLike[str],
        example: Batch | None = None,
        method: str = "forward",
        threads: int | None = None,
    ):
        self.threads = threads
        runtime = require("executorch.runtime", "executorch").Runtime.get()
        load_quantized_kernels()
        self.path = Path(path)
        try:
            program = runtime.load_program(self.path)
            self.method = program.load_method(method)
        except Exception as exc:  # the runtime raises RuntimeError/ValueError for bad programs
            raise UnsafeFileError(f"{self.path} is not a loadable ExecuTorch program: {exc}") from None
        if self.method is None:
            raise InvalidConfigError(f"{self.path} has no method {method!r}")
        meta = self.method.metadata
        self.inputs = [self._spec(i, meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
        # each input's memory-planned largest shape
        self.bounds = [tuple(int(n) for n in meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
        self.max_batch = self.bounds[0][0] if self.bounds and self.bounds[0] else 1
        super().__init__(example if example is not None else synthetic_batch(self.inputs))

    @staticmethod
    def _spec(index: int, info: Any) -> InputSpec:
        dtype = np.dtype(_DTYPES.get(int(info.dtype()), np.float32))
        return InputSpec(f"input_{index}", (1, *tuple(info.sizes())[1:]), dtype)

    def run_batch(self, batch: Batch) -> Any:
        inputs = flat_tensors(batch)
        if len(inputs) != len(self.inputs):
            raise InvalidConfigError(f"{self.path.name} takes {len(self.inputs)} inputs, got {len(inputs)}")
        self._check_bounds(inputs)
        cast = [t.to(torch.from_numpy(np.zeros((), s.dtype)).dtype) for t, s in zip(inputs, self.inputs, strict=True)]
        if cast and cast[0].dim() and cast[0].shape[0] > self.max_batch:
            return pack_outputs(run_chunked(self._execute, cast, self.max_batch, pad=False))
        return pack_outputs(self._execute(cast))

    def _check_bounds(self, inputs: list[torch.Tensor]) -> None:
        """Refuse an input larger than planned past the batch dimension (which runs in slices)."""
        for index, (tensor, bound) in enumerate(zip(inputs, self.bounds, strict=True)):
            d = next((d for d in range(1, min(tensor.dim(), len(bound))) if tensor.shape[d] > bound[d]), None)
            if d is not None:
                raise DataError(
                    f"input {index} of {self.path.name} is {tensor.shape[d]} long along dimension {d}, but the "
                    f"program was exported for at most {bound[d]}: cut the input, or export again with a larger "
                    "bound (max_sequence for token inputs)"
                )

    def _execute(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [o.clone() for o in self.method.execute(inputs)]

    @contextmanager
    def use_threads(self, threads: int | None) -> Iterator[None]:
        """ExecuTorch's CPU thread pool (used by XNNPACK) is sized once per process; resizing it
        while programs are loaded crashes the runtime (seen with executorch 1.5.1), so a different
        count is reported with a warning and timing runs on the pool as it is."""
        if threads is not None and threads < 1:
            raise InvalidConfigError(f"the number of threads must be >= 1, got {threads}")
        if threads is not None and threads != self.pool_threads():
            warnings.warn(
                f"ExecuTorch's thread pool has {self.pool_threads()} threads and cannot be resized safely; "
                f"timing with those instead of {threads}",
                stacklevel=3,
            )
        yield

    def threads_used(self, requested: int | None) -> int:
        """The pool's size, whatever was requested (see `use_threads`)."""
        return self.pool_threads()

    @staticmethod
    def pool_threads() -> int:
        """Threads in ExecuTorch's CPU pool now."""
        return int(_pybindings()._threadpool_get_thread_count())
