"""Rich terminal tables for profiles and comparisons."""

from __future__ import annotations

from rich.table import Table

from slimkit.measure.profile import Comparison, Profile


def human_bytes(n: float | None) -> str:
    """``1536`` -> ``"1.5 KiB"``; ``None`` (not measured) -> ``"n/a"``."""
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_count(n: float | None) -> str:
    """``1_234_567`` -> ``"1.23M"``; ``None`` (not measured) -> ``"n/a"``."""
    if n is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _profile_rows(p: Profile) -> list[tuple[str, str]]:
    rows = [
        ("runtime", f"{p.runtime} ({p.threads} threads)"),
        ("params", f"{human_count(p.params)} ({human_count(p.nonzero_params)} non-zero)"),
        ("size", human_bytes(p.size_bytes)),
        ("MACs (batch 1)", human_count(p.macs)),
        ("peak memory (batch 1)", human_bytes(p.peak_memory_bytes)),
    ]
    rows += [(f"latency bs={bs} p50 / p90", f"{lat.p50_ms:.3f} / {lat.p90_ms:.3f} ms") for bs, lat in p.latency.items()]
    rows += [(name, _metric(name, value)) for name, value in p.metrics.items()]
    return rows


def _metric(name: str, value: float) -> str:
    return f"{value:.2f} dB" if name.endswith("_db") else f"{value:.4f}"


def profile_table(p: Profile) -> Table:
    """A two-column table of everything in a profile."""
    table = Table(title=f"profile: {p.name}", show_header=False)
    table.add_column("measure", style="bold")
    table.add_column("value", justify="right")
    for row in _profile_rows(p):
        table.add_row(*row)
    return table


def comparison_table(c: Comparison) -> Table:
    """Before / after / ratio for each measure; metric rows show the difference."""
    table = Table(title=f"{c.before.name} -> {c.after.name}")
    for col in ("measure", "before", "after", "after/before"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    pairs = [
        ("size", human_bytes(c.before.size_bytes), human_bytes(c.after.size_bytes), c.ratios["size"]),
        ("params", human_count(c.before.params), human_count(c.after.params), c.ratios["params"]),
        ("MACs", human_count(c.before.macs), human_count(c.after.macs), c.ratios["macs"]),
        (
            "peak memory",
            human_bytes(c.before.peak_memory_bytes),
            human_bytes(c.after.peak_memory_bytes),
            c.ratios["peak_memory"],
        ),
    ]
    for bs in sorted(set(c.before.latency) & set(c.after.latency)):
        b, a = c.before.latency[bs].p50_ms, c.after.latency[bs].p50_ms
        pairs.append((f"latency p50 bs={bs}", f"{b:.3f} ms", f"{a:.3f} ms", c.ratios[f"latency_p50_bs{bs}"]))
    for measure, before, after, ratio in pairs:
        table.add_row(measure, before, after, f"{ratio:.2f}x")
    for name, delta in c.metric_deltas.items():
        table.add_row(
            name, _metric(name, c.before.metrics[name]), _metric(name, c.after.metrics[name]), f"{delta:+.4f}"
        )
    return table
