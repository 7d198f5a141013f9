"""`compress`: run a recipe stage by stage, measuring each stage on the target runtime."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.device import resolve_device
from slimkit.core.errors import InvalidConfigError
from slimkit.core.io import save
from slimkit.core.specs import load_data, load_model
from slimkit.measure.profile import Profile
from slimkit.pipeline.recipe import Recipe, Stage, load_recipe
from slimkit.pipeline.stages import StageInputs, run_stage
from slimkit.pipeline.target import measure_on_target
from slimkit.pipeline.workdir import WorkDir


@dataclass
class StageResult:
    """One finished stage: its label, the profile after it, and how long it took."""

    name: str
    profile: Profile
    seconds: float
    kept: bool = True
    """False when the stage broke the budget and its model was discarded."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "seconds": self.seconds, "kept": self.kept, "profile": self.profile.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StageResult:
        """Inverse of `to_dict` (used by resume)."""
        return cls(raw["name"], Profile.from_dict(raw["profile"]), raw["seconds"], raw.get("kept", True))


@dataclass
class CompressResult:
    """What `compress` produced.

    Attributes:
        model: the final model (the last kept stage's).
        original: the profile of the input model.
        stages: a result per stage run, in order.
        artifacts: exported files by format.
        stopped: why the run stopped early, or None.
        recipe: the recipe that ran.
    """

    model: nn.Module
    original: Profile
    stages: list[StageResult]
    artifacts: dict[str, Path] = field(default_factory=dict)
    stopped: str | None = None
    recipe: Recipe | None = None
    original_model: nn.Module | None = None
    baseline: Profile | None = None
    """The original model in eager PyTorch, when the target runtime is another one."""
    unmet: list[str] = field(default_factory=list)
    """Final size/latency targets of the recipe that the final model misses."""

    @property
    def final(self) -> Profile:
        """The profile of the final model."""
        kept = [s for s in self.stages if s.kept]
        return kept[-1].profile if kept else self.original

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "original": self.original.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "artifacts": {k: str(v) for k, v in self.artifacts.items()},
            "stopped": self.stopped,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "unmet": self.unmet,
            "recipe": self.recipe.model_dump(mode="json") if self.recipe else None,
        }


def _splits(data: Any, eval_data: Any, recipe: Recipe) -> DataSplits:
    data = data if data is not None else recipe.data
    if data is None:
        raise InvalidConfigError("compress needs data: pass data=... or set `data:` in the recipe")
    if isinstance(data, (str, os.PathLike)):
        data = load_data(str(data))
    splits = data if isinstance(data, DataSplits) else DataSplits.single(data)
    if eval_data is not None:
        test = load_data(str(eval_data)).test if isinstance(eval_data, (str, os.PathLike)) else eval_data
        splits = DataSplits(splits.train, splits.calibration, test, splits.metric)
    return splits


def _main_metric(p: Profile) -> tuple[str, float] | None:
    for name in ("accuracy", "cosine"):
        if name in p.metrics:
            return name, p.metrics[name]
    return None


def budget_violation(original: Profile, current: Profile, recipe: Recipe) -> str | None:
    """Why ``current`` breaks the recipe's budget (metric drop), or None."""
    limit = recipe.target.max_metric_drop
    before, after = _main_metric(original), _main_metric(current)
    if limit is None or before is None or after is None:
        return None
    drop = before[1] - after[1]
    if drop > limit:
        return (
            f"{before[0]} dropped by {drop:.4f} ({before[1]:.4f} -> {after[1]:.4f}), more than max_metric_drop={limit}"
        )
    return None


def unmet_targets(final: Profile, recipe: Recipe) -> list[str]:
    """The recipe's size and latency targets that ``final`` misses, as sentences."""
    target, misses = recipe.target, []
    size_mb = final.size_bytes / 1e6
    if target.max_size_mb is not None and size_mb > target.max_size_mb:
        misses.append(f"size {size_mb:.2f} MB is over max_size_mb={target.max_size_mb}")
    if target.max_latency_ms is not None and final.latency:
        p50 = final.latency[min(final.latency)].p50_ms
        if p50 > target.max_latency_ms:
            misses.append(f"latency p50 {p50:.3f} ms is over max_latency_ms={target.max_latency_ms}")
    return misses


