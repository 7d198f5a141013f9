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
from slimkit.core.formats import RUNTIMES, artifact_of
from slimkit.core.specs import load_data
from slimkit.measure.profile import Profile
from slimkit.pipeline.recipe import Target, load_recipe
from slimkit.pipeline.target import measure_on_target, target_metric
from slimkit.search.candidates import apply_stages
from slimkit.search.pareto import pareto_front
from slimkit.search.space import SearchSpace, sample_stages, warm_starts

OBJECTIVES = ("latency", "size", "drop")
"""What `search` can minimise: p50 latency at batch 1 (ms), artifact bytes, metric drop."""
CONSTRAINTS = ("max_metric_drop",)


@dataclass
class Measured:
    """A model measured on the target: latency (ms, batch 1), artifact bytes, metric and drop."""

    latency_ms: float
    size_bytes: int
    metric: float
    drop: float

    def value(self, objective: str) -> float:
        """The figure an objective minimises."""
        return {"latency": self.latency_ms, "size": float(self.size_bytes), "drop": self.drop}[objective]

    @classmethod
    def of(cls, profile: Profile, key: str, baseline: float | None, higher_is_better: bool) -> Measured:
        """From a target `Profile`; ``baseline`` None measures the baseline itself (drop 0)."""
        metric = profile.metrics[key]
        drop = 0.0 if baseline is None else (baseline - metric if higher_is_better else metric - baseline)
        return cls(profile.latency[1].p50_ms, profile.size_bytes, metric, drop)


@dataclass
class TrialRecord:
    """One trial: its stages, and its figures on the calibration split or why it failed."""

    number: int
    stages: list[dict[str, Any]]
    selection: Measured | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "number": self.number,
            "stages": self.stages,
            "selection": None if self.selection is None else vars(self.selection),
            "error": self.error,
        }


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
    """

    objectives: tuple[str, ...]
    original: Measured
    front: list[FrontPoint]
    trials: list[TrialRecord] = field(default_factory=list)
    metric: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "objectives": list(self.objectives),
            "metric": self.metric,
            "original": vars(self.original),
            "front": [p.to_dict() for p in self.front],
            "trials": [t.to_dict() for t in self.trials],
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
) -> SearchResult:
    """Search recipes for the Pareto front of ``objectives`` on the target runtime.

    Args:
        model: the original model (not modified).
        data: a `DataSplits` or a data spec: trials are scored on its calibration split,
            the front again on its test split.
        target: the runtime trials are exported to and timed on (``onnxruntime``, ``torch``, ...).
        objectives: what to minimise, among ``latency``, ``size`` and ``drop``.
        constraints: ``{"max_metric_drop": x}``: trials that drop more are infeasible.
        trials: how many recipes to try; the first ones try each quantization method alone
            (`space.warm_starts`).
        seed: the sampler's seed (the same seed proposes the same recipes).
        space: what trials choose from (default: `SearchSpace()`).
        example_inputs: sample inputs for tracing and export (default: one data sample).
        model_spec: the model's spec, written into the front's recipes (default: the
            model's recorded source).
        data_spec: the data spec, written into the front's recipes.

    Returns:
        A `SearchResult`; trials that raised a `SlimkitError` are listed as failed.

    Raises:
        InvalidConfigError: bad objectives, constraints, target or data.
        MissingExtraError: optuna is not installed (``pip install 'slimkit[search]'``).
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
    key, higher = getattr(metric, "key", "accuracy"), getattr(metric, "higher_is_better", True)

    with tempfile.TemporaryDirectory(prefix="slimkit-search-") as tmp:

        def measure(candidate: nn.Module, view: DataSplits, baseline: float | None, name: str) -> Measured:
            folder = Path(tmp) / name
            folder.mkdir()
            profile, _, _ = measure_on_target(
                candidate, goal, view, reference=model, example_inputs=example_inputs, folder=folder
            )
            return Measured.of(profile, key, baseline, higher)

        unchanged = measure(model, selection, None, "original-selection")
        records: list[TrialRecord] = []

        def objective(trial: Any) -> tuple[float, ...]:
            stages = sample_stages(trial, space)
            record = TrialRecord(trial.number, stages, None)
            records.append(record)
            try:
                candidate = apply_stages(model, stages, data=splits.calibration, example_inputs=example_inputs)
                record.selection = measure(candidate, selection, unchanged.metric, f"trial-{trial.number}")
            except SlimkitError as exc:
                record.error = first_line(exc)
                raise
            _constrain(trial, record.selection.drop - budget)
            return tuple(record.selection.value(o) for o in objectives)

        sampler = _sampler(optuna, seed)
        study = optuna.create_study(directions=["minimize"] * len(objectives), sampler=sampler)
        for params in warm_starts(space, trials):
            study.enqueue_trial(params)
        study.optimize(objective, n_trials=trials, catch=(SlimkitError,))

        feasible = [r for r in records if r.selection is not None and r.selection.drop <= budget]
        # the unchanged model takes part, so a recipe no better than doing nothing is not on the front
        ranked = pareto_front(
            [None, *feasible], lambda r: [(r.selection if r else unchanged).value(o) for o in objectives]
        )
        chosen = [r for r in ranked if r is not None]
        original = measure(model, splits, None, "original-test")
        front = []
        for record in chosen:
            candidate = apply_stages(model, record.stages, data=splits.calibration, example_inputs=example_inputs)
            tested = measure(candidate, splits, original.metric, f"front-{record.number}")
            recipe = front_recipe(record.stages, goal, budget, seed, model_spec or _source(model), data_spec)
            front.append(FrontPoint(record.number, recipe, record.selection, tested))
    return SearchResult(tuple(objectives), original, front, records, key)


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
