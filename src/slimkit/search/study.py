"""`search`: multi-objective search over recipes, measured on the target runtime.

Every trial is a recipe (`space.sample_stages`) applied with the verbs to the original
model, exported to the target runtime and measured there (`pipeline.target.measure_on_target`,
one intra-op thread): latency at batch 1, artifact size and the metric on the calibration
split. Optuna's seeded NSGA-II sampler proposes the trials; ``max_metric_drop`` is a
constraint; the first trials try each quantization alone. The Pareto front of the
feasible trials (leaving out any the unchanged model dominates) is then measured again on
the test split, which model selection never saw, and each point becomes a recipe
`slimkit compress` runs.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.errors import InvalidConfigError, SlimkitError, first_line, require
from slimkit.core.fields import fields_dict
from slimkit.core.formats import RUNTIMES, artifact_of
from slimkit.core.specs import load_data
from slimkit.pipeline.recipe import Target, load_recipe
from slimkit.pipeline.target import target_metric
from slimkit.search.latency_table import LatencyTable, table_for
from slimkit.search.mixed import MixedPrecision
from slimkit.search.pareto import dominates, pareto_front
from slimkit.search.runner import Backend, Evaluator, Measured, measure_all, run_trials
from slimkit.search.sensitivity import SensitivityTable
from slimkit.search.space import SearchSpace, sample_stages, warm_starts
from slimkit.search.store import STUDY_NAME, model_digest, open_study
from slimkit.training.config import Finetune

OBJECTIVES = ("latency", "size", "drop")
"""What `search` can minimise: p50 latency at batch 1 (ms), artifact bytes, metric drop."""
CONSTRAINTS = ("max_metric_drop",)


@dataclass
class TrialRecord:
    """One trial: its stages, and its figures on the calibration split or why it failed."""

    number: int
    stages: list[dict[str, Any]]
    selection: Measured | None
    error: str | None = None
    tuned_from: int | None = None
    """For a fine-tuned candidate: the trial whose recipe it fine-tunes."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return fields_dict(self, selection=None if self.selection is None else vars(self.selection))


@dataclass
class FrontPoint:
    """A Pareto-optimal recipe, re-measured on the test split."""

    trial: int
    recipe: dict[str, Any]
    selection: Measured
    test: Measured

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"trial": self.trial, "recipe": self.recipe, "selection": vars(self.selection), "test": vars(self.test)}


@dataclass
class SearchResult:
    """What `search` found.

    Attributes:
        objectives: the minimised figures, in order.
        original: the original model on the target, test split.
        front: the Pareto front (selection figures), each point re-measured on the test split.
        trials: every trial, failed ones with their error.
        metric: the metric's name.
        latency: where the latency figures come from: ``measured on RUNTIME``, or
            ``predicted by the latency table ...`` (``latency_table=``).
        sensitivity: the per-layer table the ``mixed`` choice planned from (None without it).
    """

    objectives: tuple[str, ...]
    original: Measured
    front: list[FrontPoint]
    trials: list[TrialRecord] = field(default_factory=list)
    metric: str = "accuracy"
    latency: str = "measured"
    sensitivity: SensitivityTable | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "objectives": list(self.objectives),
            "metric": self.metric,
            "latency": self.latency,
            "original": vars(self.original),
            "front": [p.to_dict() for p in self.front],
            "trials": [t.to_dict() for t in self.trials],
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
        }


def _check(objectives: Sequence[str], constraints: dict[str, float], trials: int) -> float:
    if not objectives or set(objectives) - set(OBJECTIVES) or len(set(objectives)) != len(objectives):
        raise InvalidConfigError(f"objectives must be distinct names among {', '.join(OBJECTIVES)}, got {objectives}")
    if unknown := set(constraints) - set(CONSTRAINTS):
        raise InvalidConfigError(f"unknown constraints {sorted(unknown)}; valid: {', '.join(CONSTRAINTS)}")
    if trials < 1:
        raise InvalidConfigError(f"trials must be at least 1, got {trials}")
    budget = constraints.get("max_metric_drop", float("inf"))
    if not budget >= 0:
        raise InvalidConfigError(f"max_metric_drop must be >= 0, got {budget}")
    return budget


