"""The flow every single-technique command shares: load, apply, fine-tune, measure, save, print."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slimkit.cli.common import check_out, out, parse_batch_sizes, progress, staged_out
from slimkit.cli.profile import example_data
from slimkit.cli.shared import Run

log = logging.getLogger(__name__)

Split = Literal["train", "calibration"]


@dataclass
class Technique:
    """What a command asks for: the verb, its method and options, and how to use the data."""

    verb: str
    method: str
    options: dict[str, Any]
    split: Split | None = "train"
    """Which data split the method itself receives (None: no data)."""
    needs_data: bool = False
    max_drop: float | None = None
    """Keep in float the fewest layers that hold the metric drop to this (`slimkit.search.fallback`)."""


def _apply(technique: Technique, model: Any, data: Any, metric: Any, **kwargs: Any) -> Any:
    """The verb on ``model``, or, with a ``max_drop``, the accuracy-aware fallback of it."""
    from slimkit.core.registry import apply

    if technique.max_drop is None:
        return apply(technique.verb, model, technique.method, data=data, **kwargs, **technique.options)
    from slimkit.core.errors import InvalidConfigError
    from slimkit.search import fallback

    if technique.verb != "quantize" or data is None:
        raise InvalidConfigError("--max-drop needs a quantize method and --data (its calibration split is scored)")
    kwargs.pop("example_inputs")
    return fallback(
        model, data, max_metric_drop=technique.max_drop, method=technique.method, metric=metric,
        **kwargs, **technique.options,
    ).model  # fmt: skip


def finetune_from(model: Any, original: Any, splits: Any, epochs: int, quiet: bool = False) -> Any:
    """Recover accuracy (task loss) or fidelity (embedding distillation from the original).

    The best epoch is chosen on the calibration split, never on the test split the result
    is reported on. A progress bar shows the epochs unless ``quiet``.
    """
    from slimkit.training import finetune

    if splits.metric == "fidelity":
        return finetune(model, splits.train, epochs=epochs, teacher=original, distill="embedding", quiet=quiet)
    return finetune(model, splits.train, epochs=epochs, eval_data=splits.calibration, metric=splits.metric, quiet=quiet)


def run_technique(technique: Technique, model: str, out_dir: Path, run: Run) -> tuple[Any, Any]:
    """Apply ``technique`` to ``model``, optionally fine-tune, save to ``out_dir``.

    ``out_dir`` must not exist unless ``run.overwrite``; the result is written beside it and
    renamed into place, so a failed run leaves the old folder (or none) untouched. Sample
    inputs come from the data's first batch when there is data.

    Returns:
        The before/after `Comparison` and the transform's `Outcome` (what changed, what was
        skipped and why, the method's details).
    """
    from slimkit.core.errors import InvalidConfigError
    from slimkit.core.io import save
    from slimkit.core.outcome import explain
    from slimkit.core.samples import example_batch
    from slimkit.core.specs import load_data, load_model
    from slimkit.measure.profile import compare
    from slimkit.profiling import profile

    sizes = parse_batch_sizes(run.batch_sizes)
    metric = run.chosen_metric()
    check_out(out_dir, run.overwrite, model)
    data_spec = example_data(model, run.data)
    if run.finetune_epochs and data_spec is None:
        raise InvalidConfigError("--finetune-epochs needs --data (a dataset with a train split)")
    if technique.needs_data and data_spec is None:
        raise InvalidConfigError(f"method {technique.method!r} needs --data (a dataset with a train split)")
    with progress(f"{technique.verb}: {model} with {technique.method}", run.silent):
        original = load_model(model, weights=run.weights, trust_pickle=run.trust_pickle)
        splits = load_data(data_spec) if data_spec else None
        given = getattr(splits, technique.split) if splits is not None and technique.split else None
        sample = example_batch(original, None, splits, technique.verb) if splits is not None else None
        with warnings.catch_warnings():  # skipped layers are in the outcome, printed by the command
            warnings.simplefilter("ignore", UserWarning)
            result = _apply(
                technique, original, given, metric or getattr(splits, "metric", None), include=run.include,
                exclude=run.exclude, example_inputs=None if sample is None else (sample.kwargs or sample.args),
                device=run.device,
            )  # fmt: skip
        outcome = explain(result)
    if run.finetune_epochs and splits is not None:
        log.info("fine-tuning for %d epoch(s) on the train split", run.finetune_epochs)
        result = finetune_from(result, original, splits, run.finetune_epochs, quiet=run.silent)
    threads = run.threads
    with progress(f"measuring {model} and the result ({threads} thread{'s' if threads > 1 else ''})", run.silent):
        before = profile(original, data=splits, metric=metric, reference=original, batch_sizes=sizes, threads=threads)
        after = profile(result, data=splits, metric=metric, reference=original, batch_sizes=sizes, threads=threads)
        with staged_out(out_dir, run.overwrite) as stage:
            save(result, stage)
    log.info("saved %s", out_dir)
    before.name, after.name = model, f"{technique.method} -> {out_dir}"
    return compare(before, after), outcome


def outcome_lines(outcome: Any) -> list[str]:
    """What any verb did, for people: how many modules changed, then each skipped layer and why."""
    lines = [f"  {outcome.verb}:{outcome.method} changed {len(outcome.changed)} module(s)"]
    return lines + [f"  {name}: left as is ({reason})" for name, reason in outcome.skipped.items()]


def show_technique(comparison: Any, outcome: Any, lines: Iterable[str], out_dir: Path, as_json: bool) -> None:
    """Print the comparison table, the method's detail lines and the outcome, or all of it as JSON."""
    from slimkit.report import comparison_table

    if as_json:
        document = {**comparison.to_dict(), **outcome.to_dict(), "out": str(out_dir)}
        print(json.dumps(document, indent=2, default=str))
        return
    out.print(comparison_table(comparison))
    for line in [*lines, *outcome_lines(outcome)]:
        out.print(line, markup=False)
    out.print(f"saved to {out_dir}", markup=False)
