"""Report figures (matplotlib, rendered to PNG bytes for embedding)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from slimkit.report.layers import LayerInfo


def _figure(width: float = 6.4, height: float = 3.2) -> tuple[Figure, Axes]:
    # A bare Figure (no pyplot): no global backend state, nothing left open.
    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.subplots()


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def stage_bars(labels: Sequence[str], values: Sequence[float], title: str, unit: str) -> bytes:
    """A bar per stage (size, latency or metric)."""
    fig, ax = _figure()
    ax.bar(range(len(values)), values, color="#3b7dd8")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(title)
    return _png(fig)


def metric_vs_size(sizes_mb: Sequence[float], metrics: Sequence[float], labels: Sequence[str], metric: str) -> bytes:
    """The accuracy-vs-size points, one per stage."""
    fig, ax = _figure()
    ax.plot(sizes_mb, metrics, "o-", color="#d8593b")
    for x, y, label in zip(sizes_mb, metrics, labels, strict=True):
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs size")
    return _png(fig)


def layer_chart(layers: Sequence[LayerInfo]) -> bytes:
    """Per-layer sparsity (bars) and storage bit width (dots)."""
    fig, ax = _figure(8, 3.4)
    xs = range(len(layers))
    ax.bar(xs, [info.sparsity for info in layers], color="#7a9cc6", label="sparsity")
    ax.set_ylim(0, 1)
    ax.set_ylabel("sparsity")
    ax.set_xticks(list(xs), [info.name for info in layers], rotation=70, ha="right", fontsize=6)
    bits = ax.twinx()
    bits.plot(list(xs), [info.bits for info in layers], "o", color="#d8593b", label="bits")
    bits.set_ylim(0, 34)
    bits.set_ylabel("bits per weight")
    ax.set_title("per-layer sparsity and bit width")
    return _png(fig)


def weight_histograms(before: torch.Tensor, after: torch.Tensor) -> bytes:
    """Overlaid weight histograms of the original and the compressed model."""
    fig, ax = _figure()
    lo, hi = float(before.min()), float(before.max())
    ax.hist(before.numpy(), bins=120, range=(lo, hi), alpha=0.55, label="original", color="#3b7dd8")
    ax.hist(after.numpy(), bins=120, range=(lo, hi), alpha=0.55, label="compressed", color="#d8593b")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("weight values before / after")
    return _png(fig)
