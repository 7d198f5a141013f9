"""`compress`: run a recipe stage by stage, measuring each stage on the target runtime."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.device import resolve_device
from slimkit.core.errors import InvalidConfigError
from slimkit.core.fields import fields_dict
from slimkit.core.index import sha256_of
from slimkit.core.io import load_folder, save
from slimkit.core.specs import load_data, load_model
from slimkit.measure.profile import Profile
from slimkit.pipeline.recipe import Recipe, Stage, check_against_model, load_recipe
from slimkit.pipeline.stages import StageInputs, run_stage
from slimkit.pipeline.target import measure_on_target
from slimkit.pipeline.workdir import ORIGINAL, OUTPUT, TMP, WorkDir, write_error


@dataclass
class StageResult:
    """One finished stage: its label, the profile after it, and how long it took.

    Attributes:
        name: the stage label (``prune:channels``).
        profile: the stage's model measured on the target.
        seconds: time the stage and its measurement took.
        kept: False when the stage's model was discarded (it broke the budget, or it was an
            excused stage whose recovery failed).
        index: 1-based position in the recipe.
        status: ``met`` (within the budget), ``excused`` (outside the budget, but a later
            finetune may recover it) or ``discarded``.
        reason: why the stage was excused or discarded.
        measured: the file the target profile was measured on (path inside the working
            folder, e.g. ``stage-2/model.onnx``), None on the torch target.
        sha256: that file's sha256.
    """

    name: str
    profile: Profile
    seconds: float
    kept: bool = True
    index: int = 0
    status: str = "met"
    reason: str | None = None
    measured: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        measured = {"file": self.measured, "sha256": self.sha256} if self.measured else None
        return fields_dict(self, exclude=["sha256"], measured=measured, profile=self.profile.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StageResult:
        """Inverse of `to_dict` (used by resume)."""
        measured = raw.get("measured") or {}
        return cls(
            raw["name"],
            Profile.from_dict(raw["profile"]),
            raw["seconds"],
            raw.get("kept", True),
            raw.get("index", 0),
            raw.get("status", "met"),
            raw.get("reason"),
            measured.get("file"),
            measured.get("sha256"),
        )

    @property
    def title(self) -> str:
        """``stage 2 (finetune)``: how messages name it (1-based)."""
        return f"stage {self.index} ({self.name})"


@dataclass
class CompressResult:
    """What `compress` produced.

    Attributes:
        model: the final model (the last stage that met the budget, or the original).
        original: the profile of the input model.
        stages: a result per stage run, in order.
        artifacts: exported files by format.
        stopped: why the budget stopped the run early, or None.
        recipe: the recipe that ran.
        published: which model was published: ``stage N (label)`` or ``the original model``.
        measured: for the original row, the file measured and its sha256.
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
    published: str = "the original model"
    measured: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    """What the run recovered from an interrupted one (not part of the report)."""

    @property
    def final(self) -> Profile:
        """The profile of the final model."""
        kept = [s for s in self.stages if s.kept]
        return kept[-1].profile if kept else self.original

    @property
    def final_stage(self) -> StageResult | None:
        """The stage whose model is the result (None: the original)."""
        kept = [s for s in self.stages if s.kept]
        return kept[-1] if kept else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "original": self.original.to_dict(),
            "original_measured": self.measured,
            "stages": [s.to_dict() for s in self.stages],
            "published": self.published,
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
    """The metric budgets read: a user metric when there is one, else accuracy, else cosine."""
    own = [name for name in p.metrics if name not in ("accuracy", "cosine", "sqnr_db")]
    for name in (*own, "accuracy", "cosine"):
        if name in p.metrics:
            return name, p.metrics[name]
    return None


