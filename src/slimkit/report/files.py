"""The report files of a compress run: ``report.json``, ``report.md``, ``report.html``."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from slimkit.report import plots
from slimkit.report.layers import layer_infos, weight_sample
from slimkit.report.tables import human_bytes, human_count

if TYPE_CHECKING:
    from slimkit.measure.profile import Profile
    from slimkit.pipeline.compress import CompressResult

COLUMNS = ("stage", "runtime", "size", "x orig", "params", "MACs", "p50 ms", "metric")


def _metric_text(p: Profile) -> str:
    return " ".join(f"{k}={v:.2f}dB" if k.endswith("_db") else f"{k}={v:.4f}" for k, v in p.metrics.items())


def stage_rows(result: CompressResult) -> list[tuple[str, ...]]:
    """One row per stage (the original first): runtime, size and its ratio, params, MACs,
    p50 latency at the first batch size, metric. A discarded stage is marked."""
    entries = [("original", result.original, True)] + [(s.name, s.profile, s.kept) for s in result.stages]
    if result.baseline is not None:
        entries.insert(0, ("original", result.baseline, True))
    rows = []
    for name, p, kept in entries:
        p50 = f"{p.latency[min(p.latency)].p50_ms:.3f}" if p.latency else "-"
        rows.append(
            (
                name if kept else f"{name} (discarded)",
                p.runtime,
                human_bytes(p.size_bytes),
                f"{p.size_bytes / max(result.original.size_bytes, 1):.3f}",
                human_count(p.params),
                human_count(p.macs),
                p50,
                _metric_text(p),
            )
        )
    return rows


def _markdown(result: CompressResult) -> str:
    lines = ["# slimkit compression report", ""]
    if result.stopped:
        lines += [f"**Stopped:** {result.stopped}", ""]
    lines += [f"**Target missed:** {miss}" for miss in result.unmet] + ([""] if result.unmet else [])
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in stage_rows(result)]
    final, original = result.final, result.original
    lines += ["", f"Artifact size: {final.size_bytes / max(original.size_bytes, 1):.3f}x the original."]
    if result.artifacts:
        lines += ["", "Exported: " + ", ".join(f"`{p.name}`" for p in result.artifacts.values())]
    lines += ["", "## Layers", "", "| layer | type | params | sparsity | bits |", "|---|---|---|---|---|"]
    lines += [f"| {i.name} | {i.kind} | {i.params} | {i.sparsity:.2f} | {i.bits} |" for i in layer_infos(result.model)]
    return "\n".join(lines) + "\n"


def _figures(result: CompressResult) -> list[tuple[str, bytes]]:
    profiles = [result.original] + [s.profile for s in result.stages]
    labels = ["original"] + [s.name for s in result.stages]
    metric = next(iter(result.original.metrics), None)
    figures = [
        (
            "Artifact size per stage",
            plots.stage_bars(labels, [p.size_bytes / 1e6 for p in profiles], "artifact size", "MB"),
        ),
        (
            "Batch-1 latency per stage",
            plots.stage_bars(labels, [p.latency[min(p.latency)].p50_ms for p in profiles], "latency p50", "ms"),
        ),
    ]
    if metric is not None:
        values = [p.metrics.get(metric, float("nan")) for p in profiles]
        figures.append((f"{metric} per stage", plots.stage_bars(labels, values, metric, metric)))
        sizes = [p.size_bytes / 1e6 for p in profiles]
        figures.append((f"{metric} vs size", plots.metric_vs_size(sizes, values, labels, metric)))
    layers = layer_infos(result.model)
    if layers:
        figures.append(("Per-layer sparsity and bit width", plots.layer_chart(layers)))
    if result.original_model is not None:
        before, after = weight_sample(result.original_model), weight_sample(result.model)
        if before.numel() and after.numel():
            figures.append(("Weight histograms", plots.weight_histograms(before, after)))
    return figures


def _html(result: CompressResult) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in stage_rows(result))
    images = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, png in _figures(result)
    )
    notes = ([result.stopped] if result.stopped else []) + [f"target missed: {m}" for m in result.unmet]
    stopped = "".join(f'<p class="stopped">{html.escape(note)}</p>' for note in notes)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>slimkit report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}figure{display:inline-block;margin:8px}"
        ".stopped{color:#b00}</style></head><body><h1>slimkit compression report</h1>"
        f"{stopped}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{images}</body></html>"
    )


def write_reports(result: CompressResult, folder: Path) -> None:
    """Write ``report.json``, ``report.md`` and a self-contained ``report.html`` into ``folder``."""
    (folder / "report.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    (folder / "report.md").write_text(_markdown(result))
    (folder / "report.html").write_text(_html(result))