def _splits(data: DataSplits | str) -> DataSplits:
    splits = load_data(data) if isinstance(data, str) else data
    if not isinstance(splits, DataSplits):
        raise InvalidConfigError(
            "search needs data with calibration and test splits (a DataSplits or a data spec such as "
            "example:digits): trials are chosen on calibration and the front is proved on test"
        )
    return splits


def _target(target: str | Target) -> Target:
    if isinstance(target, Target):
        return target
    try:
        return Target(runtime=target, batch_sizes=(1,), threads=1)
    except ValidationError:
        raise InvalidConfigError(f"unknown target {target!r}; valid targets: {', '.join(RUNTIMES)}") from None


def search(
    model: nn.Module,
    data: DataSplits | str,
    *,
    target: str = "onnxruntime",
    objectives: Sequence[str] = ("latency", "size"),
    constraints: dict[str, float] | None = None,
    trials: int = 20,
    seed: int = 0,
    space: SearchSpace | None = None,
    example_inputs: Any = None,
    model_spec: str | None = None,
    data_spec: str | None = None,
    storage: str | Path | None = None,
    study_name: str = STUDY_NAME,
    backend: Backend = "local",
    workers: int = 1,
    ray_address: str | None = None,
    finetune_top: int = 0,
    finetune: Finetune | dict[str, Any] | None = None,
    latency_table: str | Path | LatencyTable | None = None,
) -> SearchResult:
    """Search recipes for the Pareto front of ``objectives`` on the target runtime.

    Args:
        model: the original model (not modified).
        data: a `DataSplits` or a data spec: trials are scored on its calibration split,
            the front again on its test split.
        target: the runtime trials are exported to and timed on (``onnxruntime``, ``torch``, ...).
        objectives: what to minimise, among ``latency``, ``size`` and ``drop``.
        constraints: ``{"max_metric_drop": x}``: trials that drop more are infeasible.
        trials: how many trials the study holds when the search ends (a stored study that
            has ``k`` runs ``trials - k`` more); the first ones try each quantization method
            alone (`space.warm_starts`).
        seed: the sampler's seed (the same seed proposes the same recipes).
        space: what trials choose from (default: `SearchSpace()`).
        example_inputs: sample inputs for tracing and export (default: one data sample).
        model_spec: the model's spec, written into the front's recipes (default: the
            model's recorded source).
        data_spec: the data spec, written into the front's recipes.
        storage: the study's database (an Optuna storage URL, or a file path for SQLite);
            ``None`` keeps it in memory. A stored study of ``study_name`` is resumed.
        study_name: the study's name in ``storage``.
        backend: ``"local"`` (trials one after another here) or ``"ray"`` (Ray tasks).
        workers: trials run at once on Ray.
        ray_address: the Ray cluster (``"auto"``, ``"ray://host:10001"``); ``None`` starts a
            local Ray with ``workers`` CPUs.
        finetune_top: after the trials (cheap proxies: no training), fine-tune this many of
            the trials' structures (pruning/decomposition stages; `promising_structures`) once
            each on the data's train split, then apply every quantization the trials tried
            and measure each as a candidate of its own (a recipe that only fine-tuning brings
            within the budget can then reach the front).
        finetune: how (`training.config.Finetune`: ``epochs``, ``lr``, ``distill``; default
            2 epochs distilling from the model), inserted before the recipe's quantization.
        latency_table: a `LatencyTable` or its JSON file (``slimkit bench --lut``) measured on
            another device for the target runtime: every latency is the table's prediction
            for that device (the metric and size are still measured here).

    Returns:
        A `SearchResult`; trials whose recipe a stage refused are listed as failed.

    Raises:
        InvalidConfigError: bad objectives, constraints, target, data, a latency table measured
            for another runtime, or a stored study made for something else.
        MissingExtraError: optuna (``slimkit[search]``) or ray (``slimkit[ray]``) is missing.
    """
    budget = _check(objectives, constraints or {}, trials)
    goal = _target(target)
    splits = _splits(data)
    if isinstance(data, str):
        data_spec = data_spec or data
    optuna = require("optuna", "search")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    space = space or SearchSpace()
    selection = DataSplits(splits.train, splits.calibration, splits.calibration, splits.metric)
    metric = target_metric(goal, splits)
    key, higher = metric.key, metric.higher_is_better
    evaluator = Evaluator(model, goal, selection, splits.calibration, example_inputs, key, higher)
    identity = {
        "objectives": list(objectives), "target": goal.runtime, "max_metric_drop": str(budget), "metric": key,
        "space": repr(space), "model": model_digest(model),
    }  # fmt: skip
    latency = f"measured on {goal.runtime}"
    if latency_table is not None:
        evaluator.latency_table = table_for(latency_table, goal.runtime)
        latency = f"predicted by the latency table {_table_name(latency_table)} ({evaluator.latency_table.describe()})"
        identity["latency_table"] = evaluator.latency_table.describe()

    with tempfile.TemporaryDirectory(prefix="slimkit-search-") as tmp:

        def measure(candidate: nn.Module, view: DataSplits, baseline: float | None, name: str) -> Measured:
            (Path(tmp) / name).mkdir()
            return evaluator.measure(candidate, view, Path(tmp) / name, baseline)

        unchanged = measure(model, selection, None, "original-selection")
        evaluator.baseline = unchanged.metric
        directions = ["minimize"] * len(objectives)
        study, created = open_study(optuna, storage, study_name, directions, _sampler(optuna, seed), identity)
        if created:
            for params in warm_starts(space, trials):
                study.enqueue_trial(params)
        done = len(trial_records(study))
        study.sampler = _sampler(optuna, seed + done)  # a resumed study goes on, not from its first proposals

        def tell(trial: Any, stages: list[dict[str, Any]], measured: Measured | None, error: str | None) -> None:
            trial.set_user_attr("stages", stages)
            if measured is None:
                trial.set_user_attr("error", error)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return
            trial.set_user_attr("selection", vars(measured))
            _constrain(trial, measured.drop - budget)
            study.tell(trial, [measured.value(o) for o in objectives])

        planned = space.mixed and trials > done  # the table is estimated only when a trial may need it
        mixed = MixedPrecision.estimate(model, selection, space.bits, example_inputs) if planned else None
        run_trials(study, max(trials - done, 0), lambda trial: sample_stages(trial, space, mixed), evaluator, tell,
                   backend=backend, workers=workers, ray_address=ray_address)  # fmt: skip
        records = trial_records(study)
        if finetune_top:
            evaluator.train, evaluator.seed = splits.train, seed
            records += tuned_records(records, objectives, budget, finetune_top, _finetune_config(finetune), evaluator)
        feasible = [r for r in records if r.selection is not None and r.selection.drop <= budget]
        # the unchanged model takes part, so a recipe no better than doing nothing is not on the front
        ranked = pareto_front(
            [None, *feasible], lambda r: [(r.selection if r else unchanged).value(o) for o in objectives]
        )
        chosen = [r for r in ranked if r is not None]
        evaluator.train, evaluator.seed = splits.train, seed
        original, *tested = measure_all(evaluator, [[], *(r.stages for r in chosen)], splits, backend=backend,
                                     workers=workers, ray_address=ray_address)  # fmt: skip
        front = []
        for record, measured in zip(chosen, tested, strict=True):
            measured.drop = evaluator.drop(original.metric, measured.metric)
            recipe = front_recipe(record.stages, goal, budget, seed, model_spec or _source(model), data_spec)
            front.append(FrontPoint(record.number, recipe, record.selection, measured))
    return SearchResult(tuple(objectives), original, front, records, key, latency, mixed.table if mixed else None)


