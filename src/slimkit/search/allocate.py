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

import os
import tempfile
from collections.abc import Callable, Iterable
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
from slimkit.search.latency_table import LatencyTable
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
        latency_ratio: the latency table's predicted ``after / before`` (``max_latency_ratio`` only).
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
    latency_ratio: float | None = None

    @property
    def size_ratio(self) -> float:
        """``size_bytes / original_bytes``."""
        return self.size_bytes / self.original_bytes

    def stages(self) -> list[dict[str, Any]]:
        """The plan as recipe stages (``[{"prune": {...}}, {"quantize": {...}}]``)."""
        return plan_stages(self.settings)

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
            "latency_ratio": self.latency_ratio,
        }


REPLANS = 4
"""Re-plans at most under ``max_macs_ratio`` / ``max_latency_ratio`` when the assembled model breaks it."""


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
    one_budget(max_metric_drop=max_metric_drop, max_size_ratio=max_size_ratio, max_macs_ratio=max_macs_ratio)
    if max_macs_ratio is not None:
        return plan_by(table, lambda r: r.macs_saved, table.model_macs, max_macs_ratio)
    if max_size_ratio is not None:
        return plan_by(table, lambda r: r.bytes_saved, table.model_bytes, max_size_ratio)
    return plan_by(table, lambda r: r.bytes_saved, table.model_bytes, None, max_metric_drop)


def one_budget(**budgets: float | None) -> None:
    """Refuse no budget or more than one, and a ``*_ratio`` budget outside (0, 1].

    Raises:
        InvalidConfigError: naming the budgets to choose from, or the bad ratio.
    """
    given = {name: value for name, value in budgets.items() if value is not None}
    if len(given) != 1:
        raise InvalidConfigError(f"give exactly one budget: {', '.join(budgets)}")
    for name, value in given.items():
        if name.endswith("_ratio") and not 0 < value <= 1:
            raise InvalidConfigError(f"{name} must be in (0, 1], got {value}")


def plan_by(
    table: SensitivityTable,
    saving: Callable[[Row], float],
    whole: float,
    max_ratio: float | None,
    max_metric_drop: float | None = None,
) -> list[Row]:
    """The knapsack plan over any saving: the least predicted drop keeping ``whole - saved``
    within ``max_ratio * whole``, or (``max_ratio`` None) the most saved within ``max_metric_drop``."""
    slots = list(table.slots().values())
    options = [[(r.drop, float(saving(r))) for r in rows] for rows in slots]
    min_saved = None if max_ratio is None else whole * (1 - max_ratio)
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
    max_latency_ratio: float | None = None,
    latency_table: LatencyTable | str | os.PathLike[str] | None = None,
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
        max_macs_ratio: instead, the largest MACs ratio (on one sample input), the same way;
            measured, and re-planned while the measured ratio breaks it.
        max_latency_ratio: instead, the largest latency ratio ``latency_table`` predicts
            (batch 1 on its device): each setting's saving is the table's prediction for the
            model with that setting alone, the assembled model is predicted again and re-planned
            like MACs.
        latency_table: a `LatencyTable` or its JSON file (``slimkit bench --lut``), for
            ``max_latency_ratio``.
        metric: what judges the model (default: the data's own, else accuracy).
        max_batches: measure on at most this many batches (default: all).
        example_inputs: inputs for tracing (default: one sample of the data).
        device: where the verbs run.

    Raises:
        InvalidConfigError: not exactly one budget, or an unreachable size.
    """
    one_budget(
        max_metric_drop=max_metric_drop, max_size_ratio=max_size_ratio, max_macs_ratio=max_macs_ratio,
        max_latency_ratio=max_latency_ratio,
    )  # fmt: skip
    batches, data_metric = held_out(data)
    inputs = example_inputs if example_inputs is not None else sample_inputs(model, batches)
    if max_latency_ratio is not None:
        if latency_table is None:
            raise InvalidConfigError(
                "max_latency_ratio needs latency_table= (a table from `slimkit bench --lut`): per-layer latency "
                "savings are the table's predictions"
            )
        lut = latency_table if isinstance(latency_table, LatencyTable) else LatencyTable.load(latency_table)
        whole_ms = lut.predict_ms(model, inputs)
        alone_ms = {
            r.setting.key: whole_ms
            - lut.predict_ms(r.setting.apply(model, data=batches, example_inputs=inputs, device=device), inputs)
            for r in table.rows
        }

        def replan_latency(target: float) -> list[Row]:
            return plan_by(table, lambda r: alone_ms[r.setting.key], whole_ms, target)

        rows = replan_latency(max_latency_ratio)
    else:
        rows = plan(
            table, max_metric_drop=max_metric_drop, max_size_ratio=max_size_ratio, max_macs_ratio=max_macs_ratio
        )
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

    def within(name: str, budget: float, ratio_of: Callable[[nn.Module], float], replan: Any) -> float:
        """Pruned neighbours share the layers between them, so per-setting savings overlap: while
        the assembled model's ratio breaks the budget, plan for proportionally more."""
        nonlocal rows, built, value, drop
        ratio, target = ratio_of(built), budget
        for _ in range(REPLANS):
            if ratio <= budget:
                break
            target *= budget / ratio
            try:
                rows = replan(target)
            except InvalidConfigError:
                break
            steps.append(f"{name} {ratio:.3f} > {budget}: planned for a predicted {target:.3f}")
            built, value = assemble(rows)
            drop = worsening(scorer.metric, baseline, value)
            ratio = ratio_of(built)
        return ratio

    macs_ratio = latency_ratio = None
    if max_macs_ratio is not None:
        whole = count_macs(model, inputs).total
        macs_ratio = within(
            "MACs", max_macs_ratio, lambda m: count_macs(m, inputs).total / whole,
            lambda target: plan(table, max_macs_ratio=target),
        )  # fmt: skip
        met = macs_ratio <= max_macs_ratio
    if max_latency_ratio is not None:
        latency_ratio = within(
            "latency", max_latency_ratio, lambda m: lut.predict_ms(m, inputs) / whole_ms, replan_latency
        )
        met = latency_ratio <= max_latency_ratio
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
        latency_ratio=latency_ratio,
    )
