"""What a compress report says, once: sections of blocks that `report.md` and `report.html` render.

`report_sections` is the only place that decides the content; the renderers in
`slimkit.report.files` only lay it out.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimkit.core.formats import FORMATS
from slimkit.report.blocks import Block, Code, Facts, Note, Section, Table
from slimkit.report.entries import (
    StageEntry,
    batch_size,
    latency_at,
    lower_is_better,
    main_metric,
    ratio_text,
    size_unit,
    stage_entries,
)
from slimkit.report.figures import stage_figures
from slimkit.report.layers import layer_infos
from slimkit.report.tables import NOISY_NOTE, format_metric, human_count, threads_text
from slimkit.report.units import SizeUnit

if TYPE_CHECKING:
    from slimkit.pipeline.compress import CompressResult

RUNTIME_PACKAGES = {f.runtime: f.packages for f in FORMATS if f.is_artifact}
"""Python packages behind each target runtime (their versions go into the report)."""

SAVED_FILES = ("model.safetensors", "slimkit.json")
"""The saved final model in an output folder (what ``sk.load(folder)`` reads)."""


def report_sections(result: CompressResult, folder: Path | None = None) -> list[Section]:
    """Everything a report says, in order. ``folder`` is where the run's files are (to list them)."""
    unit = size_unit(result)
    sections = [
        Section("summary", "Summary", (_summary(result, unit), *_notes(result))),
        Section("stages", "Stages", (_stage_table(result, unit),)),
        Section("figures", "Figures", tuple(stage_figures(result, unit))),
        Section("data", "Data used", (_data_table(result),)),
    ]
    training = _training_table(result)
    if training is not None:
        sections.append(Section("training", "Training", (training,)))
    layers = _layers_table(result)
    sections.append(Section("layers", "Layers", (layers,)))
    sections.append(Section("files", "Files", tuple(_files(result, unit, folder))))
    sections.append(Section("recipe", "Recipe", (_recipe(result),)))
    sections.append(Section("environment", "Environment", (Facts(tuple(environment(result).items())),)))
    return sections


def _final_entry(result: CompressResult) -> StageEntry:
    return next((e for e in stage_entries(result) if e.status == "final"), None) or next(
        e for e in stage_entries(result) if e.status == "input"
    )


def _summary(result: CompressResult, unit: SizeUnit) -> Facts:
    original, final, bs = result.original, result.final, batch_size(result)
    entry = _final_entry(result)
    ran = [e for e in stage_entries(result) if e.number is not None and e.status != "not run"]
    if result.stopped:
        outcome = "stopped by the budget"
    elif any(e.status == "discarded" for e in ran):
        outcome = "finished; a stage was discarded"
    else:
        outcome = f"finished: {len(ran)} of {len(ran)} stages kept"
    if getattr(result, "unmet", None):
        outcome += "; a target was missed"
    ratio = ratio_text(final.size_bytes, original.size_bytes)
    pairs = [
        ("outcome", outcome),
        ("final model", f"stage {entry.number} ({entry.name})" if entry.number else "the original (no stage kept)"),
        ("runtime", f"{final.runtime}, {threads_text(final.threads)}"),
        ("size", f"{unit.text(original.size_bytes)} → {unit.text(final.size_bytes)} ({ratio}x)"),
    ]
    before, after = latency_at(original, bs), latency_at(final, bs)
    if before and after:
        ratio = after.p50_ms / before.p50_ms if before.p50_ms else float("nan")
        pairs.append((f"latency p50, batch {bs}", f"{before.p50_ms:.3f} ms → {after.p50_ms:.3f} ms ({ratio:.2f}x)"))
    metric = main_metric(result)
    if metric and metric in final.metrics:
        b, a = original.metrics[metric], final.metrics[metric]
        direction = " (lower is better)" if lower_is_better(result, metric) else ""
        pairs.append(
            (
                f"{metric}, test split",
                f"{format_metric(metric, b)} → {format_metric(metric, a)} ({a - b:+.4f}){direction}",
            )
        )
    budget = _budget_text(result, unit)
    if budget:
        pairs.append(("budget", budget))
    return Facts(tuple(pairs))


def _budget_text(result: CompressResult, unit: SizeUnit) -> str:
    target = getattr(getattr(result, "recipe", None), "target", None)
    if target is None:
        return ""
    parts = []
    drop = getattr(target, "max_metric_drop", None)
    if drop is not None:
        parts.append(f"metric may worsen by at most {drop}")
    size_mb = getattr(target, "max_size_mb", None)
    if size_mb is not None:
        parts.append(f"size ≤ {size_mb} MB ({unit.text(size_mb * 1e6)})")
    latency_ms = getattr(target, "max_latency_ms", None)
    if latency_ms is not None:
        parts.append(f"latency p50 ≤ {latency_ms} ms")
    return "; ".join(parts)


