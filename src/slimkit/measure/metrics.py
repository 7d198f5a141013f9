"""Quality metrics: top-1 accuracy, fidelity to a reference (cosine, SQNR in dB), or the user's own.

All reductions run in float64; `evaluate` accumulates sums over batches so that the
result equals the metric over the whole data set, whatever the batching. A user metric
is a function ``fn(outputs, targets) -> float`` called once on the whole split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.core.data import iter_batches, primary_output, run_model
from slimkit.core.errors import DataError, InvalidConfigError

METRICS = ("accuracy", "fidelity")
"""Built-in metric names; any ``fn(outputs, targets) -> float`` (or ``"package.module:function"``) works too."""


@dataclass(frozen=True)
class Metric:
    """How a model's quality is judged.

    Attributes:
        name: the key the value is reported under (``accuracy``; ``fidelity`` reports
            ``cosine`` and ``sqnr_db``; a user metric its function's name).
        fn: ``fn(outputs, targets) -> float`` over the whole split, None for the built-ins.
        higher_is_better: the direction budgets and comparisons use.
    """

    name: str
    fn: Callable[[Any, Any], float] | None = None
    higher_is_better: bool = True

    @property
    def key(self) -> str:
        """The entry of `evaluate`'s result that budgets and model selection read."""
        return "cosine" if self.name == "fidelity" else self.name

    @property
    def spec(self) -> str:
        """A readable name: the built-in's, else ``module:function``."""
        if self.fn is None:
            return self.name
        return f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', self.name)}"


MetricLike = str | Callable[[Any, Any], float] | Metric
"""What ``metric=`` accepts everywhere: a name, a ``"package.module:function"`` spec, a function or a `Metric`."""


def resolve_metric(metric: MetricLike | None, higher_is_better: bool | None = None) -> Metric:
    """The one place a ``metric=`` argument becomes a `Metric`.

    Direction: ``higher_is_better`` when given, else the function's own
    ``higher_is_better`` attribute, else higher is better.

    Args:
        metric: ``"accuracy"``, ``"fidelity"``, ``"package.module:function"``, a function
            ``fn(outputs, targets) -> float``, or a `Metric` (None: accuracy).
        higher_is_better: the direction, overriding the function's attribute.

    Raises:
        InvalidConfigError: an unknown name, or a spec that does not import.
    """
    if isinstance(metric, Metric):
        if metric.fn is None and metric.name not in METRICS:
            raise InvalidConfigError(f"Metric {metric.name!r} needs fn=: only {', '.join(METRICS)} are built in")
        if higher_is_better is None or higher_is_better == metric.higher_is_better:
            return metric
        return Metric(metric.name, metric.fn, higher_is_better)
    if metric is None or metric in METRICS:
        if higher_is_better is False:
            raise InvalidConfigError(f"metric {metric or 'accuracy'!r} is higher-is-better; it cannot be reversed")
        return Metric(metric or "accuracy")
    if isinstance(metric, str):
        if ":" not in metric:
            raise InvalidConfigError(
                f"unknown metric {metric!r}; valid: {', '.join(METRICS)}, or package.module:function "
                "naming a function fn(outputs, targets) -> float"
            )
        from slimkit.core.specs import _import_attr

        metric = _import_attr(metric, "metric")
    if not callable(metric):
        raise InvalidConfigError(f"metric must be a name or a function fn(outputs, targets) -> float, got {metric!r}")
    name = getattr(metric, "__name__", None) or type(metric).__name__
    if name in METRICS or name in ("cosine", "sqnr_db", "<lambda>"):
        name = "metric" if name == "<lambda>" else f"user_{name}"
    direction = higher_is_better if higher_is_better is not None else getattr(metric, "higher_is_better", True)
    return Metric(name, metric, bool(direction))


def _correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correct top-1 predictions, predictions) for logits (..., C) and class indices (...)."""
    if targets.shape == logits.shape and logits.dim() > 1:
        targets = targets.argmax(-1)
    if targets.shape != logits.shape[:-1]:
        raise DataError(
            f"targets of shape {tuple(targets.shape)} do not fit logits of shape {tuple(logits.shape)}: "
            "give one class index per row of logits"
        )
    return int((logits.argmax(-1) == targets).sum()), targets.numel()


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of ``logits`` (..., C) against class indices ``targets`` (...),
    or against one-hot / probability targets of the logits' shape."""
    correct, total = _correct(logits, targets)
    if total == 0:
        raise DataError("cannot compute accuracy over zero samples")
    return correct / total


