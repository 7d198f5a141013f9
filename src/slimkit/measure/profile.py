"""`profile`: everything slimkit measures about a model, in one record; `compare` for ratios."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.data import Batch, DataSplits, batch_from_inputs, iter_batches, resize_batch
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.core.io import save
from slimkit.core.record import get_record
from slimkit.core.specs import ARTIFACT_SUFFIXES, load_data, load_model
from slimkit.measure.latency import DEFAULT_THREADS, Latency
from slimkit.measure.macs import count_macs
from slimkit.measure.memory import peak_memory
from slimkit.measure.metrics import MetricLike, evaluate, resolve_metric
from slimkit.measure.params import count_nonzero, count_params
from slimkit.measure.size import artifact_bytes
from slimkit.runtime import TorchRuntime


@dataclass
class Profile:
    """What `profile` measured. Sizes in bytes, latency in milliseconds.

    Attributes:
        name: what was profiled (spec, path or class name).
        runtime: the runtime that ran it.
        params: parameter count; ``nonzero_params`` of them are non-zero.
        size_bytes: bytes of the saved artifact.
        macs: multiply-accumulates of one forward at batch 1 (``macs_by_kind`` splits them).
        latency: per batch size, p50/p90 over timed runs (warm-up excluded).
        peak_memory_bytes: weights + peak activations of one batch-1 forward.
        metrics: ``accuracy``, ``cosine``/``sqnr_db``, or the user metric's value on the data,
            when data was given.
        threads: intra-op threads used while timing (0: the runtime's default).
        lower_is_better: the names in ``metrics`` where a smaller value is better.

    For a deployed artifact (``.onnx``/``.pte``/``.tflite``) ``params`` are the stored weight
    elements where the format exposes them (ONNX) and None otherwise; ``macs`` and
    ``peak_memory_bytes`` are None (not measured on artifacts).
    """

    name: str
    runtime: str
    params: int | None
    nonzero_params: int | None
    size_bytes: int
    macs: int | None
    macs_by_kind: dict[str, int]
    latency: dict[int, Latency]
    peak_memory_bytes: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    threads: int = 1
    lower_is_better: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (latency keyed by batch size as a string)."""
        raw = asdict(self)
        raw["latency"] = {str(k): asdict(v) for k, v in self.latency.items()}
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Profile:
        """Inverse of `to_dict`."""
        fields = {**raw, "latency": {int(k): Latency(**v) for k, v in raw["latency"].items()}}
        return cls(**fields)


@dataclass
class Comparison:
    """Ratios ``after / before`` (below 1 is smaller/faster) and metric differences."""

    before: Profile
    after: Profile
    ratios: dict[str, float]
    metric_deltas: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "ratios": self.ratios,
            "metric_deltas": self.metric_deltas,
        }


def _ratio(after: float | None, before: float | None) -> float:
    return after / before if before and after is not None else float("nan")


def compare(before: Profile, after: Profile) -> Comparison:
    """Compare two profiles: size, params, MACs, memory and per-batch-size latency ratios."""
    ratios = {
        "size": _ratio(after.size_bytes, before.size_bytes),
        "params": _ratio(after.params, before.params),
        "macs": _ratio(after.macs, before.macs),
        "peak_memory": _ratio(after.peak_memory_bytes, before.peak_memory_bytes),
    }
    for bs in sorted(set(before.latency) & set(after.latency)):
        ratios[f"latency_p50_bs{bs}"] = _ratio(after.latency[bs].p50_ms, before.latency[bs].p50_ms)
    deltas = {k: after.metrics[k] - before.metrics[k] for k in before.metrics if k in after.metrics}
    return Comparison(before, after, ratios, deltas)


def _saved_size(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory(prefix="slimkit-size-") as tmp:
        return artifact_bytes(save(model, Path(tmp) / "model", source=get_record(model).source or "unsaved"))


NO_EXAMPLE_INPUTS = (
    "{what} needs sample inputs to run the model: pass data= (its first batch is used; CLI: --data "
    "package.module:function or file.npz) or example_inputs=(tensor,), or give the model an "
    "example_inputs() method"
)


def example_batch(
    model: nn.Module, example_inputs: Any, data: Iterable[Any] | DataSplits | None, what: str = "this"
) -> Batch:
    """Sample inputs for a model: ``example_inputs``, else the first data batch cut to 1 sample
    (the test split of `DataSplits`), else the model's own ``example_inputs()``, else its bundled example's.

    Raises:
        DataError: when none of these is available, saying what to pass.
    """
    if example_inputs is not None:
        return batch_from_inputs(example_inputs)
    if isinstance(data, DataSplits):
        data = data.test
    if data is not None:
        try:
            first = next(iter_batches(data))
        except StopIteration:
            raise DataError(f"{what} got empty data: it needs at least one batch for sample inputs") from None
        return resize_batch(first, 1)
    own = getattr(model, "example_inputs", None)
    if callable(own):
        return batch_from_inputs(own())
    source = get_record(model).source or ""
    if source.startswith("example:"):
        from slimkit import models

        return batch_from_inputs(models.get_example(source.removeprefix("example:")).example_inputs())
    raise DataError(NO_EXAMPLE_INPUTS.format(what=what))


def _reference_for(model: nn.Module) -> nn.Module:
    source = get_record(model).source
    if not source:
        raise InvalidConfigError("fidelity needs a reference model: pass reference=the original model")
    return load_model(source)


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
    if not isinstance(model_or_artifact, nn.Module) and Path(str(model_or_artifact)).suffix in ARTIFACT_SUFFIXES:
        from slimkit.runtime.artifact import profile_artifact

        return profile_artifact(
            model_or_artifact, example_inputs, data, metric, reference, batch_sizes, threads, budget_s
        )
    if isinstance(model_or_artifact, nn.Module):
        model, name = model_or_artifact, type(model_or_artifact).__name__
        size = _saved_size(model)
    else:
        model, name = load_model(model_or_artifact), str(model_or_artifact)
        path = Path(str(model_or_artifact))
        size = artifact_bytes(path) if path.exists() else _saved_size(model)
    model.eval()
    if isinstance(data, str):
        data = load_data(data)
    if isinstance(data, DataSplits):
        metric = metric or data.metric
        data = data.test
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


def measure_metric(
    model: nn.Module, data: Iterable[Any] | None, metric: MetricLike | None, reference: nn.Module | str | None
) -> tuple[dict[str, float], list[str]]:
    """The metric of ``model`` on ``data`` (nothing without data) and the names where lower is better."""
    if data is None:
        return {}, []
    resolved = resolve_metric(metric)
    if resolved.name == "fidelity" and reference is None:
        reference = _reference_for(model)
    if isinstance(reference, (str, os.PathLike)):
        reference = load_model(reference)
    metrics = evaluate(model, data, resolved, reference=reference)
    return metrics, [] if resolved.higher_is_better else [resolved.key]
