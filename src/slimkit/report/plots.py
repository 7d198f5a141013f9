"""Report figures (matplotlib Agg, no pyplot), built as `Figure` objects and embedded as PNG.

Every figure is read at a glance: stage names on the y axis (horizontal bars), each bar or dot
carries its value, metric axes span the data (padded, never forced to start at 0), discarded
stages are grey and hatched, and scatter labels are placed so that they do not overlap.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

from slimkit.report.layers import LayerInfo

BLUE = "#3b7dd8"
ORANGE = "#d8593b"
GREY = "#a8adb3"
LIMIT = "#c0392b"
DPI = 110


def _figure(width: float = 6.0, height: float = 3.2) -> tuple[Figure, Axes]:
    # A bare Figure with its own Agg canvas: no global pyplot state, nothing left open.
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (layout is done by the builder, so placed labels stay put)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def padded_range(values: Sequence[float], pad: float = 0.15) -> tuple[float, float]:
    """An axis range around the finite ``values`` with ``pad`` of their span on each side.

    It does not start at 0 unless the data does, so small differences stay visible; a flat
    series gets a small window around its value.
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    span = hi - lo
    if span == 0:
        span = max(abs(hi) * 0.02, 1e-3)
    return lo - pad * span, hi + pad * span


def _stage_axis(ax: Axes, labels: Sequence[str], kept: Sequence[bool]) -> None:
    names = [label if k else f"{label} (discarded)" for label, k in zip(labels, kept, strict=True)]
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)  # the first stage on top
    for tick, k in zip(ax.get_yticklabels(), kept, strict=True):
        tick.set_color("#333" if k else "#888")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#e4e4e4", linewidth=0.7)
    ax.set_axisbelow(True)


def _height(n: int) -> float:
    return max(2.4, 0.9 + 0.36 * n)