def _pair(ref: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors as float64 (samples, features)."""
    if ref.shape != out.shape:
        raise DataError(f"outputs of shape {tuple(out.shape)} do not match the reference's {tuple(ref.shape)}")
    rows = ref.shape[0] if ref.dim() else 1
    return ref.detach().double().reshape(rows, -1), out.detach().double().reshape(rows, -1)


def _sample_cosines(ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Cosine per sample; two all-zero samples are identical (1), one all-zero is 0."""
    ref, out = _pair(ref, out)
    norms = ref.norm(dim=1) * out.norm(dim=1)
    both_zero = (ref.abs().sum(1) == 0) & (out.abs().sum(1) == 0)
    cosine = (ref * out).sum(1) / norms.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(both_zero, torch.ones_like(cosine), cosine)


def _signal_noise(ref: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    ref, out = _pair(ref, out)
    return float(ref.square().sum()), float((ref - out).square().sum())


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else 10 * math.log10(signal / noise)


def cosine_similarity(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Mean over samples (first dimension) of the cosine between flattened features."""
    return float(_sample_cosines(ref, out).mean())


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(Σ ref² / Σ (ref - out)²)``; +inf if equal."""
    return _sqnr_db(*_signal_noise(ref, out))


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put every module in eval mode for the block, restoring each one's flag after."""
    flags = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _device_of(model: nn.Module) -> torch.device:
    first = next(iter((*model.parameters(), *model.buffers())), None)
    return first.device if first is not None else torch.device("cpu")


def _joined(parts: list[Any]) -> Any:
    """Batches' tensors joined along the first dimension; the list itself when shapes differ."""
    if parts and all(isinstance(p, torch.Tensor) for p in parts):
        try:
            return torch.cat([p if p.dim() else p.reshape(1) for p in parts])
        except RuntimeError:
            return parts
    return parts


def _user_metric(model: nn.Module, data: Iterable[Any], metric: Metric, device: Any, limit: int | None) -> float:
    outputs, targets = [], []
    for batch in iter_batches(data, device, limit):
        outputs.append(primary_output(run_model(model, batch)).detach().cpu())
        targets.append(batch.target.detach().cpu() if isinstance(batch.target, torch.Tensor) else batch.target)
    if not outputs:
        raise DataError(f"metric {metric.name!r} got no batches: the data is empty")
    given = None if all(t is None for t in targets) else _joined(targets)
    try:
        value = metric.fn(_joined(outputs), given)  # type: ignore[misc]
    except Exception as exc:
        raise DataError(f"metric {metric.spec} failed on the model's outputs: {type(exc).__name__}: {exc}") from exc
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"metric {metric.spec} must return a number, got {type(value).__name__}") from None


def evaluate(
    model: nn.Module,
    data: Iterable[Any],
    metric: MetricLike,
    reference: nn.Module | None = None,
    device: torch.device | str | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """Compute ``metric`` over ``data`` with the model in eval mode and no-grad.

    Args:
        model: the model to evaluate (its train/eval flags are restored afterwards).
        data: any data `iter_batches` reads.
        metric: ``"accuracy"`` -> ``{"accuracy"}`` (needs targets); ``"fidelity"`` ->
            ``{"cosine", "sqnr_db"}`` of the model's outputs against ``reference``'s; a
            function ``fn(outputs, targets) -> float`` (or its ``package.module:function``
            spec, or a `Metric`) -> ``{its name: fn(all outputs, all targets)}``, outputs and
            targets of the whole split joined along the first dimension (lists when their
            shapes differ; targets None when the data has none).
        reference: the model to compare with, for ``"fidelity"``.
        device: where batches go; by default the model's device. Models are not moved.
        limit: evaluate at most this many batches.

    Raises:
        InvalidConfigError: for an unknown metric, or ``"fidelity"`` without a reference.
        DataError: for ``"accuracy"`` on batches without targets, unusable data, or a
            user metric that fails.
    """
    resolved = resolve_metric(metric)
    if resolved.fn is not None:
        with torch.no_grad(), eval_mode(model):
            return {resolved.name: _user_metric(model, data, resolved, device or _device_of(model), limit)}
    metric = resolved.name
    if metric == "fidelity" and reference is None:
        raise InvalidConfigError("metric 'fidelity' compares against a reference model: pass reference=...")
    models = (model,) if reference is None else (model, reference)
    sums = dict.fromkeys(("correct", "total", "cosine", "samples", "signal", "noise"), 0.0)
    with torch.no_grad(), eval_mode(*models):
        for batch in iter_batches(data, device or _device_of(model), limit):
            out = primary_output(run_model(model, batch))
            if metric == "accuracy":
                if batch.target is None:
                    raise DataError(
                        "metric 'accuracy' needs targets: give (inputs, targets) batches, "
                        "or use metric 'fidelity' with a reference model"
                    )
                correct, total = _correct(out, batch.target)
                sums["correct"] += correct
                sums["total"] += total
            else:
                ref = primary_output(run_model(reference, batch))
                cosines = _sample_cosines(ref, out)
                signal, noise = _signal_noise(ref, out)
                sums["cosine"] += float(cosines.sum())
                sums["samples"] += cosines.numel()
                sums["signal"] += signal
                sums["noise"] += noise
    if metric == "accuracy":
        return {"accuracy": sums["correct"] / sums["total"]}
    return {"cosine": sums["cosine"] / sums["samples"], "sqnr_db": _sqnr_db(sums["signal"], sums["noise"])}
