"""The Runtime interface: run a model or artifact on its own runtime, and time it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from slimkit.core.data import Batch, resize_batch
from slimkit.measure.latency import Latency, fixed_threads, measure_latency


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

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model on positional/keyword tensors."""
        return self.run_batch(Batch(args, kwargs))

    def bench(
        self,
        batch: Batch | None = None,
        batch_sizes: Sequence[int] = (1,),
        threads: int | None = None,
        budget_s: float = 1.0,
    ) -> dict[int, Latency]:
        """Latency (p50/p90, warm-up excluded) at each batch size, with ``threads`` fixed.

        Args:
            batch: inputs to tile/cut to each batch size (default: the example inputs).
            batch_sizes: batch sizes to time.
            threads: intra-op threads while timing (None keeps the current setting).
            budget_s: time budget per batch size once the minimum runs are done.
        """
        batch = batch or self.example
        if batch is None:
            from slimkit.core.errors import DataError

            raise DataError("bench needs example inputs: pass a batch or load the runtime with example inputs")
        results = {}
        with fixed_threads(threads):
            for size in batch_sizes:
                sized = resize_batch(batch, size)
                results[size] = measure_latency(lambda b=sized: self.run_batch(b), budget_s=budget_s, sync=self.sync)
        return results