def budget_violation(original: Profile, current: Profile, recipe: Recipe) -> str | None:
    """Why ``current`` breaks the recipe's budget (metric worse by more than max_metric_drop), or None.

    The direction is ``target.higher_is_better`` when set, else the profile's own
    (`Profile.lower_is_better`): for a lower-is-better metric a rise is what counts.
    """
    limit = recipe.target.max_metric_drop
    before, after = _main_metric(original), _main_metric(current)
    if limit is None or before is None or after is None:
        return None
    name = before[0]
    higher = recipe.target.higher_is_better
    if higher is None:
        higher = name not in original.lower_is_better
    worse = before[1] - after[1] if higher else after[1] - before[1]
    if worse > limit:
        moved = "dropped" if higher else "rose"
        return f"{name} {moved} by {worse:.4f} ({before[1]:.4f} -> {after[1]:.4f}), more than max_metric_drop={limit}"
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

    Budget: a stage whose metric drops by more than ``target.max_metric_drop`` stops the
    run, and the result is the last stage that met the budget (or the original model).
    A stage followed by a ``finetune`` is excused from the check (the finetune may recover
    it), but it does not count as having met the budget.

    Crash safety (with ``out``): each finished stage is committed to a working folder
    beside ``out`` in one atomic step; ``resume=True`` continues after the last committed
    stage, and a run killed while publishing is finished by the next run. A lock file
    beside ``out`` refuses a second run on the same output.

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
        InvalidConfigError: bad recipe, missing data, existing ``out`` without overwrite,
            another run writing ``out``, a full or read-only destination.
    """
    recipe_file = str(recipe) if isinstance(recipe, (str, os.PathLike)) else None
    recipe = load_recipe(recipe)
    spec = model if isinstance(model, str) else recipe.model
    if model is None and spec is None:
        raise InvalidConfigError("compress needs a model: pass one or set `model:` in the recipe")
    model = load_model(model if model is not None else spec)
    splits = _splits(data, eval_data, recipe)
    check_against_model(recipe, model, splits)  # include patterns, labels: before any stage runs
    original = model.eval()
    if out is None:
        with tempfile.TemporaryDirectory(prefix="slimkit-compress-") as tmp:
            return _Run(recipe, original, splits, example_inputs, device, on_stage, None, Path(tmp)).run()
    inputs = tuple(str(x) for x in (spec, recipe_file, data, eval_data) if isinstance(x, (str, os.PathLike)))
    work = WorkDir.open(
        out,
        recipe_digest(recipe, str(spec)),
        resume=resume,
        overwrite=overwrite,
        inputs=inputs,
        need_bytes=_needed_bytes(original, len(recipe.stages)),
    )
    try:
        if work.done:
            result = _finished_result(work, recipe, original)
            result.notes = list(work.notes)
            return result
        with _temp_folder(work.root / TMP):
            try:
                result = _Run(recipe, original, splits, example_inputs, device, on_stage, work, work.root).run()
                _finish(result, work, example_inputs, splits)
                result.notes = list(work.notes)
            except OSError as exc:
                clear = write_error(exc, work)
                if clear is None:
                    raise
                raise clear from None
        return result
    finally:
        work.close()


def _needed_bytes(model: nn.Module, stages: int) -> int:
    """A rough floor on the disk a run needs: the model a few times over, plus the artifacts."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return weights * (4 + min(stages, 2) * 2)


@contextlib.contextmanager
def _temp_folder(path: Path) -> Iterator[None]:
    """Route `tempfile` into ``path`` (inside the working folder) while the run works, so a
    killed run leaves nothing in the system temp folder."""
    path.mkdir(parents=True, exist_ok=True)
    before = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield
    finally:
        tempfile.tempdir = before


class _Run:
    """One pass over the recipe's stages, committing each to ``work`` when there is one."""

    def __init__(
        self,
        recipe: Recipe,
        original: nn.Module,
        splits: DataSplits,
        example_inputs: Any,
        device: str,
        on_stage: Callable[[StageResult], None] | None,
        work: WorkDir | None,
        scratch: Path,
    ):
        self.recipe, self.original, self.splits = recipe, original, splits
        self.example_inputs, self.on_stage, self.work, self.scratch = example_inputs, on_stage, work, scratch
        self.inputs = StageInputs(splits, example_inputs, original, str(resolve_device(device)), recipe.seed)
        self.state: dict[str, Any] = work.state if work is not None else {}

    def folder(self, name: str) -> Path:
        if self.work is not None:
            return self.work.folder(name)
        path = self.scratch / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    def measure(
        self, model: nn.Module, folder: Path, checkpoint: bool = True
    ) -> tuple[Profile, Profile, dict[str, str] | None]:
        if self.work is not None and checkpoint:
            save(model, folder)  # the stage's checkpoint; its artifact is exported beside it
        else:
            folder.mkdir(parents=True)
        torch.manual_seed(self.recipe.seed)  # measurement must not depend on what ran before
        on_target, eager, path = measure_on_target(
            model,
            self.recipe.target,
            self.splits,
            reference=self.original,
            example_inputs=self.example_inputs,
            folder=folder,
            export_options=self.recipe.export_options,
        )
        measured = {"file": f"{folder.name}/{path.name}", "sha256": sha256_of(path)} if path else None
        return on_target, eager, measured

    def commit(self, **changes: Any) -> None:
        if self.work is not None:
            self.work.commit(**changes)
        else:
            self.state.update(changes)

    def run(self) -> CompressResult:
        recipe, state = self.recipe, self.state
        if "original" not in state:
            profile_, eager, measured = self.measure(self.original, self.folder(ORIGINAL), checkpoint=False)
            baseline = eager if recipe.target.runtime != "torch" else None
            self.commit(
                original={
                    "profile": profile_.to_dict(),
                    "baseline": baseline.to_dict() if baseline else None,
                    "measured": measured,
                },
                stages=[],
                current=ORIGINAL,
                kept=ORIGINAL,
                stopped=None,
            )
        original = Profile.from_dict(state["original"]["profile"])
        baseline = state["original"]["baseline"]
        results = [StageResult.from_dict(r) for r in state["stages"]]
        current = self._load(state["current"])
        kept_model = current if state["kept"] == state["current"] else None
        for index, stage in enumerate(recipe.stages):
            if index < len(results) or state["stopped"]:
                continue
            name = f"stage-{index + 1}"
            start = time.perf_counter()
            torch.manual_seed(recipe.seed + index + 1)  # each stage seeded alike in a run and a resume
            candidate = run_stage(current, stage, self.inputs)
            profile_, _, measured = self.measure(candidate, self.folder(name))
            result = StageResult(stage.label, profile_, time.perf_counter() - start, index=index + 1)
            if measured:
                result.measured, result.sha256 = measured["file"], measured["sha256"]
            violation = budget_violation(original, profile_, recipe)
            changes: dict[str, Any] = {"current": name}
            if violation is None:
                changes["kept"], kept_model = name, candidate
            elif _recovers_later(recipe.stages, index):
                result.status, result.reason = "excused", f"{violation}; a later finetune may recover it"
            else:
                result.status, result.kept, result.reason = "discarded", False, violation
                _discard_excused(results, result)
                changes["stopped"] = (
                    f"the budget stopped the run at {result.title}: {violation}; "
                    f"published {self._kept_title(results, state['kept'])} instead"
                )
            results.append(result)
            self.commit(stages=[r.to_dict() for r in results], **changes)
            current = candidate
            if self.on_stage:
                self.on_stage(result)
        if kept_model is None:
            kept_model = self._load(state["kept"])
        outcome = CompressResult(
            kept_model.eval(),
            original,
            results,
            stopped=state["stopped"],
            recipe=recipe,
            original_model=self.original,
            baseline=Profile.from_dict(baseline) if baseline else None,
            published=self._kept_title(results, state["kept"]),
            measured=state["original"]["measured"],
        )
        outcome.unmet = unmet_targets(outcome.final, recipe)
        return outcome

    def _load(self, name: str) -> nn.Module:
        if name == ORIGINAL:
            return self.original
        if self.work is None:
            raise RuntimeError(f"no working folder to load {name} from")
        return load_folder(self.work.root / name)

    @staticmethod
    def _kept_title(results: list[StageResult], kept: str) -> str:
        if kept == ORIGINAL:
            return "the original model"
        index = int(kept.rsplit("-", 1)[1])
        return next(r.title for r in results if r.index == index)


