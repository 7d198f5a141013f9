"""Profiling a deployed artifact on its own runtime: size, stored weights, latency and metric."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.data import DataSplits, batch_from_inputs, iter_batches, resize_batch
from slimkit.core.errors import InvalidConfigError
from slimkit.core.specs import load_data
from slimkit.measure.latency import DEFAULT_THREADS
from slimkit.measure.metrics import MetricLike, resolve_metric
from slimkit.measure.size import artifact_bytes
from slimkit.runtime.base import Runtime


class RuntimeModule(nn.Module):
    """An ``nn.Module`` view of a runtime, so `slimkit.measure.evaluate` can score an artifact."""

    def __init__(self, runtime: Runtime):
        super().__init__()
        self.runtime = runtime

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> Any:
        return self.runtime.run(*args, **kwargs)


def stored_params(path: Path) -> int | None:
    """Elements of the weights stored in an ``.onnx`` file (initializers); None for other formats."""
    if path.suffix.lower() != ".onnx":
        return None
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(int(torch.Size(init.dims).numel()) for init in model.graph.initializer)


def profile_artifact(
    path: str | os.PathLike[str],
    example_inputs: Any = None,
    data: Iterable[Any] | DataSplits | str | None = None,
    metric: MetricLike | None = None,
    reference: nn.Module | str | None = None,
    batch_sizes: Sequence[int] = (1,),
    threads: int | None = DEFAULT_THREADS,
    budget_s: float = 1.0,
) -> Any:
    """`slimkit.profile` of an ``.onnx`` / ``.pte`` / ``.tflite`` file, run by its own runtime.

    Size is the file's bytes; params are the stored weight elements where the format
    exposes them (ONNX), MACs and peak memory are not measured on artifacts (None).
    Sample inputs: ``example_inputs``, else the first batch of ``data``, else inputs
    synthesized from the artifact's input signature. Timing uses ``threads`` (default 1).
    """
    from slimkit.measure.profile import Profile, measure_metric
    from slimkit.runtime import load

    path = Path(path)
    runtime = load(path, threads=threads)
    if isinstance(data, str):
        data = load_data(data)
    if isinstance(data, DataSplits):
        metric = metric or data.metric
        data = data.test
    if example_inputs is not None:
        batch = batch_from_inputs(example_inputs)
    elif data is not None:
        batch = resize_batch(next(iter_batches(data)), 1)
    else:
        batch = runtime.example
    runtime.run_batch(batch)
    latency = runtime.bench(batch, batch_sizes=batch_sizes, threads=threads, budget_s=budget_s)
    if data is not None and resolve_metric(metric).name == "fidelity" and reference is None:
        raise InvalidConfigError("fidelity of an artifact needs reference=the original model (or its spec)")
    metrics, lower = measure_metric(RuntimeModule(runtime), data, metric, reference)
    params = stored_params(path)
    return Profile(
        name=str(path),
        runtime=runtime.name,
        params=params,
        nonzero_params=params,
        size_bytes=artifact_bytes(path),
        macs=None,
        macs_by_kind={},
        latency=latency,
        peak_memory_bytes=None,
        metrics=metrics,
        threads=runtime.threads_used(threads),
        lower_is_better=lower,
    )