def _notes(result: CompressResult) -> list[Note]:
    notes = []
    stopped = result.stopped or ""
    if stopped:
        text = stopped[0].upper() + stopped[1:] if stopped.lower().startswith("stopped") else f"Stopped: {stopped}"
        notes.append(Note(text, "warning"))
    notes += [Note(f"Target missed: {miss}", "warning") for miss in getattr(result, "unmet", None) or []]
    for e in stage_entries(result):
        if e.status == "discarded" and not (e.reason and e.reason in stopped):
            why = e.reason or "it broke the budget"
            notes.append(Note(f"Discarded stage {e.number} ({e.name}): {why}", "warning"))
        elif e.status == "excused" and e.reason:
            notes.append(Note(f"Excused stage {e.number} ({e.name}): {e.reason}", "info"))
        elif e.status == "not run":
            notes.append(Note(f"Not run: stage {e.number} ({e.name}), the run stopped before it", "info"))
    profiles = [e.profile for e in stage_entries(result) if e.profile is not None]
    if any(getattr(lat, "noisy", False) for p in profiles for lat in p.latency.values()):
        notes.append(Note(f"Latency is {NOISY_NOTE}", "warning"))
    return notes


def _stage_table(result: CompressResult, unit: SizeUnit) -> Table:
    bs = batch_size(result)
    metrics = list(result.original.metrics)
    columns = ["#", "stage", "status", "runtime", f"size ({unit.name})", "x orig", "params", "MACs"]
    columns += [f"p50 ms (batch {bs})", "p90 ms", "spread"] if bs is not None else []
    columns += [f"{m} ↓" if lower_is_better(result, m) else m for m in metrics] + ["time s"]
    rows, classes = [], []
    for e in stage_entries(result):
        p, lat = e.profile, latency_at(e.profile, bs)
        row = ["" if e.number is None else str(e.number), e.name, e.status]
        if p is None:
            row += ["-"] * (len(columns) - len(row))
        else:
            row += [
                p.runtime,
                unit.number(p.size_bytes),
                ratio_text(p.size_bytes, result.original.size_bytes),
                human_count(p.params),
                human_count(p.macs),
            ]
            if bs is not None:
                noisy = " (noisy)" if getattr(lat, "noisy", False) else ""
                row += [f"{lat.p50_ms:.3f}", f"{lat.p90_ms:.3f}", f"{lat.spread:.2f}{noisy}"] if lat else ["-"] * 3
            row += [format_metric(m, p.metrics[m]) if m in p.metrics else "-" for m in metrics]
            row.append(f"{e.seconds:.1f}" if e.seconds is not None else "-")
        rows.append(tuple(row))
        classes.append(e.status.replace(" ", "-"))
    caption = (
        f"Sizes are the bytes of the saved artifact in {unit.name} (1 {unit.name} = {unit.scale:,} bytes); "
        f"x orig = size / the original's. Latency on the target runtime, {threads_text(result.original.threads)}, "
        "warm-up excluded; spread = p90 / p50. Metrics on the test split"
        + (" (↓: lower is better)." if any(lower_is_better(result, m) for m in metrics) else ".")
    )
    align = "rll" + "l" + "r" * (len(columns) - 4)
    return Table(tuple(columns), tuple(rows), align, caption, tuple(classes))


def _data_table(result: CompressResult) -> Table:
    bs = batch_size(result)
    metric = main_metric(result)
    rows = []
    if metric:
        names = ", ".join(result.original.metrics)
        rows.append(("metrics: " + names, "test split"))
    if bs is not None:
        rows.append(("latency", f"one test-split sample, repeated to batch size {bs}"))
    rows.append(("params", "counted in PyTorch"))
    rows.append(("MACs, peak memory", "one test-split sample, in PyTorch"))
    rows.append(("size", "bytes of the saved artifact file"))
    for e in stage_entries(result):
        if e.number is None:
            continue
        rows.append((f"stage {e.number}: {e.name}", _stage_data(e)))
    return Table(("what", "data"), tuple(rows), "ll", "Which data split each figure and stage used.")


def _stage_data(entry: StageEntry) -> str:
    if entry.status == "not run":
        return "- (not run)"
    kind = entry.name.split(":", 1)[0]
    record = entry.training or {}
    if kind == "finetune" or record:
        keys = ("selected_on", "selection_split", "selection", "eval_split")
        key = next((k for k in keys if k in record), None)
        if key is None:
            return "train split (training)"
        if record[key]:
            return f"train split (training); best epoch chosen on the {record[key]} split"
        return "train split (training); no split to choose an epoch on: the last epoch is kept"
    if kind == "quantize":
        return "calibration split (when the method calibrates)"
    return "train split (when the method reads data)"


