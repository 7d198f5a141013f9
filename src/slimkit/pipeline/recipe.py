"""The recipe schema: a model, data, an ordered list of stages, exports and a target.

```yaml
model: example:digits-cnn
data: example:digits
seed: 0
stages:
  - prune:    {method: channels, ratio: 0.5}
  - finetune: {epochs: 3, distill: {method: kd, temperature: 4}}
  - quantize: {method: int8-static, observer: percentile}
export: [onnx]
target: {runtime: onnxruntime, max_metric_drop: 0.01}
```

Stage options are validated by the registered method's own config class, so a recipe,
the CLI and the Python API reach the same configs and the same error messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slimkit.core.errors import InvalidConfigError
from slimkit.core.registry import methods

TECHNIQUE_VERBS = ("prune", "quantize", "decompose", "accelerate")
STAGE_KINDS = (*TECHNIQUE_VERBS, "finetune")
EXPORT_FORMATS = ("onnx", "pte", "tflite", "pt2")
DEFAULT_METHOD = {"prune": "channels", "quantize": "int8-dynamic", "decompose": "svd", "accelerate": "fuse"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Finetune(_Strict):
    """Fine-tuning between stages, optionally distilling from the original model."""

    epochs: int = Field(1, ge=1)
    """Passes over the training split."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate."""
    distill: dict[str, Any] | None = None
    """Distillation options (``{method: kd, temperature: 4}``); the teacher is the original model."""


class Target(_Strict):
    """Where the model will run and what it must achieve."""

    runtime: Literal["torch", "onnxruntime", "executorch", "tflite"] = "torch"
    """Runtime every stage is measured on (the model is exported to it after each stage)."""
    max_metric_drop: float | None = Field(None, ge=0)
    """Largest allowed drop of the main metric (accuracy points as a fraction, or cosine)."""
    max_size_mb: float | None = Field(None, gt=0)
    """Largest allowed artifact size of the final model, in MB (checked at the end)."""
    max_latency_ms: float | None = Field(None, gt=0)
    """Largest allowed p50 latency of the final model at the first batch size (checked at the end)."""
    batch_sizes: tuple[int, ...] = (1,)
    """Batch sizes timed at every stage."""
    threads: int | None = Field(None, ge=1)
    """Intra-op threads while timing (default: what the runtime uses)."""


class Stage(_Strict):
    """One stage: a verb and its options (``method`` plus the method's own fields)."""

    kind: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_mapping(cls, raw: Any) -> Any:
        """Read the recipe form ``{verb: {options}}``."""
        if isinstance(raw, dict) and set(raw) <= {"kind", "options"} and "kind" in raw:
            return raw
        if not isinstance(raw, dict) or len(raw) != 1:
            raise ValueError(f"each stage is a mapping with one key, one of: {', '.join(STAGE_KINDS)}")
        ((kind, options),) = raw.items()
        if kind not in STAGE_KINDS:
            raise ValueError(f"unknown stage {kind!r}; valid stages: {', '.join(STAGE_KINDS)}")
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"options of stage {kind!r} must be a mapping")
        return {"kind": kind, "options": options or {}}

    @property
    def method(self) -> str | None:
        """The registered method name (None for finetune)."""
        return None if self.kind == "finetune" else self.options.get("method", DEFAULT_METHOD[self.kind])

    @property
    def method_options(self) -> dict[str, Any]:
        """The options without ``method`` (and without stage-level keys)."""
        return {k: v for k, v in self.options.items() if k not in ("method", "include", "exclude")}

    @property
    def label(self) -> str:
        """Short name for tables: ``prune:channels``."""
        return self.kind if self.method is None else f"{self.kind}:{self.method}"


class Recipe(_Strict):
    """A whole compression job."""

    model: str | None = None
    data: str | None = None
    seed: int = 0
    stages: list[Stage] = Field(default_factory=list)
    export: list[Literal["onnx", "pte", "tflite", "pt2"]] = Field(default_factory=list)
    target: Target = Field(default_factory=Target)

    @model_validator(mode="after")
    def _validate_methods(self) -> Recipe:
        for i, stage in enumerate(self.stages):
            _check_stage(i, stage)
        return self


def _check_stage(index: int, stage: Stage) -> None:
    where = f"stages[{index}].{stage.kind}"
    if stage.kind == "finetune":
        _validate(Finetune, stage.options, where)
        return
    registered = methods(stage.kind)
    if stage.method not in registered:
        valid = ", ".join(sorted(registered)) or "none installed"
        raise InvalidConfigError(f"{where}.method: unknown method {stage.method!r}; valid methods: {valid}")
    _validate(registered[stage.method].config, stage.method_options, where)


def _validate(cls: type[BaseModel], options: dict[str, Any], where: str) -> None:
    try:
        cls(**options)
    except ValidationError as exc:
        raise InvalidConfigError(_describe(exc, where, cls)) from None


def _describe(exc: ValidationError, where: str, cls: type[BaseModel] | None = None) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        field = f"{where}.{path}" if where and path else (where or path or "recipe")
        if err["type"] == "extra_forbidden" and cls is not None:
            lines.append(f"{field}: unknown option (valid options: {', '.join(cls.model_fields) or 'none'})")
        else:
            lines.append(f"{field}: {err['msg']}")
    return "; ".join(lines)


def _stage_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int) and parts:
            parts[-1] += f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


def parse_recipe(raw: dict[str, Any]) -> Recipe:
    """Validate a recipe mapping; errors name the field path and what is allowed."""
    if not isinstance(raw, dict):
        raise InvalidConfigError("a recipe must be a YAML mapping with keys like model, data, stages, export, target")
    try:
        return Recipe(**raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _stage_path(tuple(err["loc"]))
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {message}" if path else message)
        raise InvalidConfigError("invalid recipe: " + "; ".join(problems)) from None


def load_recipe(source: str | os.PathLike[str] | dict[str, Any] | Recipe) -> Recipe:
    """A recipe from a YAML file, a bundled recipe name, a mapping or a `Recipe`."""
    if isinstance(source, Recipe):
        return source
    if isinstance(source, dict):
        return parse_recipe(source)
    path = Path(source)
    if path.suffix not in (".yaml", ".yml"):
        from slimkit.pipeline.bundled import bundled_recipe_path

        path = bundled_recipe_path(str(source))
    if not path.is_file():
        raise InvalidConfigError(f"recipe file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_recipe(raw)