def stage_bars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    kept: Sequence[bool] | None = None,
    unit: str,
    decimals: int = 2,
    upper: Sequence[float] | None = None,
    limit: float | None = None,
    limit_label: str = "",
) -> Figure:
    """A horizontal bar per stage with its value written at the bar's end.

    Args:
        labels: stage names, top to bottom.
        values: one value per stage (size, p50 latency, ...).
        kept: False for discarded stages (drawn grey, hatched).
        unit: axis unit, also written after each value.
        decimals: decimals of the written values.
        upper: an upper whisker per stage (p90 for latency); labels then read ``value / upper``.
        limit: a target drawn as a dashed line (``limit_label`` names it).
    """
    kept = list(kept) if kept is not None else [True] * len(values)
    fig, ax = _figure(6.0, _height(len(values)))
    ys = range(len(values))
    colors = [BLUE if k else GREY for k in kept]
    bars = ax.barh(ys, values, color=colors, height=0.6)
    for bar, k in zip(bars, kept, strict=True):
        if not k:
            bar.set_hatch("///")
            bar.set_edgecolor("#777")
    ends = list(values)
    if upper is not None:
        ax.errorbar(
            upper,
            ys,
            xerr=[[u - v for u, v in zip(upper, values, strict=True)], [0] * len(values)],
            fmt="none",
            ecolor="#333",
            capsize=3,
            linewidth=0.9,
        )
        ends = [max(v, u) for v, u in zip(values, upper, strict=True)]
    top = max([e for e in ends if math.isfinite(e)] + [limit or 0, 0])
    for i, (y, v, end) in enumerate(zip(ys, values, ends, strict=True)):
        text = f"{v:,.{decimals}f} {unit}" if upper is None else f"{v:,.{decimals}f} / {upper[i]:,.{decimals}f} {unit}"
        ax.annotate(text, (end, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    if limit is not None:
        ax.axvline(limit, color=LIMIT, linestyle="--", linewidth=1)
        ax.annotate(
            f"{limit_label} {limit:,.{decimals}f} {unit}".strip(),
            (limit, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, 2),
            textcoords="offset points",
            fontsize=7,
            color=LIMIT,
        )
    ax.set_xlim(0, top * 1.3 or 1)  # bars measure amounts: they start at 0; room for the labels
    ax.set_xlabel(unit)
    _stage_axis(ax, labels, kept)
    fig.tight_layout()
    return fig


def focus_range(
    values: Sequence[float], kept: Sequence[bool], extra: Sequence[float] = (), pad: float = 0.25
) -> tuple[float, float]:
    """A metric axis range: around every value, unless discarded stages lie so far off that
    the kept ones would be squeezed together; then around the kept values and ``extra``
    (reference, budget) only, and the far values are drawn clipped at the axis edge."""
    finite = [v for v in values if math.isfinite(v)]
    core = [v for v, k in zip(values, kept, strict=True) if k and math.isfinite(v)] + list(extra)
    whole = padded_range(finite + list(extra), pad)
    if not core:
        return whole
    focused = padded_range(core, pad)
    return focused if (whole[1] - whole[0]) > 4 * (focused[1] - focused[0]) else whole


def _clip(v: float, lo: float, hi: float) -> tuple[float, int]:
    """``v`` kept inside ``(lo, hi)``, and -1/+1 when it was below/above (0 when inside)."""
    inset = (hi - lo) * 0.01
    if v < lo:
        return lo + inset, -1
    if v > hi:
        return hi - inset, 1
    return v, 0


def metric_dots(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    kept: Sequence[bool] | None = None,
    metric: str,
    reference: float | None = None,
    bound: float | None = None,
) -> Figure:
    """A dot per stage on a metric axis spanning the data (padded), not from 0.

    Args:
        labels: stage names, top to bottom.
        values: the metric per stage.
        kept: False for discarded stages (hollow grey dots).
        metric: the metric's name (axis label).
        reference: the original's value (dotted line).
        bound: the budget's limit (beyond it is shaded as over budget).
    """
    kept = list(kept) if kept is not None else [True] * len(values)
    fig, ax = _figure(6.0, _height(len(values)))
    lo, hi = focus_range(values, kept, [v for v in (reference, bound) if v is not None])
    ax.set_xlim(lo, hi)
    if bound is not None and reference is not None:
        worse_side = (lo, bound) if bound < reference else (bound, hi)
        ax.axvspan(*worse_side, color=LIMIT, alpha=0.08, linewidth=0)
        ax.axvline(bound, color=LIMIT, linestyle="--", linewidth=1)
        ax.annotate(
            "budget limit",
            (bound, 1),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            ha="center",
            textcoords="offset points",
            fontsize=7,
            color=LIMIT,
        )
    if reference is not None:
        ax.axvline(reference, color="#555", linestyle=":", linewidth=1)
    mid = (lo + hi) / 2
    for y, (v, k) in enumerate(zip(values, kept, strict=True)):
        if not math.isfinite(v):
            continue
        x, off = _clip(v, lo, hi)
        marker = {-1: "<", 0: "o", 1: ">"}[off]
        ax.plot([x], [y], marker, markersize=8, color=ORANGE if k else "white", markeredgecolor=ORANGE if k else GREY)
        right = x <= mid
        ax.annotate(
            f"{v:.4f}" + (" (off scale)" if off else ""),
            (x, y),
            xytext=(8 if right else -8, 0),
            textcoords="offset points",
            ha="left" if right else "right",
            va="center",
            fontsize=8,
            color="#333" if k else "#888",
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )
    ax.set_xlabel(metric + ("  (dotted: original)" if reference is not None else ""))
    _stage_axis(ax, labels, kept)
    fig.tight_layout()
    return fig


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _outside(box: Bbox, frame: Bbox) -> float:
    inside = _overlap(box, frame)
    return box.width * box.height - inside


_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
_RADII = (6, 14, 24, 36, 50, 66)


def text_extent(annotation: Annotation) -> Bbox:
    """Where an annotation's text (not its leader line) is drawn, in display pixels."""
    renderer = annotation.get_figure(root=True).canvas.get_renderer()
    annotation.update_positions(renderer)
    return Text.get_window_extent(annotation, renderer)


def _annotate(
    ax: Any, label: str, xy: tuple[float, float], offset: tuple[float, float], dx: int, dy: int, **kw: Any
) -> Any:
    """A label at ``offset`` points from ``xy``, aligned away from the point (``dx``, ``dy`` in -1/0/1)."""
    return ax.annotate(
        label,
        xy,
        xytext=offset,
        textcoords="offset points",
        ha={1: "left", -1: "right", 0: "center"}[dx],
        va={1: "bottom", -1: "top", 0: "center"}[dy],
        fontsize=8,
        **kw,
    )


def place_labels(ax: Axes, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> list[Annotation]:
    """Label each point where its text overlaps no other label, no point and stays in the axes.

    Greedy: for each point, offsets around it are tried at growing distances; the first free
    spot wins (a thin leader line joins far labels to their point). When no spot is free, the
    spot with the least overlap is used. The axes' limits and layout must be final.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer).padded(-2)
    points = [ax.transData.transform((x, y)) for x, y in zip(xs, ys, strict=True)]
    taken = [Bbox.from_bounds(px - 5, py - 5, 10, 10) for px, py in points]
    placed: list[Annotation] = []
    for (x, y), label in zip(zip(xs, ys, strict=True), labels, strict=True):
        best, best_cost = None, math.inf
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                offset = (dx * radius, dy * radius * 0.8)
                ann = _annotate(ax, label, (x, y), offset, dx, dy)
                box = text_extent(ann).padded(2)
                cost = sum(_overlap(box, t) for t in taken) + 10 * _outside(box, frame)
                ann.remove()
                if cost < best_cost:
                    best, best_cost = (offset, dx, dy, radius), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        offset, dx, dy, radius = best
        arrow = (
            {"arrowstyle": "-", "color": "#999", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4} if radius > 6 else None
        )
        ann = _annotate(ax, label, (x, y), offset, dx, dy, arrowprops=arrow)
        taken.append(text_extent(ann).padded(2))
        placed.append(ann)
    return placed


def metric_vs_size(
    sizes: Sequence[float],
    metrics: Sequence[float],
    labels: Sequence[str],
    *,
    kept: Sequence[bool] | None = None,
    metric: str,
    unit: str,
) -> Figure:
    """Metric against artifact size, one labelled point per stage; kept stages joined in order.

    Stages on the same spot share one label; labels never overlap (`place_labels`); a
    discarded stage far off the kept ones is drawn clipped at the edge with its value.
    """
    kept = list(kept) if kept is not None else [True] * len(sizes)
    fig, ax = _figure(6.0, 3.8)
    lo, hi = focus_range(metrics, kept, pad=0.6)  # room above and below the points for labels
    ax.set_xlim(0, padded_range([0.0, *sizes], pad=0.12)[1])  # sizes are amounts: from 0
    ax.set_ylim(lo, hi)
    path = [(s, m) for s, m, k in zip(sizes, metrics, kept, strict=True) if k and math.isfinite(m)]
    if len(path) > 1:
        ax.plot(*zip(*path, strict=True), "-", color=ORANGE, linewidth=1, alpha=0.5)
    spots: dict[tuple[float, float], list[str]] = {}
    for s, m, k, label in zip(sizes, metrics, kept, labels, strict=True):
        if not math.isfinite(m):
            continue
        y, off = _clip(m, lo, hi)
        marker = {-1: "v", 0: "o", 1: "^"}[off]
        ax.plot([s], [y], marker, markersize=7, color=ORANGE if k else "white", markeredgecolor=ORANGE if k else GREY)
        text = f"{label} ({m:.4f}, off scale)" if off else label
        spots.setdefault((round(s, 9), round(y, 12)), []).append(text)
    ax.set_xlabel(f"artifact size ({unit})")
    ax.set_ylabel(metric)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(color="#e4e4e4", linewidth=0.7)
    ax.set_axisbelow(True)
    fig.tight_layout()
    if spots:
        xs, ys = zip(*spots, strict=True)
        place_labels(ax, xs, ys, [", ".join(names) for names in spots.values()])
    return fig


def layer_chart(layers: Sequence[LayerInfo], width: float = 6.0) -> Figure:
    """Per-layer sparsity (left) and bits per stored weight (right), one row per layer."""
    n = len(layers)
    height = min(max(2.4, 0.8 + 0.2 * n), 16)
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1]})
    ys = range(n)
    left.barh(ys, [100 * i.sparsity for i in layers], color=BLUE, height=0.7)
    left.set_xlim(0, 100)
    left.set_xlabel("sparsity (% zero weights)")
    right.barh(ys, [i.bits - 1 for i in layers], left=1, color=ORANGE, height=0.7)
    right.set_xscale("log", base=2)  # 2, 4, 8, 16, 32 bits evenly spaced
    right.set_xlim(1, 40)
    right.set_xticks([2, 4, 8, 16, 32], ["2", "4", "8", "16", "32"])
    right.minorticks_off()
    right.set_xlabel("bits per weight")
    step = max(1, math.ceil(n * 0.13 / (height - 0.8)))  # a name needs ~0.13 in: else every k-th name
    left.set_yticks(list(ys)[::step], [i.name for i in layers][::step], fontsize=7 if n > 30 else 8, family="monospace")
    left.set_ylim(n - 0.5, -0.5)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="x", color="#e4e4e4", linewidth=0.7)
        ax.set_axisbelow(True)
    fig.tight_layout()
    return fig


def weight_histograms(before: torch.Tensor, after: torch.Tensor) -> Figure:
    """Overlaid weight histograms of the original and the final model (log counts)."""
    fig, ax = _figure(6.0, 3.2)
    lo, hi = float(before.min()), float(before.max())
    ax.hist(before.numpy(), bins=120, range=(lo, hi), alpha=0.55, label="original", color=BLUE)
    ax.hist(after.numpy(), bins=120, range=(lo, hi), alpha=0.55, label="final", color=ORANGE)
    ax.set_yscale("log")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count (log)")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig
