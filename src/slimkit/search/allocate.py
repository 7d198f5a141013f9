"""`allocate`: one setting per layer from a sensitivity table, meeting a budget on measured figures.

The plan comes from an exact multiple-choice knapsack over the table (`knapsack.choose`):
the smallest model whose *predicted* drop (the sum of the per-layer drops) fits the budget,
or the least predicted drop at a target size. The assembled model is then measured on the
held-out data, and while its *measured* drop breaks the budget the most sensitive chosen
setting (ties: the one saving most) is made one step safer (more bits, a lower pruning
ratio, then unchanged), as Intel Neural Compressor's accuracy-aware tuning does. Every step
is measured and listed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.errors import InvalidConfigError
from slimkit.core.io import save
from slimkit.measure.macs import count_macs
from slimkit.measure.metrics import MetricLike
from slimkit.measure.size import artifact_bytes
from slimkit.search.candidates import Setting, apply_settings, plan_stages
from slimkit.search.knapsack import choose
from slimkit.search.sensitivity import Row, Scorer, SensitivityTable, held_out, sample_inputs, worsening


@dataclass
class Allocation:
    """What `allocate` chose and measured.

    Attributes:
        settings: the chosen setting per changed layer or group.
        model: the assembled model.
        predicted_drop: the sum of the chosen rows' drops.
        baseline: the original model's metric on the held-out data.
        metric: the assembled model's metric on the same data.
        drop: the measured worsening (``baseline - metric`` for higher-is-better metrics).
        original_bytes: the original model saved with `slimkit.save`, in bytes.
        size_bytes: the assembled model saved the same way.
        met: whether the measured figures meet the budget.
        fallback: the settings made safer after measuring, in order (``old -> new``).
        macs_ratio: measured ``MACs after / before`` on one sample input (``max_macs_ratio`` only).
    """

    settings: list[Setting]
    model: nn.Module
    predicted_drop: float
    baseline: float
    metric: float
    drop: float
    original_bytes: int
    size_bytes: int
    met: bool
    fallback: list[str] = field(default_factory=list)
    macs_ratio: float | None = None

    @property
    def size_ratio(self) -> float:
        """``size_bytes / original_bytes``."""
        return self.size_bytes / self.original_bytes

    def stages(self) -> list[dict[str, Any]]:
        """The plan as recipe stages (``[{"prune": {...}}, {"quantize": {...}}]``)."""
        return [{verb: options} for verb, options in plan_stages(self.settings)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the model)."""
        return {
            "settings": [s.key for s in self.settings],
            "stages": self.stages(),
            "predicted_drop": self.predicted_drop,
            "baseline": self.baseline,
            "metric": self.metric,
            "drop": self.drop,
            "original_bytes": self.original_bytes,
            "size_bytes": self.size_bytes,
            "size_ratio": self.size_ratio,
            "met": self.met,
            "fallback": self.fallback,
            "macs_ratio": self.macs_ratio,
        }


MACS_REPLANS = 4
"""Re-plans at most under ``max_macs_ratio`` when the measured MACs break it."""


def saved_bytes(model: nn.Module) -> int:
    """Bytes of ``model`` saved with `slimkit.save` (what a user ships)."""
    with tempfile.TemporaryDirectory(prefix="slimkit-search-") as tmp:
        return artifact_bytes(save(model, Path(tmp) / "model", source="unsaved"))


def plan(
    table: SensitivityTable,
    *,
    max_metric_drop: float | None = None,
    max_size_ratio: float | None = None,
    max_macs_ratio: float | None = None,
) -> list[Row]:
    """The rows of the optimal plan for one budget, from the table's predictions only.

    Args:
        table: what `sensitivity` measured.
        max_metric_drop: the largest summed predicted drop (the bytes saved are maximised).
        max_size_ratio: the largest predicted ``bytes after / bytes before`` (the drop is
            minimised); sizes are the table's weight and buffer bytes.
        max_macs_ratio: the largest predicted ``MACs after / MACs before`` (the drop is
            minimised); MACs are the table's, on one sample input.

    Raises:
        InvalidConfigError: not exactly one budget, or a size or MACs no plan reaches.
    """
    for name, ratio in (("max_size_ratio", max_size_ratio), ("max_macs_ratio", max_macs_ratio)):
        if ratio is not None and not 0 < ratio <= 1:
            raise InvalidConfigError(f"{name} must be in (0, 1], got {ratio}")
    if max_size_ratio is not None and max_macs_ratio is not None:
        raise InvalidConfigError("give one budget: max_metric_drop, max_size_ratio or max_macs_ratio")
    slots = list(table.slots().values())
    by_macs = max_macs_ratio is not None
    options = [[(r.drop, float(r.macs_saved if by_macs else r.bytes_saved)) for r in rows] for rows in slots]
    ratio, whole = (max_macs_ratio, table.model_macs) if by_macs else (max_size_ratio, table.model_bytes)
    min_saved = None if ratio is None else whole * (1 - ratio)
    chosen = choose(options, max_drop=max_metric_drop, min_saved=min_saved)
    return [rows[j] for rows, j in zip(slots, chosen, strict=True) if j is not None]


def _safer(table: SensitivityTable, row: Row) -> Row | None:
    """The next less aggressive row of the same slot (saves less), or None: leave the slot unchanged."""
    milder = [r for r in table.slots()[row.setting.slot] if r.bytes_saved < row.bytes_saved]
    return max(milder, key=lambda r: r.bytes_saved, default=None)


def allocate(
    model: nn.Module,
    data: Iterable[Any] | DataSplits,
    table: SensitivityTable,
    *,
    max_metric_drop: float | None = None,
    max_size_ratio: float | None = None,
    max_macs_ratio: float | None = None,
    metric: MetricLike | None = None,
    max_batches: int | None = None,
    example_inputs: Any = None,
    device: str = "auto",
) -> Allocation:
    """Choose one setting per layer for a budget, assemble the model and check it measured.

    Args:
        model: the original model (not modified); the one `table` was measured on.
        data: a `DataSplits` (its calibration split is used) or held-out batches.
        table: what `sensitivity` measured on ``model``.
        max_metric_drop: the largest allowed measured drop, in the metric's units; the
            most sensitive settings fall back until the measured drop fits.
        max_size_ratio: instead, the largest predicted size ratio; the least predicted
            drop that reaches it is chosen (measured and reported, no fallback).
        max_macs_ratio: instead, the largest MACs ratio (on one sample input), the same way.
        metric: what judges the model (default: the data's own, else accuracy).
        max_batches: measure on at most this many batches (default: all).
        example_inputs: inputs for tracing (default: one sample of the data).
        device: where the verbs run.

    Raises:
        InvalidConfigError: not exactly one budget, or an unreachable size.
    """
    rows = plan(table, max_metric_drop=max_metric_drop, max_size_ratio=max_size_ratio, max_macs_ratio=max_macs_ratio)
    batches, data_metric = held_out(data)
    scorer = Scorer(model, batches, metric or data_metric, max_batches)
    baseline = scorer(model)
    original_bytes = saved_bytes(model)
    steps: list[str] = []

    def assemble(chosen: list[Row]) -> tuple[nn.Module, float]:
        built = apply_settings(
            model, [r.setting for r in chosen], data=batches, example_inputs=example_inputs, device=device
        )
        return built, scorer(built)

    built, value = assemble(rows)
    drop = worsening(scorer.metric, baseline, value)
    while max_metric_drop is not None and drop > max_metric_drop and rows:
        worst = max(rows, key=lambda r: (r.drop, r.bytes_saved))
        milder = _safer(table, worst)
        rows = [r for r in rows if r is not worst] + ([milder] if milder is not None else [])
        steps.append(f"{worst.setting.key} -> {milder.setting.label if milder else 'unchanged'}")
        built, value = assemble(rows)
        drop = worsening(scorer.metric, baseline, value)
    met = drop <= max_metric_drop if max_metric_drop is not None else True
    macs_ratio = None
    if max_macs_ratio is not None:
        inputs = example_inputs if example_inputs is not None else sample_inputs(model, batches)
        whole = count_macs(model, inputs).total
        macs_ratio = count_macs(built, inputs).total / whole
        target = max_macs_ratio
        # pruned neighbours share the layers between them, so per-group savings overlap: while
        # the measured MACs break the budget, ask the plan for proportionally more
        for _ in range(MACS_REPLANS):
            if macs_ratio <= max_macs_ratio:
                break
            target *= max_macs_ratio / macs_ratio
            try:
                rows = plan(table, max_macs_ratio=target)
            except InvalidConfigError:
                break
            steps.append(f"MACs {macs_ratio:.3f} > {max_macs_ratio}: planned for a predicted {target:.3f}")
            built, value = assemble(rows)
            drop = worsening(scorer.metric, baseline, value)
            macs_ratio = count_macs(built, inputs).total / whole
        met = macs_ratio <= max_macs_ratio
    size = saved_bytes(built)
    if max_size_ratio is not None:
        met = size <= max_size_ratio * original_bytes
    return Allocation(
        settings=[r.setting for r in rows],
        model=built,
        predicted_drop=sum(r.drop for r in rows),
        baseline=baseline,
        metric=value,
        drop=drop,
        original_bytes=original_bytes,
        size_bytes=size,
        met=met,
        fallback=steps,
        macs_ratio=macs_ratio,
    )
