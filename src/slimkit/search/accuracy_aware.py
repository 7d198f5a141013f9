"""`fallback`: quantize a whole model, keeping in float the fewest layers that meet a metric budget.

Intel Neural Compressor's accuracy-aware tuning, measured rather than estimated:

1. Quantize every layer the method takes and score the model on held-out data. If the
   drop fits the budget, nothing stays in float.
2. Rank the layers: each is quantized alone (every other layer float) and scored; the
   larger its drop, the more it needs float.
3. Find the shortest prefix of that ranking which, kept in float, meets the budget
   (binary search over the prefix length, each probe measured).
4. Shrink it: each layer of the prefix, least sensitive first, goes back to the quantized
   set when the budget still holds without it (measured). No single layer of the result can
   be quantized without breaking the budget.

Scores come from held-out batches (a `DataSplits`' calibration split, never its test split)
and are cached like `sensitivity` rows, so a rerun measures nothing again.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.errors import InvalidConfigError
from slimkit.core.fields import fields_dict
from slimkit.core.outcome import explain
from slimkit.measure.metrics import MetricLike
from slimkit.search.cache import Cache, data_fingerprint, key_of, model_fingerprint
from slimkit.search.sensitivity import Scorer, held_out, worsening

CACHE_VERSION = "fallback-v1"
"""Part of every cache key: bump it when what a cached score means changes."""

ROUNDING = 1e-9
"""Drops this far over the budget still meet it: folding a BatchNorm moves float outputs by ~1e-15."""


@dataclass
class Fallback:
    """What `fallback` kept in float and measured.

    Attributes:
        model: the quantized model, the float layers left as they were.
        float_layers: the layers kept in float, most sensitive first.
        quantized: the layers the method quantized.
        baseline: the original model's metric on the held-out batches.
        metric: the returned model's metric on the same batches.
        drop: its worsening (``baseline - metric`` for higher-is-better metrics).
        full_drop: the worsening with every layer quantized.
        met: whether ``drop`` fits the budget.
        ranking: ``(layer, drop when quantized alone)``, most sensitive first.
        probes: ``(layers kept in float, measured drop)`` for every model assembled.
    """

    model: nn.Module
    float_layers: list[str]
    quantized: list[str]
    baseline: float
    metric: float
    drop: float
    full_drop: float
    met: bool
    ranking: list[tuple[str, float]] = field(default_factory=list)
    probes: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the model)."""
        return fields_dict(
            self,
            exclude=["model"],
            ranking=[list(r) for r in self.ranking],
            probes=[[list(layers), drop] for layers, drop in self.probes],
        )


