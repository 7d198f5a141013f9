"""What a compress result holds, read once for every part of a report (and the terminal table).

Fields a `CompressResult` / `StageResult` may or may not carry (why a stage was discarded,
which file it measured and its sha256, training records) are read with defaults, so older
and newer results both render.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slimkit.report.tables import format_metric, human_count, threads_text
from slimkit.report.units import SizeUnit

if TYPE_CHECKING:
    from slimkit.measure.profile import Profile
    from slimkit.pipeline.compress import CompressResult


def _attr(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


@dataclass(frozen=True)
class StageEntry:
    """One row of the stage table: the original, an eager baseline, or a stage that ran (or did not)."""

    number: int | None
    name: str
    profile: Profile | None
    status: str
    """``"input"``, ``"reference"``, ``"kept"``, ``"excused"`` (kept outside the budget: a finetune
    follows), ``"final"``, ``"discarded"`` or ``"not run"``."""
    reason: str | None = None
    seconds: float | None = None
    artifact: str | None = None
    sha256: str | None = None
    training: Mapping[str, Any] | None = None


def stage_entries(result: CompressResult) -> list[StageEntry]:
    """The original (and an eager-PyTorch baseline when the target is another runtime), every
    stage that ran, then the recipe's stages that never ran because the run stopped."""
    entries: list[StageEntry] = []
    baseline = getattr(result, "baseline", None)
    if baseline is not None:
        entries.append(StageEntry(None, "original, eager torch", baseline, "reference"))
    measured = getattr(result, "measured", None)
    measured = measured if isinstance(measured, Mapping) else {}
    entries.append(
        StageEntry(
            None,
            "original",
            result.original,
            "input",
            artifact=_path_text(_attr(result, "original_artifact", default=measured.get("file"))),
            sha256=_attr(result, "original_sha256", default=measured.get("sha256")),
        )
    )
    stages = list(result.stages)
    kept = [i for i, s in enumerate(stages) if getattr(s, "kept", True)]
    final = kept[-1] if kept else None
    records = iter(training_records(result))
    for i, stage in enumerate(stages):
        is_kept = getattr(stage, "kept", True)
        status = (
            ("final" if i == final else STATUS.get(getattr(stage, "status", ""), "kept")) if is_kept else "discarded"
        )
        training = _attr(stage, "training")
        if training is None and is_kept and stage.name.split(":")[0] in TRAINING_STAGES:
            training = next(records, None)
        entries.append(
            StageEntry(
                getattr(stage, "index", 0) or i + 1,
                stage.name,
                stage.profile,
                status,
                reason=_attr(stage, "reason", "discarded_reason", "why"),
                seconds=getattr(stage, "seconds", None),
                artifact=_path_text(_attr(stage, "artifact", "artifact_path", "measured")),
                sha256=_attr(stage, "sha256", "artifact_sha256"),
                training=training,
            )
        )
    recipe = getattr(result, "recipe", None)
    planned = list(getattr(recipe, "stages", []) or [])
    for i in range(len(stages), len(planned)):
        entries.append(StageEntry(i + 1, _stage_label(planned[i]), None, "not run"))
    return entries


STATUS = {"met": "kept", "excused": "excused"}
"""How a kept stage's pipeline status reads in the report (the last kept stage reads ``final``)."""
TRAINING_STAGES = ("finetune", "distill")
"""Stage kinds that leave a training record on the model."""


def training_records(result: CompressResult) -> list[Mapping[str, Any]]:
    """The values of the training transforms in the final model's record, in order (one per
    kept fine-tuning stage: epochs, lr, loss, teacher, data fingerprint, ...)."""
    from slimkit.core import record

    verb = getattr(record, "TRAINING", "train")
    return [t.config for t in record.get_record(result.model).transforms if t.verb == verb]


def _stage_label(stage: Any) -> str:
    label = getattr(stage, "label", None)
    return str(label) if label else str(getattr(stage, "kind", "stage"))


def _path_text(path: Any) -> str | None:
    return None if path is None else str(path)


