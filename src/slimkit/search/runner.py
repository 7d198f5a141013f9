"""Running a search's trials: here, one after another, or as Ray tasks on a cluster.

Optuna asks and is told in this process only (one writer of the study, so parallel trials
cannot corrupt it); a trial's work (apply the recipe, export, measure) is a picklable
`Evaluator` call that runs in a temporary folder of its own, here or on a Ray worker.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.errors import InvalidConfigError, SlimkitError, first_line, require
from slimkit.pipeline.recipe import Target
from slimkit.pipeline.target import measure_on_target
from slimkit.search.candidates import apply_stages

Backend = Literal["local", "ray"]


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


@dataclass
class Evaluator:
    """Applies a trial's stages to the model and measures the result on the target (picklable)."""

    model: nn.Module
    target: Target
    view: DataSplits
    """The data the trial is scored on (its test split is the search's calibration split)."""
    calibration: Any
    example_inputs: Any
    key: str
    higher_is_better: bool
    baseline: float | None = None
    train: Any = None
    """Training data of ``finetune`` stages (top-k fine-tuning)."""
    seed: int = 0
    latency_table: Any = None
    """A `latency_table.LatencyTable`: latency is its prediction instead of the measured p50."""

    def measure(self, candidate: nn.Module, view: DataSplits, folder: Path, baseline: float | None) -> Measured:
        """``candidate`` exported to the target and measured on ``view``'s test split."""
        profile, _, _ = measure_on_target(
            candidate, self.target, view, reference=self.model, example_inputs=self.example_inputs, folder=folder
        )
        metric = profile.metrics[self.key]
        drop = 0.0 if baseline is None else self.drop(baseline, metric)
        latency = profile.latency[1].p50_ms
        if self.latency_table is not None:
            latency = self.latency_table.predict_ms(candidate, self.example_inputs, view)
        return Measured(latency, profile.size_bytes, metric, drop)

    def drop(self, baseline: float, metric: float) -> float:
        """How much worse ``metric`` is than ``baseline`` (negative: better)."""
        return baseline - metric if self.higher_is_better else metric - baseline

    def apply(self, stages: list[dict[str, Any]], start: nn.Module | None = None) -> nn.Module:
        """``stages`` applied to ``start`` (default: the model)."""
        return apply_stages(
            self.model if start is None else start, stages, data=self.calibration, example_inputs=self.example_inputs,
            train=self.train, seed=self.seed,
        )  # fmt: skip

    def __call__(
        self, stages: list[dict[str, Any]], start: nn.Module | None = None
    ) -> tuple[Measured | None, str | None]:
        """``(figures, None)``, or ``(None, why)`` when a stage refuses the model; ``start``: the
        model the stages are applied to (default: the model; the metric is still against it)."""
        with tempfile.TemporaryDirectory(prefix="slimkit-trial-") as folder:
            try:
                candidate = self.apply(stages, start)
                return self.measure(candidate, self.view, Path(folder), self.baseline), None
            except SlimkitError as exc:
                return None, first_line(exc)

    def test(self, stages: list[dict[str, Any]], view: DataSplits) -> Measured:
        """``stages`` applied to the model and measured on ``view``'s test split (``drop`` 0:
        the caller sets it against the unchanged model measured the same way).

        Raises:
            SlimkitError: a stage refuses the model or the target refuses the result.
        """
        with tempfile.TemporaryDirectory(prefix="slimkit-test-") as folder:
            return self.measure(self.apply(stages) if stages else self.model, view, Path(folder), None)


def _on_ray_worker(evaluator: Evaluator, method: str, *args: Any) -> Any:
    """``evaluator.METHOD(*args)`` in a Ray task, on one core (the tasks share the machine)."""
    torch.set_num_threads(1)
    return getattr(evaluator, method)(*args)


def _results(ray: Any, refs: Any) -> Any:
    """``ray.get(refs)``; a task's exception (a bug, not a refusal) is raised as itself."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        raise exc.as_instanceof_cause() from None


def measure_all(
    evaluator: Evaluator, recipes: list[list[dict[str, Any]]], view: DataSplits, *,
    backend: Backend = "local", workers: int = 1, ray_address: str | None = None,
) -> list[Measured]:  # fmt: skip
    """Every recipe's model measured on ``view``'s test split (`Evaluator.test`), in order:
    one after another here, or at once as Ray tasks (the search's front, re-measured on data
    the selection never saw)."""
    if backend == "local" or len(recipes) < 2:
        return [evaluator.test(stages, view) for stages in recipes]
    ray = _ray(workers, ray_address)
    task = ray.remote(num_cpus=1)(_on_ray_worker)
    shared, shared_view = ray.put(evaluator), ray.put(view)
    return _results(ray, [task.remote(shared, "test", stages, shared_view) for stages in recipes])


Told = Callable[[Any, list[dict[str, Any]], Measured | None, str | None], None]


Propose = Callable[[Any], list[dict[str, Any]]]
"""A trial's recipe stages (`space.sample_stages` with the search's space and planner)."""


def run_trials(
    study: Any, count: int, propose: Propose, evaluator: Evaluator, tell: Told, *,
    backend: Backend = "local", workers: int = 1, ray_address: str | None = None,
) -> None:  # fmt: skip
    """Ask the study for ``count`` trials, evaluate them, and tell it each result (``tell``);
    trials are proposed here, in the driver, and evaluated locally or as Ray tasks."""
    if backend == "local":
        for _ in range(count):
            trial = study.ask()
            stages = propose(trial)
            tell(trial, stages, *evaluator(stages))
        return
    if backend != "ray":
        raise InvalidConfigError(f"backend must be 'local' or 'ray', got {backend!r}")
    _run_on_ray(study, count, propose, evaluator, tell, workers, ray_address)


def _ray(workers: int, address: str | None) -> Any:
    """The ray module, connected (to ``address``, else a local Ray with ``workers`` CPUs)."""
    ray = require("ray", "ray")
    if workers < 1:
        raise InvalidConfigError(f"workers must be at least 1, got {workers}")
    if not ray.is_initialized():
        options = {"address": address} if address else {"num_cpus": workers}
        ray.init(**options, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def _run_on_ray(
    study: Any, count: int, propose: Propose, evaluator: Evaluator, tell: Told, workers: int, address: str | None
) -> None:
    ray = _ray(workers, address)
    task = ray.remote(num_cpus=1)(_on_ray_worker)
    shared = ray.put(evaluator)
    pending: dict[Any, tuple[Any, list[dict[str, Any]]]] = {}
    left = count
    while left or pending:
        while left and len(pending) < workers:
            trial = study.ask()
            stages = propose(trial)
            pending[task.remote(shared, "__call__", stages)] = (trial, stages)
            left -= 1
        (done,), _ = ray.wait(list(pending), num_returns=1)
        trial, stages = pending.pop(done)
        tell(trial, stages, *_results(ray, done))
