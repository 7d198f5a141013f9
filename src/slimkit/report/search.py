"""The report of a search: ``report.html`` / ``report.md`` with the Pareto front, every trial
and, when the search planned mixed precision, the per-layer sensitivity it planned from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slimkit.report.blocks import Facts, Figure, Section, Table
from slimkit.report.files import render_html, render_markdown
from slimkit.report.plots import _figure, png

if TYPE_CHECKING:
    from matplotlib.figure import Figure as PlotFigure

    from slimkit.search import Measured, SearchResult, SensitivityTable

TITLE = "slimkit search report"


def _stage(verb: str, options: dict) -> str:
    """``quantize weight-only bits=4 on 3 layers``."""
    words = [verb, options.get("method", "")]
    words += [f"{k}={v}" for k, v in options.items() if k not in ("method", "include")]
    if "include" in options:
        words.append(f"on {len(options['include'])} layers")
    return " ".join(w for w in words if w)


def _stages(stages: list[dict]) -> str:
    return " -> ".join(_stage(verb, options) for stage in stages for verb, options in stage.items()) or "(unchanged)"


def _figures(m: Measured) -> tuple[str, str, str, str]:
    return f"{m.latency_ms:.3f}", f"{m.size_bytes / 1e6:.3f}", f"{m.metric:.4f}", f"{m.drop:+.4f}"


def sensitivity_figure(table: SensitivityTable) -> PlotFigure:
    """Each setting's metric drop per layer or group, in model order (hollow: estimated by the
    Fisher proxy; the vertical axis is linear near zero, logarithmic beyond)."""
    fig, axes = _figure(7.0, 3.6)
    slots = list(table.slots())
    for label in dict.fromkeys(r.setting.label for r in table.rows):
        rows = [(slots.index(r.setting.slot), r) for r in table.rows if r.setting.label == label]
        for estimated in (False, True):
            points = [(x, r.drop) for x, r in rows if r.estimated is estimated]
            if points:
                xs, ys = zip(*points, strict=True)
                style = {"facecolors": "none"} if estimated else {}
                axes.scatter(xs, ys, s=18, label=f"{label}{' (estimated)' if estimated else ''}", **style)
    axes.set_yscale("symlog", linthresh=1e-4)
    names = [".".join(slot.split(" ", 1)[-1].split(".")[-3:]) for slot in slots]  # the unit's last 3 parts
    axes.set_xticks(range(len(slots)), names, fontsize=6)
    axes.tick_params(axis="x", labelrotation=90)
    axes.set_ylabel(f"{table.metric} drop")
    axes.legend(fontsize=7)
    fig.tight_layout()
    return fig


def search_sections(result: SearchResult) -> list[Section]:
    """The report's sections: the front (facts, table, plots) and every trial."""
    from slimkit.search.output import pareto_figure

    failed = sum(1 for t in result.trials if t.error)
    facts = Facts(
        (
            ("objectives", ", ".join(result.objectives)),
            ("metric", result.metric),
            ("latency", result.latency),
            ("trials", f"{len(result.trials)} ({failed} failed)"),
            ("original (test)", "latency {} ms, {} MB, {} {}".format(*_figures(result.original)[:3], result.metric)),
        )
    )
    front = Table(
        ("trial", "recipe", "latency ms", "MB", result.metric, "drop", "drop (calibration)"),
        tuple(
            (str(p.trial), _stages(p.recipe["stages"]), *_figures(p.test), f"{p.selection.drop:+.4f}")
            for p in result.front
        ),
        "llrrrrr",
        caption="Front points re-measured on the test split; the search selected them on the calibration split.",
    )
    figures = [Figure("pareto", "trials and Pareto front", "calibration split", lambda: png(pareto_figure(result)))]
    if result.sensitivity is not None:
        table = result.sensitivity
        figures.append(
            Figure("sensitivity", "per-layer sensitivity (mixed precision)", "calibration split",
                   lambda: png(sensitivity_figure(table)), wide=True)
        )  # fmt: skip
    trials = Table(
        ("trial", "recipe", "latency ms", "MB", result.metric, "drop", "error"),
        tuple(
            (str(t.number), _stages(t.stages), *(_figures(t.selection) if t.selection else ("",) * 4), t.error or "")
            for t in result.trials
        ),
        "llrrrrl",
        caption="Every trial on the calibration split.",
    )
    return [Section("front", "Pareto front", (facts, front, *figures)), Section("trials", "Trials", (trials,))]


def write_search_reports(result: SearchResult, folder: Path) -> list[Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into ``folder``."""
    sections = search_sections(result)
    html, md = Path(folder) / "report.html", Path(folder) / "report.md"
    html.write_text(render_html(sections, TITLE))
    md.write_text(render_markdown(sections, TITLE))
    return [html, md]