def _table_name(source: str | Path | LatencyTable) -> str:
    return "(given)" if isinstance(source, LatencyTable) else str(source)


def _finetune_config(finetune: Finetune | dict[str, Any] | None) -> Finetune:
    if isinstance(finetune, Finetune):
        return finetune
    return Finetune.build(**{"epochs": 2, "distill": True, **(finetune or {})})


def _split(stages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``stages`` cut before the first quantization: (structural stages, the rest)."""
    at = next((i for i, stage in enumerate(stages) if "quantize" in stage), len(stages))
    return stages[:at], stages[at:]


def with_finetune(stages: list[dict[str, Any]], config: Finetune) -> list[dict[str, Any]]:
    """``stages`` with a ``finetune`` stage before the first quantization (else at the end)."""
    structural, rest = _split(stages)
    return [*structural, {"finetune": config.model_dump(mode="json")}, *rest]


def _key(stages: list[dict[str, Any]]) -> str:
    return json.dumps(stages, sort_keys=True)


def promising_structures(
    records: list[TrialRecord], objectives: Sequence[str], budget: float, top: int
) -> list[TrialRecord]:
    """For the ``top`` most promising structures (a trial's pruning/decomposition stages), the
    trial of each that dropped least.

    A structure is worth training when one of its trials is not dominated on the objectives by
    a trial that already meets the budget; the structures are ranked by the least drop any of
    their trials measured: with BatchNorms re-estimated after pruning, the drop before
    fine-tuning predicts the drop after (EagleEye's adaptive-BN evaluation).
    """
    measured = [r for r in records if r.selection is not None and r.tuned_from is None]
    feasible = [[f.selection.value(o) for o in objectives] for f in measured if f.selection.drop <= budget]
    best: dict[str, TrialRecord] = {}
    for record in measured:
        structural = _split(record.stages)[0]
        point = [record.selection.value(o) for o in objectives]
        if not structural or any(dominates(f, point) for f in feasible):
            continue
        key = _key(structural)
        if key not in best or record.selection.drop < best[key].selection.drop:
            best[key] = record
    return sorted(best.values(), key=lambda r: r.selection.drop)[:top]


def tuned_records(
    records: list[TrialRecord], objectives: Sequence[str], budget: float, top: int, config: Finetune,
    evaluator: Evaluator,
) -> list[TrialRecord]:  # fmt: skip
    """Fine-tune each of the ``top`` `promising_structures` once, then apply to it every
    quantization the trials tried (and none), each measured as a candidate of its own."""
    tails = {_key(tail): tail for tail in (_split(r.stages)[1] for r in records if r.tuned_from is None)}
    tails.setdefault(_key([]), [])
    number = max((r.number for r in records), default=-1) + 1
    tuned: list[TrialRecord] = []
    for record in promising_structures(records, objectives, budget, top):
        trained_stages = with_finetune(_split(record.stages)[0], config)
        try:
            trained = evaluator.apply(trained_stages)
        except SlimkitError as exc:
            tuned.append(TrialRecord(number, trained_stages, None, first_line(exc), tuned_from=record.number))
            number += 1
            continue
        for tail in tails.values():
            selection, error = evaluator(tail, start=trained)
            tuned.append(TrialRecord(number, [*trained_stages, *tail], selection, error, tuned_from=record.number))
            number += 1
    return tuned


def trial_records(study: Any) -> list[TrialRecord]:
    """The finished trials of a study, read back from its stored attributes (trials a killed
    run left behind, which hold none, are not counted)."""
    records = []
    for trial in study.get_trials(deepcopy=False):
        if "stages" in trial.user_attrs:
            figures = trial.user_attrs.get("selection")
            selection = Measured(**figures) if figures else None
            error = trial.user_attrs.get("error")
            records.append(TrialRecord(trial.number, trial.user_attrs["stages"], selection, error))
    return records


def _sampler(optuna: Any, seed: int) -> Any:
    """Seeded NSGA-II reading the ``max_metric_drop`` constraint (optuna 5's `Trial.set_constraint`,
    else a ``constraints_func`` over the user attribute `_constrain` sets)."""
    if hasattr(optuna.trial.Trial, "set_constraint"):
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=lambda t: [t.user_attrs["constraint"]])


def _constrain(trial: Any, excess: float) -> None:
    """Record how far a trial is over the budget (<= 0: feasible)."""
    if hasattr(trial, "set_constraint"):
        trial.set_constraint("max_metric_drop", excess)
    else:
        trial.set_user_attr("constraint", excess)


def _source(model: nn.Module) -> str | None:
    from slimkit.core.record import get_record

    return get_record(model).source


def front_recipe(
    stages: list[dict[str, Any]], target: Target, budget: float, seed: int, model: str | None, data: str | None
) -> dict[str, Any]:
    """A recipe mapping `slimkit compress` accepts (validated with `load_recipe`)."""
    goal: dict[str, Any] = {"runtime": target.runtime, "batch_sizes": [1], "threads": 1}
    if budget != float("inf"):
        goal["max_metric_drop"] = budget
    recipe: dict[str, Any] = {"seed": seed, "stages": stages, "target": goal}
    if target.runtime != "torch":
        recipe["export"] = [artifact_of(target.runtime).name]
    recipe.update({k: v for k, v in (("model", model), ("data", data)) if v is not None})
    load_recipe(recipe)
    return recipe
