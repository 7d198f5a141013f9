"""`profile`: everything slimkit measures about a model, in one record; `compare` for ratios."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.errors import InvalidConfigError
from slimkit.core.io import save
from slimkit.core.record import get_record
from slimkit.core.specs import load_model
from slimkit.measure.latency import Latency
from slimkit.measure.metrics import MetricLike, evaluate, resolve_metric
from slimkit.measure.size import artifact_bytes


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


def saved_size(model: nn.Module) -> int:
    """Bytes of ``model`` saved as a slimkit folder (its weights and index)."""
    with tempfile.TemporaryDirectory(prefix="slimkit-size-") as tmp:
        return artifact_bytes(save(model, Path(tmp) / "model", source=get_record(model).source or "unsaved"))


def _reference_for(model: nn.Module) -> nn.Module:
    source = get_record(model).source
    if not source:
        raise InvalidConfigError("fidelity needs a reference model: pass reference=the original model")
    return load_model(source)


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