def _training_table(result: CompressResult) -> Table | None:
    records = [(e, e.training) for e in stage_entries(result) if e.training]
    if not records:
        return None
    keys: list[str] = []
    for _, record in records:
        keys += [k for k in record if k not in keys]
    rows = tuple((str(e.number), e.name, *(_value_text(record.get(k)) for k in keys)) for e, record in records)
    return Table(("#", "stage", *keys), rows, "rl" + "l" * len(keys), "What each training stage did (its record).")


def _value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        if all(isinstance(v, (int, float)) for v in value) and len(value) > 1:
            return f"{_value_text(value[0])} → {_value_text(value[-1])} ({len(value)} values)"
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _layers_table(result: CompressResult) -> Table:
    before = {}
    original_model = getattr(result, "original_model", None)
    if original_model is not None:
        before = {i.name: i.params for i in layer_infos(original_model)}
    infos = layer_infos(result.model)
    columns = ("layer", "type", "params", "original params", "sparsity", "bits")
    rows = tuple(
        (
            i.name,
            i.kind,
            f"{i.params:,}",
            f"{before[i.name]:,}" if i.name in before else "-",
            f"{100 * i.sparsity:.1f} %",
            str(i.bits),
        )
        for i in infos
    )
    entry = _final_entry(result)
    which = f"stage {entry.number} ({entry.name})" if entry.number else "the original"
    caption = (
        f"Weight-carrying layers of the final model, {which}: sparsity = share of zero weights; bits per stored weight."
    )
    return Table(columns, rows, "llrrrr", caption, mono=(0,))


def _files(result: CompressResult, unit: SizeUnit, folder: Path | None) -> list[Block]:
    blocks: list[Block] = []
    measured = [e for e in stage_entries(result) if e.artifact or e.sha256]
    if measured:
        rows = tuple(
            (
                "" if e.number is None else str(e.number),
                e.name,
                _shown_path(e.artifact, folder),
                e.sha256 or "-",
            )
            for e in measured
        )
        blocks.append(
            Table(
                ("#", "stage", "measured file", "sha256"),
                rows,
                "rlll",
                "The artifact each row of the stage table was measured on.",
                mono=(2, 3),
            )
        )
    rows = []
    for fmt, path in sorted((getattr(result, "artifacts", None) or {}).items()):
        path = Path(path)
        if not path.exists() and folder is not None and (Path(folder) / path.name).exists():
            path = Path(folder) / path.name  # reports are written before the folder is published
        size = unit.text(path.stat().st_size) if path.is_file() else "-"
        rows.append((path.name, f"exported ({fmt})", size, _sha256(path)))
    if folder is not None:
        for name in SAVED_FILES:
            path = Path(folder) / name
            if path.is_file():
                rows.append((name, "final model (sk.load)", unit.text(path.stat().st_size), _sha256(path)))
    if rows:
        blocks.append(
            Table(
                ("file", "what", "size", "sha256"), tuple(rows), "llrl", "Files written with this report.", mono=(0, 3)
            )
        )
    else:
        blocks.append(Note("No files were exported."))
    return blocks


def _shown_path(path: str | None, folder: Path | None) -> str:
    """A measured file as a reader finds it: a relative path as recorded (inside the run's
    working folder), an absolute one relative to the report's folder, else its name."""
    if not path:
        return "-"
    if not Path(path).is_absolute():
        return Path(path).as_posix()
    if folder is not None:
        try:
            return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
        except ValueError:
            pass
    return Path(path).name


def _sha256(path: Path) -> str:
    if not path.is_file():
        return "-"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _recipe(result: CompressResult) -> Block:
    recipe = getattr(result, "recipe", None)
    if recipe is None:
        return Note("No recipe was recorded.")
    import yaml

    raw = recipe.model_dump(mode="json", exclude_none=True) if hasattr(recipe, "model_dump") else dict(recipe)
    # stages as a recipe file writes them: `- prune: {method: channels, ratio: 0.5}`
    raw["stages"] = [
        {s["kind"]: s.get("options", {})} if isinstance(s, dict) and "kind" in s else s for s in raw.get("stages", [])
    ]
    return Code(
        yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None).rstrip(), "yaml"
    )


def environment(result: CompressResult) -> dict[str, str]:
    """Versions and machine facts that produced the figures (also stored in ``report.json``)."""
    import torch

    import slimkit

    facts = {
        "slimkit": slimkit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    runtime = result.original.runtime
    for package in RUNTIME_PACKAGES.get(runtime, ()):
        facts[package] = _version(package)
    threads = sorted({e.profile.threads for e in stage_entries(result) if e.profile is not None})
    facts["threads"] = ", ".join(threads_text(t) for t in threads) + " (intra-op, for every latency figure)"
    facts["machine"] = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores"
    return facts


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
