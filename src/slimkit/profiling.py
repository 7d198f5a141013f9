"""`profile`: measure a model or a deployed artifact on its runtime.

It sits above the runtimes (it runs models through `TorchRuntime` and artifacts through
their own runtime); the figures themselves come from `slimkit.measure`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.data import DataSplits, batch_from_inputs, iter_batches, resize_batch
from slimkit.core.errors import InvalidConfigError
from slimkit.core.samples import example_batch
from slimkit.core.specs import ARTIFACT_SUFFIXES, load_data, load_model
from slimkit.measure.latency import DEFAULT_THREADS
from slimkit.measure.macs import count_macs
from slimkit.measure.memory import peak_memory
from slimkit.measure.metrics import MetricLike, resolve_metric
from slimkit.measure.params import count_nonzero, count_params
from slimkit.measure.profile import Profile, measure_metric, saved_size
from slimkit.measure.size import artifact_bytes
from slimkit.runtime import TorchRuntime, load
from slimkit.runtime.artifact import RuntimeModule, stored_params


def profile(
    model_or_artifact: nn.Module | str | os.PathLike[str],
    example_inputs: Any = None,
    data: Iterable[Any] | DataSplits | str | None = None,
    metric: MetricLike | None = None,
    reference: nn.Module | str | None = None,
    batch_sizes: Sequence[int] = (1,),
    threads: int | None = DEFAULT_THREADS,
    budget_s: float = 1.0,
) -> Profile:
    """Measure a model or saved artifact: params, size, MACs, latency, memory and metric.

    Args:
        model_or_artifact: a module, a model spec, a saved slimkit folder, or a deployed
            ``.onnx``/``.pte``/``.tflite`` file (profiled on its own runtime).
        example_inputs: inputs for MACs/latency (default: first data batch, the model's
            own ``example_inputs()``, or its bundled example's).
        data: held-out data (iterable, `DataSplits` -> its test split, or a data spec).
        metric: ``"accuracy"``, ``"fidelity"``, a function ``fn(outputs, targets) -> float``,
            its ``"package.module:function"`` spec or a `Metric` (default: the data's own,
            else accuracy); see `slimkit.measure.metrics.resolve_metric`.
        reference: the model fidelity is measured against (default: rebuilt from the
            model's source spec).
        batch_sizes: batch sizes to time.
        threads: intra-op threads while timing: 1 unless told otherwise (None: whatever
            the runtime uses now, usually every core -- noisy on a shared machine).
        budget_s: timing budget per batch size (timing stops earlier once p90/p50 settles).
    """
    if any(not isinstance(b, int) or b < 1 for b in batch_sizes) or not batch_sizes:
        raise InvalidConfigError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    if isinstance(data, str):
        data = load_data(data)
    if isinstance(data, DataSplits):
        metric = metric or data.metric
        data = data.test
    timing = (batch_sizes, threads, budget_s)
    if not isinstance(model_or_artifact, nn.Module) and Path(str(model_or_artifact)).suffix in ARTIFACT_SUFFIXES:
        return _profile_artifact(Path(str(model_or_artifact)), example_inputs, data, metric, reference, timing)
    if isinstance(model_or_artifact, nn.Module):
        model, name = model_or_artifact, type(model_or_artifact).__name__
        size = saved_size(model)
    else:
        model, name = load_model(model_or_artifact), str(model_or_artifact)
        path = Path(str(model_or_artifact))
        size = artifact_bytes(path) if path.exists() else saved_size(model)
    model.eval()
    batch = example_batch(model, example_inputs, data, "profile")
    runtime = TorchRuntime(model, batch)
    runtime.run_batch(batch)  # one clear error early if the model can't run the inputs
    macs = count_macs(model, batch)
    latency = runtime.bench(batch_sizes=batch_sizes, threads=threads, budget_s=budget_s)
    used_threads = runtime.threads_used(threads)
    memory = peak_memory(model, batch)
    metrics, lower = measure_metric(model, data, metric, reference)
    return Profile(
        name=name,
        runtime=runtime.name,
        params=count_params(model),
        nonzero_params=count_nonzero(model),
        size_bytes=size,
        macs=macs.total,
        macs_by_kind=dict(macs.by_kind),
        latency=latency,
        peak_memory_bytes=memory,
        metrics=metrics,
        threads=used_threads,
        lower_is_better=lower,
    )


def _profile_artifact(
    path: Path,
    example_inputs: Any,
    data: Iterable[Any] | None,
    metric: MetricLike | None,
    reference: nn.Module | str | None,
    timing: tuple[Sequence[int], int | None, float],
) -> Profile:
    """`profile` of an ``.onnx`` / ``.pte`` / ``.tflite`` file, run by its own runtime.

    Size is the file's bytes; params are the stored weight elements where the format
    exposes them (ONNX), MACs and peak memory are not measured on artifacts (None).
    Sample inputs: ``example_inputs``, else the first batch of ``data``, else inputs
    synthesized from the artifact's input signature.
    """
    batch_sizes, threads, budget_s = timing
    runtime = load(path, threads=threads)
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
