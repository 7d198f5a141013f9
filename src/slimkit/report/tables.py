"""Rich terminal tables for profiles and comparisons; every one fits 80 columns without cutting a value."""

from __future__ import annotations

from rich.table import Table

from slimkit.measure.latency import Latency
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


NOISY_NOTE = "noisy: the timing spread (p90/p50) stayed high -- the machine was busy; rerun for steadier figures"


def threads_text(n: int) -> str:
    """``1`` -> ``"1 thread"``; ``0`` -> ``"default threads"``."""
    return "default threads" if not n else f"{n} thread{'s' if n != 1 else ''}"


def latency_text(lat: Latency) -> str:
    """``"0.637 / 0.729 ms, spread 1.14"``: p50 / p90 and p90/p50, marked when noisy."""
    text = f"{lat.p50_ms:.3f} / {lat.p90_ms:.3f} ms, spread {lat.spread:.2f}"
    return text + " (noisy)" if lat.noisy else text


def _profile_rows(p: Profile) -> list[tuple[str, str]]:
    rows = [
        ("runtime", f"{p.runtime} ({threads_text(p.threads)})"),
        ("params", f"{human_count(p.params)} ({human_count(p.nonzero_params)} non-zero)"),
        ("size", human_bytes(p.size_bytes)),
        ("MACs (batch 1)", human_count(p.macs)),
        ("peak memory (batch 1)", human_bytes(p.peak_memory_bytes)),
    ]
    rows += [(f"latency bs={bs} p50 / p90", latency_text(lat)) for bs, lat in p.latency.items()]
    rows += [(_metric_label(name, p), format_metric(name, value)) for name, value in p.metrics.items()]
    return rows


def _metric_label(name: str, p: Profile) -> str:
    return f"{name} (lower is better)" if name in p.lower_is_better else name


def format_metric(name: str, value: float) -> str:
    """A metric value: dB for ``*_db``, 4 significant decimals otherwise (general form for large values)."""
    if name.endswith("_db"):
        return f"{value:.2f} dB"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def _noisy(*profiles: Profile) -> bool:
    return any(lat.noisy for p in profiles for lat in p.latency.values())


def profile_table(p: Profile) -> Table:
    """A two-column table of everything in a profile."""
    table = Table(title=f"profile: {p.name}", show_header=False, title_justify="left")
    table.add_column("measure", style="bold", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")
    for row in _profile_rows(p):
        table.add_row(*row)
    if _noisy(p):
        table.caption = NOISY_NOTE
    return table


def comparison_table(c: Comparison) -> Table:
    """Before / after / ratio for each measure; metric rows show the difference.

    Latency rows give p50 and its spread (p90/p50); the caption says when a figure is noisy.
    """
    threads = {threads_text(c.before.threads), threads_text(c.after.threads)}
    table = Table(title=f"{c.before.name} -> {c.after.name}", title_justify="left")
    table.caption = f"latency: p50 (p90/p50 spread), {' / '.join(sorted(threads))}"
    if _noisy(c.before, c.after):
        table.caption += "\n" + NOISY_NOTE
    for col in ("measure", "before", "after", "ratio"):
        table.add_column(col, justify="left" if col == "measure" else "right", overflow="fold")
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
        b, a = c.before.latency[bs], c.after.latency[bs]
        pairs.append((f"latency bs={bs}", _short_latency(b), _short_latency(a), c.ratios[f"latency_p50_bs{bs}"]))
    for measure, before, after, ratio in pairs:
        table.add_row(measure, before, after, f"{ratio:.2f}x")
    for name, delta in c.metric_deltas.items():
        label = _metric_label(name, c.after)
        before, after = format_metric(name, c.before.metrics[name]), format_metric(name, c.after.metrics[name])
        table.add_row(label, before, after, f"{delta:+.4f}")
    return table


def _short_latency(lat: Latency) -> str:
    return f"{lat.p50_ms:.3f} ms ({lat.spread:.2f}{' noisy' if lat.noisy else ''})"