def _recovers_later(stages: list[Stage], index: int) -> bool:
    return any(s.kind == "finetune" for s in stages[index + 1 :])


def recipe_digest(recipe: Recipe, model_spec: str) -> str:
    """A fingerprint of what a run computes, so `resume` refuses a changed recipe."""
    text = json.dumps([recipe.model_dump(mode="json"), model_spec], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compress(
    model: nn.Module | str | None,
    recipe: str | os.PathLike[str] | dict[str, Any] | Recipe,
    *,
    data: Iterable[Any] | DataSplits | str | None = None,
    eval_data: Iterable[Any] | str | None = None,
    example_inputs: Any = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    on_stage: Callable[[StageResult], None] | None = None,
) -> CompressResult:
    """Run a recipe: every stage in order, each measured; export; write ``out`` if given.

    Args:
        model: a module, a model spec, or None to use the recipe's ``model``.
        recipe: a YAML path, a bundled recipe name, a mapping or a `Recipe`.
        data: data splits (or a data spec / iterable); default: the recipe's ``data``.
        eval_data: held-out data overriding the splits' test split.
        example_inputs: inputs for tracing/export (default: from the model or the data).
        out: output folder (model, exported artifacts, reports), written atomically.
        resume: continue an interrupted run into ``out`` after its last finished stage.
        overwrite: replace an existing ``out``.
        device: where compression work runs ("auto": CUDA when present).
        on_stage: called after each stage (progress display).

    Raises:
        InvalidConfigError: bad recipe, missing data, existing ``out`` without overwrite.
    """
    recipe = load_recipe(recipe)
    spec = model if isinstance(model, str) else recipe.model
    if model is None and spec is None:
        raise InvalidConfigError("compress needs a model: pass one or set `model:` in the recipe")
    model = load_model(model if model is not None else spec)
    splits = _splits(data, eval_data, recipe)
    torch.manual_seed(recipe.seed)
    work = WorkDir.open(out, recipe_digest(recipe, str(spec)), resume=resume, overwrite=overwrite) if out else None

    original = model.eval()
    inputs = StageInputs(splits, example_inputs, original, str(resolve_device(device)), recipe.seed)

    def measure(m: nn.Module) -> tuple[Profile, Profile]:
        return measure_on_target(m, recipe.target, splits, reference=original, example_inputs=example_inputs)

    original_profile, eager = measure(original)
    baseline = eager if recipe.target.runtime != "torch" else None  # the original in eager PyTorch
    results: list[StageResult] = []
    current, stopped = original, None
    if work is not None and work.completed:
        current, results = work.restore()
    for index, stage in enumerate(recipe.stages):
        if index < len(results):
            continue
        start = time.perf_counter()
        candidate = run_stage(current, stage, inputs)
        result = StageResult(stage.label, measure(candidate)[0], time.perf_counter() - start)
        violation = (
            None
            if _recovers_later(recipe.stages, index)
            else budget_violation(original_profile, result.profile, recipe)
        )
        result.kept = violation is None
        results.append(result)
        if on_stage:
            on_stage(result)
        if violation:
            stopped = f"stopped after stage {index} ({stage.label}): {violation}; kept the model of the stage before"
            break
        current = candidate
        if work is not None:
            work.checkpoint(current, results)
    outcome = CompressResult(
        current.eval(),
        original_profile,
        results,
        stopped=stopped,
        recipe=recipe,
        original_model=original,
        baseline=baseline,
    )
    outcome.unmet = unmet_targets(outcome.final, recipe)
    if work is not None:
        _finish(outcome, work, example_inputs)
    return outcome


def _finish(result: CompressResult, work: WorkDir, example_inputs: Any) -> None:
    from slimkit.report.files import write_reports

    save(result.model, work.staging)
    if result.stopped is None:
        for fmt in result.recipe.export if result.recipe else []:
            result.artifacts[fmt] = _export(result.model, work.staging / f"model.{fmt}", example_inputs)
    write_reports(result, work.staging)
    published = work.publish()
    result.artifacts = {k: published / v.name for k, v in result.artifacts.items()}


def _export(model: nn.Module, path: Path, example_inputs: Any) -> Path:
    from slimkit.runtime import export

    return Path(export(model, path, example_inputs=example_inputs))