def _discard_excused(results: list[StageResult], failed: StageResult) -> None:
    """Excused stages since the last one that met the budget go with the failed one."""
    for earlier in reversed(results):
        if earlier.status != "excused":
            break
        earlier.status, earlier.kept = "discarded", False
        earlier.reason = f"{earlier.reason}; {failed.title} did not recover it"


def _finished_result(work: WorkDir, recipe: Recipe, original: nn.Module) -> CompressResult:
    """The result of an earlier run of this recipe whose output is now in place."""
    state = work.state
    results = [StageResult.from_dict(r) for r in state["stages"]]
    baseline = state["original"]["baseline"]
    outcome = CompressResult(
        load_folder(work.final),
        Profile.from_dict(state["original"]["profile"]),
        results,
        {k: work.final / v for k, v in state.get("artifacts", {}).items()},
        stopped=state["stopped"],
        recipe=recipe,
        original_model=original,
        baseline=Profile.from_dict(baseline) if baseline else None,
        published=_Run._kept_title(results, state["kept"]),
        measured=state["original"]["measured"],
    )
    outcome.unmet = unmet_targets(outcome.final, recipe)
    return outcome


def _finish(result: CompressResult, work: WorkDir, example_inputs: Any, splits: DataSplits) -> None:
    """Assemble the output from the kept stage's folder (its checkpoint and the very artifact
    that was measured), export any other requested format, write the reports, publish."""
    from slimkit.report.files import write_reports

    kept = work.root / work.state["kept"]
    output = work.folder(OUTPUT)
    output.mkdir()
    if work.state["kept"] == ORIGINAL:
        save(result.model, kept)  # the original is checkpointed only when it is the result
    for entry in kept.iterdir():
        if entry.is_file() and not entry.name.startswith("."):
            _link_or_copy(entry, output / entry.name)
    names = {}
    for fmt in result.recipe.export if result.recipe else []:
        path = output / f"model.{fmt}"
        if not path.exists():
            _export(result.model, path, example_inputs, splits, result.recipe.options_for(fmt))
        names[fmt] = path.name
    for entry in output.iterdir():
        if entry.suffix and entry.suffix[1:] not in names and entry.name not in KEPT_FILES:
            entry.unlink()  # a measured artifact of a format the recipe does not export
    result.artifacts = {k: work.final / v for k, v in names.items()}
    write_reports(result, output)
    work.commit(finished=True, artifacts=names)
    work.publish()


KEPT_FILES = ("model.safetensors", "slimkit.json")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _export(model: nn.Module, path: Path, example_inputs: Any, splits: DataSplits, options: dict[str, Any]) -> Path:
    from slimkit.runtime import export

    return Path(export(model, path, example_inputs=example_inputs, data=splits.test, overwrite=True, **options))
