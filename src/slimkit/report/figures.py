"""The report's figures: which plots a compress result gets, with the data each one used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slimkit.report.blocks import Figure
from slimkit.report.entries import batch_size, lower_is_better, main_metric, stage_entries
from slimkit.report.layers import layer_infos, weight_sample
from slimkit.report.tables import threads_text
from slimkit.report.units import SizeUnit

if TYPE_CHECKING:
    from slimkit.pipeline.compress import CompressResult


def stage_figures(result: CompressResult, unit: SizeUnit) -> list[Figure]:
    """The plots of a result, each drawn only when rendered: size, latency, metric per stage,
    metric vs size, per-layer sparsity/bits, weight histograms (those the result has data for).

    Sizes use ``unit`` like every table of the report; the metric is the main one (the budget's).
    """
    from slimkit.report import plots  # matplotlib: only when figures are drawn

    entries = [e for e in stage_entries(result) if e.profile is not None and e.status != "reference"]
    labels = [e.name if e.number is None else f"{e.number} {e.name}" for e in entries]
    kept = [e.status != "discarded" for e in entries]
    profiles = [e.profile for e in entries]
    target = getattr(getattr(result, "recipe", None), "target", None)
    bs = batch_size(result)
    threads = threads_text(result.original.threads)
    figures = []
    size_limit = getattr(target, "max_size_mb", None)
    figures.append(
        Figure(
            "size",
            f"Artifact size per stage ({unit.name})",
            "bytes of each stage's saved artifact",
            lambda: plots.png(
                plots.stage_bars(
                    labels,
                    [unit.value(p.size_bytes) for p in profiles],
                    kept=kept,
                    unit=unit.name,
                    decimals=unit.decimals,
                    limit=unit.value(size_limit * 1e6) if size_limit else None,
                    limit_label="target",
                )
            ),
        )
    )
    if bs is not None and all(bs in p.latency for p in profiles):
        latency_limit = getattr(target, "max_latency_ms", None)
        figures.append(
            Figure(
                "latency",
                f"Latency per stage, batch {bs} (ms)",
                f"one test-split sample at batch {bs}, {threads}; bar = p50, whisker = p90 (labels: p50 / p90)",
                lambda: plots.png(
                    plots.stage_bars(
                        labels,
                        [p.latency[bs].p50_ms for p in profiles],
                        kept=kept,
                        unit="ms",
                        decimals=3,
                        upper=[p.latency[bs].p90_ms for p in profiles],
                        limit=latency_limit,
                        limit_label="target",
                    )
                ),
            )
        )
    metric = main_metric(result)
    if metric is not None:
        values = [p.metrics.get(metric, float("nan")) for p in profiles]
        lower = lower_is_better(result, metric)
        drop = getattr(target, "max_metric_drop", None)
        reference = result.original.metrics[metric]
        bound = None if drop is None else reference + drop if lower else reference - drop
        figures.append(
            Figure(
                "metric",
                f"{metric} per stage",
                "test split",
                lambda: plots.png(
                    plots.metric_dots(labels, values, kept=kept, metric=metric, reference=reference, bound=bound)
                ),
            )
        )
        figures.append(
            Figure(
                "tradeoff",
                f"{metric} vs size",
                f"{metric} on the test split; size of the saved artifact",
                lambda: plots.png(
                    plots.metric_vs_size(
                        [unit.value(p.size_bytes) for p in profiles],
                        values,
                        labels,
                        kept=kept,
                        metric=metric,
                        unit=unit.name,
                    )
                ),
            )
        )
    layers = layer_infos(result.model)
    if layers:
        figures.append(
            Figure(
                "layers",
                "Per-layer sparsity and bit width (final model)",
                "the weights themselves (no data)",
                lambda: plots.png(plots.layer_chart(layers, width=12.0 if len(layers) > 12 else 6.0)),
                wide=len(layers) > 12,
            )
        )
    original_model = getattr(result, "original_model", None)
    if original_model is not None:
        before, after = weight_sample(original_model), weight_sample(result.model)
        if before.numel() and after.numel():
            figures.append(
                Figure(
                    "weights",
                    "Weight values before / after",
                    "the weights themselves (no data), evenly sampled",
                    lambda: plots.png(plots.weight_histograms(before, after)),
                )
            )
    return figures