def _literal(name: str) -> str:
    """``name`` as an `fnmatch` pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


class _Builder:
    """Quantizes the model with a set of layers kept in float and scores it (cached)."""

    def __init__(
        self, model: nn.Module, method: str, options: dict[str, Any], batches: Iterable[Any], scorer: Scorer,
        cache: Cache, max_batches: int | None, device: str,
    ) -> None:  # fmt: skip
        self.model, self.method, self.options, self.batches = model, method, options, batches
        self.scorer, self.cache, self.device = scorer, cache, device
        self.prefix = (
            CACHE_VERSION, model_fingerprint(model), data_fingerprint(batches, max_batches), scorer.metric.spec,
            method, repr(sorted(options.items())),
        )  # fmt: skip
        self.baseline = self._cached("baseline", lambda: scorer(model))
        self.probes: list[tuple[tuple[str, ...], float]] = []

    def build(self, keep: Sequence[str] = (), only: str | None = None) -> nn.Module:
        """The model quantized by the method, ``keep`` left in float (or only ``only`` quantized)."""
        import slimkit as sk

        options = dict(self.options)
        overrides = {_literal(name): None for name in keep}
        options["overrides"] = overrides | dict(options.get("overrides") or {})
        if only is not None:
            options["include"] = _literal(only)
        with warnings.catch_warnings():
            if keep or only is not None:  # the full build already warned of what the method skips
                warnings.simplefilter("ignore")
            return sk.quantize(self.model, self.method, data=self.batches, device=self.device, **options)

    def drop(self, keep: Sequence[str] = (), only: str | None = None, built: nn.Module | None = None) -> float:
        """The measured worsening of ``build(keep, only)`` (``built``: that model, already built)."""
        label = f"only {only}" if only is not None else "float " + ",".join(sorted(keep))
        value = self._cached(label, lambda: self.scorer(built if built is not None else self.build(keep, only)))
        drop = worsening(self.scorer.metric, self.baseline, value)
        if only is None and (tuple(keep), drop) not in self.probes:
            self.probes.append((tuple(keep), drop))
        return drop

    def _cached(self, label: str, measure: Any) -> float:
        key = key_of(*self.prefix, label)
        row = self.cache.get(key)
        if row is None:
            row = {"metric": float(measure())}
            self.cache.put(key, row)
        return row["metric"]


def _shortest_prefix(order: list[str], fits: Any) -> int:
    """The smallest ``k`` with ``fits(order[:k])``, by binary search (``len(order)`` fits by assumption)."""
    low, high = 0, len(order)
    while low < high:
        middle = (low + high) // 2
        if fits(order[:middle]):
            high = middle
        else:
            low = middle + 1
    return low


def fallback(
    model: nn.Module,
    data: Iterable[Any] | DataSplits,
    *,
    max_metric_drop: float,
    method: str = "int8-static",
    metric: MetricLike | None = None,
    max_batches: int | None = None,
    cache: Cache | str | os.PathLike[str] | None = None,
    device: str = "auto",
    **options: Any,
) -> Fallback:
    """Quantize ``model`` with ``method``, keeping in float the fewest layers that meet the budget.

    Args:
        model: the float model (not modified).
        data: a `DataSplits` (its calibration split calibrates and scores, never its test
            split) or held-out batches.
        max_metric_drop: the largest allowed measured worsening, in the metric's units
            (accuracy as a fraction, cosine for fidelity).
        method: a layer-wise quantization method (``int8-static``, ``int8-dynamic``,
            ``weight-only``...).
        metric: what judges the model (default: the data's own, else accuracy).
        max_batches: score on at most this many batches (default: all).
        cache: a `Cache`, or a folder to keep scores in across runs (default: this call only).
        device: where the quantization runs.
        **options: the method's options (``observer="percentile"``, ``bits=4``, ``overrides``...).

    Returns:
        A `Fallback`; ``sk.explain(result.model).skipped`` lists the float layers too.

    Raises:
        InvalidConfigError: a negative budget, a method that quantizes no layer, or a budget
            that is not met even with every layer in float (a metric that is not deterministic).
    """
    if max_metric_drop < 0:
        raise InvalidConfigError(f"max_metric_drop must be >= 0, got {max_metric_drop}")
    batches, data_metric = held_out(data)
    scorer = Scorer(model, batches, metric or data_metric, max_batches)
    store = cache if isinstance(cache, Cache) else Cache(cache)
    builder = _Builder(model, method, options, batches, scorer, store, max_batches, device)
    full = builder.build()
    layers = list(explain(full).details.get("layers", {}))
    if not layers:
        raise InvalidConfigError(f"{method} quantizes no layer of {type(model).__name__}: nothing to fall back from")
    full_drop = builder.drop(built=full)

    def fits(keep: Sequence[str]) -> bool:
        return builder.drop(keep) <= max_metric_drop + ROUNDING

    ranking: list[tuple[str, float]] = []
    keep: list[str] = []
    if full_drop > max_metric_drop + ROUNDING:
        ranking = sorted(((name, builder.drop(only=name)) for name in layers), key=lambda r: -r[1])
        order = [name for name, _ in ranking]
        if not fits(order):
            raise InvalidConfigError(
                f"the metric drops by {builder.drop(order):.4g} even with every layer in float (what the "
                f"method does besides quantizing, e.g. folding BatchNorms, or a metric that is not "
                f"deterministic): raise max_metric_drop above it"
            )
        keep = order[: _shortest_prefix(order, fits)]
        for name in reversed(list(keep)):
            if fits([k for k in keep if k != name]):
                keep.remove(name)
    final = builder.build(keep) if keep else full
    drop = builder.drop(keep, built=final)
    return Fallback(
        model=final,
        float_layers=keep,
        quantized=[name for name in layers if name not in keep],
        baseline=builder.baseline,
        metric=builder.baseline - drop if scorer.metric.higher_is_better else builder.baseline + drop,
        drop=drop,
        full_drop=full_drop,
        met=drop <= max_metric_drop + ROUNDING,
        ranking=ranking,
        probes=builder.probes,
    )