def main_metric(result: CompressResult) -> str | None:
    """The metric a reader judges by (the one budgets read): a user metric, else accuracy, else cosine."""
    metrics = result.original.metrics
    own = [name for name in metrics if name not in ("accuracy", "cosine", "sqnr_db")]
    return next((name for name in (*own, "accuracy", "cosine") if name in metrics), None)


def lower_is_better(result: CompressResult, metric: str) -> bool:
    """Whether a smaller ``metric`` is better (the recipe's direction first, then the profile's)."""
    target = getattr(getattr(result, "recipe", None), "target", None)
    higher = getattr(target, "higher_is_better", None)
    if higher is not None and metric == main_metric(result):
        return not higher
    return metric in (getattr(result.original, "lower_is_better", None) or [])


def size_unit(result: CompressResult) -> SizeUnit:
    """The one size unit of a report (from every size it shows)."""
    sizes = [e.profile.size_bytes for e in stage_entries(result) if e.profile is not None]
    return SizeUnit.for_sizes(sizes)


def batch_size(result: CompressResult) -> int | None:
    """The batch size latency figures show (the first one timed)."""
    return min(result.original.latency) if result.original.latency else None


def latency_at(p: Profile | None, bs: int | None) -> Any:
    """``p``'s latency at batch size ``bs`` (None when not timed)."""
    return None if p is None or bs is None else p.latency.get(bs)


def ratio_text(after: float | None, before: float | None) -> str:
    """``after / before`` to 3 decimals, ``"-"`` when either is unknown."""
    if after is None or not before:
        return "-"
    return f"{after / before:.3f}"


# ---- the terminal table (fits 80 columns) -----------------------------------------------

COLUMNS = ("#", "stage", "size", "x orig", "params", "MACs", "p50 ms", "metric")
"""Generic headers of `stage_rows`; `stage_columns` names the size unit and the metric."""
DISCARDED_MARK = "✗"


def stage_columns(result: CompressResult) -> tuple[str, ...]:
    """Headers of `stage_rows` for this result: the size unit and the metric's name filled in."""
    metric = main_metric(result) or "metric"
    return ("#", "stage", f"size {size_unit(result).name}", "x orig", "params", "MACs", "p50 ms", metric)


def stage_rows(result: CompressResult) -> list[tuple[str, ...]]:
    """Short rows for a terminal (see `COLUMNS`): the original, then every stage that ran.

    Sizes are in the report's one unit without the unit name, the metric column is the main
    metric's value; a discarded stage's number carries `DISCARDED_MARK`.
    """
    unit, metric, bs = size_unit(result), main_metric(result), batch_size(result)
    original = result.original.size_bytes
    rows = []
    for e in stage_entries(result):
        if e.profile is None:
            continue
        p, lat = e.profile, latency_at(e.profile, bs)
        number = "" if e.number is None else str(e.number)
        name = e.name if e.status != "reference" else "original (torch)"
        rows.append(
            (
                f"{number} {DISCARDED_MARK}" if e.status == "discarded" else number,
                name,
                unit.number(p.size_bytes),
                ratio_text(p.size_bytes, original),
                human_count(p.params),
                human_count(p.macs),
                f"{lat.p50_ms:.3f}" if lat else "-",
                _metric_value(p, metric),
            )
        )
    return rows


def _metric_value(p: Profile, metric: str | None) -> str:
    if metric is None or metric not in p.metrics:
        return "-"
    value = p.metrics[metric]
    return "nan" if math.isnan(value) else format_metric(metric, value).removesuffix(" dB")


def stage_caption(result: CompressResult) -> str:
    """What the terminal table's figures are: runtime, threads, batch size, split, marks."""
    p, bs = result.original, batch_size(result)
    parts = [f"on {p.runtime}, {threads_text(p.threads)}"]
    if bs is not None:
        parts.append(f"latency at batch {bs}")
    if main_metric(result):
        parts.append("metric on the test split")
    text = "; ".join(parts)
    if any(e.status == "discarded" for e in stage_entries(result)):
        text += f"\n{DISCARDED_MARK} discarded: broke the budget, its model was not kept"
    return text
