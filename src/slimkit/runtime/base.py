"""The Runtime interface: run a model or artifact on its own runtime, and time it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from slimkit.core.data import Batch, resize_batch
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.measure.latency import DEFAULT_THREADS, Latency, fixed_threads, measure_latency


class Runtime(ABC):
    """A loaded model on one runtime (PyTorch, onnxruntime, ...).

    Subclasses implement `run_batch`; `run` and `bench` are shared.
    """

    name: str = "runtime"

    def __init__(self, example: Batch | None = None):
        self.example = example

    @abstractmethod
    def run_batch(self, batch: Batch) -> Any:
        """Run one batch and return the output (tensors)."""

    def sync(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Wait for queued device work (CUDA); a no-op on the CPU."""

    def use_threads(self, threads: int | None) -> AbstractContextManager[Any]:
        """A context in which this runtime uses ``threads`` intra-op threads (None: unchanged).

        PyTorch's thread count by default; artifact runtimes override it with their own
        setting (onnxruntime session options, the LiteRT interpreter, the ExecuTorch pool).
        """
        return fixed_threads(threads)

    def threads_used(self, requested: int | None) -> int:
        """The intra-op thread count timing actually runs with when ``requested`` is asked for."""
        import torch

        return requested if requested is not None else torch.get_num_threads()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model on positional/keyword tensors."""
        return self.run_batch(Batch(args, kwargs))

    def bench(
        self,
        batch: Batch | None = None,
        batch_sizes: Sequence[int] = (1,),
        threads: int | None = DEFAULT_THREADS,
        budget_s: float = 1.0,
    ) -> dict[int, Latency]:
        """Latency (p50/p90 and their spread, warm-up excluded) at each batch size, ``threads`` fixed.

        Args:
            batch: inputs to tile/cut to each batch size (default: the example inputs).
            batch_sizes: batch sizes to time.
            threads: intra-op threads while timing (default 1; None keeps the current setting).
            budget_s: time budget per batch size once the minimum runs are done.
        """
        batch = batch or self.example
        if batch is None:
            raise DataError("bench needs example inputs: pass a batch or load the runtime with example inputs")
        results = {}
        with self.use_threads(threads):
            for size in batch_sizes:
                sized = resize_batch(batch, size)
                results[size] = measure_latency(lambda b=sized: self.run_batch(b), budget_s=budget_s, sync=self.sync)
        return results


class SessionRuntime(Runtime):
    """A runtime whose thread count is fixed when its session/interpreter is built.

    Subclasses set ``self.threads`` and implement `rebuild`; `use_threads` rebuilds with
    the requested count for the block and restores the previous session after.
    """

    threads: int | None = None

    def threads_used(self, requested: int | None) -> int:
        """``requested``, else the session's own count (0: the runtime's default)."""
        return requested if requested is not None else (self.threads or 0)

    @abstractmethod
    def rebuild(self, threads: int | None) -> None:
        """Recreate the session/interpreter with ``threads`` intra-op threads and store it."""

    @contextmanager
    def use_threads(self, threads: int | None) -> Iterator[None]:
        """Run the block on a session built with ``threads`` intra-op threads."""
        if threads is None or threads == self.threads:
            yield
            return
        if threads < 1:
            raise InvalidConfigError(f"the number of threads must be >= 1, got {threads}")
        previous = self.threads
        self.rebuild(threads)
        try:
            yield
        finally:
            self.rebuild(previous)
