"""The recipe schema: a model, data, an ordered list of stages, exports and a target.

```yaml
model: example:digits-cnn
data: example:digits
seed: 0
stages:
  - prune:    {method: channels, ratio: 0.5}
  - finetune: {epochs: 3, distill: {method: kd, temperature: 4}}
  - quantize: {method: int8-static, observer: percentile}
export: [onnx]                       # or with format options: [onnx, {pte: {max_batch: 1}}]
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slimkit.core.errors import InvalidConfigError
from slimkit.core.formats import FORMAT_NAMES, RUNTIMES, artifact_of, by_name, refusal
from slimkit.core.registry import methods
from slimkit.training.config import Finetune as TrainingFinetune

MAX_BATCH_SIZE = 65_536
"""Largest batch size a recipe may time (a larger one would only exhaust memory)."""
MAX_THREADS = 4 * (os.cpu_count() or 1)
"""Most intra-op threads a recipe may ask for: four per core of this machine."""
MAX_RECIPE_BYTES = 1 << 20
MAX_STAGES = 100

TECHNIQUE_VERBS = ("prune", "quantize", "decompose", "accelerate")
STAGE_KINDS = (*TECHNIQUE_VERBS, "finetune")
EXPORT_FORMATS = FORMAT_NAMES
DEFAULT_METHOD = {"prune": "channels", "quantize": "int8-dynamic", "decompose": "svd", "accelerate": "fuse"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Finetune(TrainingFinetune):
    """A ``finetune`` stage: fine-tuning between stages, optionally distilling from the original
    model (the one `Finetune` shape methods use, with at least one epoch)."""

    epochs: int = Field(1, ge=1, le=10_000)
    """passes over the training split."""


class Target(_Strict):
    """Where the model will run and what it must achieve."""

    runtime: Literal[RUNTIMES] = "torch"  # type: ignore[valid-type]
    """Runtime every stage is measured on (the model is exported to it after each stage)."""
    metric: str | None = None
    """What judges the model: ``accuracy``, ``fidelity`` or ``package.module:function`` computing
    ``fn(outputs, targets) -> float`` on the test split (default: the data's own metric)."""
    higher_is_better: bool | None = None
    """Direction of ``metric`` (default: the function's ``higher_is_better`` attribute, else true)."""
    max_metric_drop: float | None = Field(None, ge=0)
    """Largest allowed worsening of the main metric: a drop (accuracy as a fraction, cosine), or a
    rise for a lower-is-better metric, in the metric's own units."""
    max_size_mb: float | None = Field(None, gt=0)
    """Largest allowed artifact size of the final model, in MB (checked at the end)."""
    max_latency_ms: float | None = Field(None, gt=0)
    """Largest allowed p50 latency of the final model at the first batch size (checked at the end)."""
    batch_sizes: tuple[int, ...] = (1,)
    """Batch sizes timed at every stage (each 1..65536)."""
    threads: int | None = Field(1, ge=1)
    """Intra-op threads while timing (default 1; null: what the runtime uses, usually every core;
    at most 4 per core)."""

    @field_validator("threads")
    @classmethod
    def _sane_threads(cls, threads: int | None) -> int | None:
        if threads is not None and threads > MAX_THREADS:
            raise ValueError(f"at most {MAX_THREADS} threads (4 per core of this machine), got {threads}")
        return threads

    @field_validator("batch_sizes")
    @classmethod
    def _sane_batch_sizes(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or not all(1 <= b <= MAX_BATCH_SIZE for b in sizes):
            raise ValueError(
                f"each batch size must be 1..{MAX_BATCH_SIZE}, and at least one is needed; got {list(sizes)}"
            )
        return sizes


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
    seed: int = Field(0, ge=0, le=2**32 - 1)
    """Random seed of every stage (0 .. 2**32-1)."""
    stages: list[Stage] = Field(default_factory=list, max_length=MAX_STAGES)
    export: list[Literal[FORMAT_NAMES]] = Field(default_factory=list)  # type: ignore[valid-type]
    """Formats written beside the checkpoint; an entry may carry its format options,
    ``{pte: {max_batch: 1, max_sequence: 256}}`` (moved into ``export_options``)."""
    export_options: dict[Literal[FORMAT_NAMES], dict[str, Any]] = Field(default_factory=dict)  # type: ignore[valid-type]
    """Format options by format (`slimkit.runtime.export.format_options`): used for the written
    file and for the target's measured artifact of that format, so what ships is what was
    measured."""
    target: Target = Field(default_factory=Target)

    @model_validator(mode="before")
    @classmethod
    def _export_entries(cls, raw: Any) -> Any:
        """``export: [onnx, {pte: {...}}]`` -> ``export: [onnx, pte]`` and ``export_options: {pte: {...}}``."""
        if not isinstance(raw, dict) or not isinstance(raw.get("export"), list):
            return raw
        names, options = [], dict(raw.get("export_options") or {})
        for entry in raw["export"]:
            if isinstance(entry, dict) and len(entry) == 1:
                name, given = next(iter(entry.items()))
                if not isinstance(given, dict):
                    raise ValueError(f"export entry {name}: options must be a mapping, got {given!r}")
                names.append(name)
                options[name] = {**options.get(name, {}), **given}
            else:
                names.append(entry)
        return {**raw, "export": names, "export_options": options}

    @model_validator(mode="after")
    def _validate_methods(self) -> Recipe:
        for i, stage in enumerate(self.stages):
            _check_stage(i, stage)
        self._check_formats()
        self._check_export_options()
        return self

    def _check_export_options(self) -> None:
        """Refuse, before any stage runs, an option a format's exporter does not take."""
        from slimkit.runtime.export import check_format_options

        for name, options in self.export_options.items():
            check_format_options(by_name(name).suffix, options, f"export_options.{name}")

    def options_for(self, fmt: str) -> dict[str, Any]:
        """The export options of format ``fmt`` (a name or suffix without the dot)."""
        return dict(self.export_options.get(fmt, {}))

    def _check_formats(self) -> None:
        """Refuse, before any stage runs, a quantization the export formats or target cannot carry."""
        formats = [by_name(name) for name in self.export]
        if self.target.runtime != "torch":
            formats.append(artifact_of(self.target.runtime))
        for i, stage in enumerate(self.stages):
            if stage.kind != "quantize":
                continue
            for fmt in formats:
                if reason := refusal(fmt, [stage.method]):
                    raise InvalidConfigError(f"stages[{i}].quantize: {reason}")


def _check_stage(index: int, stage: Stage) -> None:
    where = f"stages[{index}].{stage.kind}"
    if stage.kind == "finetune":
        _validate(Finetune, stage.options, where)
        _check_distill(stage.options.get("distill"), f"{where}.distill")
        return
    for key in ("include", "exclude"):
        _check_globs(stage.options.get(key), f"{where}.{key}")
    method = stage.options.get("method", DEFAULT_METHOD[stage.kind])
    if not isinstance(method, str):
        raise InvalidConfigError(f"{where}.method: must be a method name, got {type(method).__name__}")
    registered = methods(stage.kind)
    if stage.method not in registered:
        valid = ", ".join(sorted(registered)) or "none installed"
        raise InvalidConfigError(f"{where}.method: unknown method {stage.method!r}; valid methods: {valid}")
    _validate(registered[stage.method].config, stage.method_options, where)


def _check_globs(value: Any, where: str) -> None:
    """``include``/``exclude``: a glob string or a list of them."""
    if value is None:
        return
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise InvalidConfigError(
            f"{where}: must be a glob pattern over module names or a list of them, like 'layer1.*', got {value!r}"
        )


def _check_distill(options: Any, where: str) -> None:
    """Validate a finetune stage's ``distill`` options against the distill method's config."""
    if options is None or isinstance(options, bool):
        return
    if not isinstance(options, dict):
        raise InvalidConfigError(f"{where}: must be true, false or a mapping like {{method: kd, temperature: 4}}")
    options = dict(options)
    method = options.pop("method", "kd")
    registered = methods("distill")
    if not isinstance(method, str) or method not in registered:
        valid = ", ".join(sorted(registered)) or "none installed"
        raise InvalidConfigError(f"{where}.method: unknown method {method!r}; valid methods: {valid}")
    _validate(registered[method].config, options, where)


def check_against_model(recipe: Recipe, model: Any, splits: Any = None) -> None:
    """Validate what needs the model before any stage runs.

    Checks every stage's ``include``/``exclude`` pattern against the model's module names
    and, when ``splits`` has class-index targets, the first test batch's labels against the
    model's output size.

    Raises:
        InvalidConfigError: a pattern matches no module (the field path is named).
        DataError: labels out of range, fractional or not 1-D.
    """
    from slimkit.core.walk import Selector, check_matches

    for i, stage in enumerate(recipe.stages):
        if stage.kind == "finetune":
            continue
        try:
            check_matches(model, Selector.of(stage.options.get("include"), stage.options.get("exclude")))
        except InvalidConfigError as exc:
            raise InvalidConfigError(f"stages[{i}].{stage.kind}: {exc}") from None
    if splits is not None and getattr(splits, "metric", None) == "accuracy":
        check_labels(model, splits.test)


def check_labels(model: Any, data: Any) -> None:
    """Run ``model`` on the first batch of ``data`` and check its targets (`core.data.check_targets`)."""
    import torch

    from slimkit.core.data import check_targets, iter_batches, run_model
    from slimkit.core.device import model_device

    batch = next(iter_batches(data, limit=1))
    if batch.target is None:
        return
    with torch.no_grad():
        output = run_model(model, batch.to(model_device(model)))
    check_targets(output, batch.target)


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
    raw = read_yaml(path)
    if isinstance(raw, dict):
        raw = {**raw, **{k: _from_folder(path.parent, raw[k]) for k in ("model", "data") if k in raw}}
    return parse_recipe(raw)


def _from_folder(folder: Path, spec: Any) -> Any:
    """A relative file or folder path in a recipe's ``model``/``data`` (``hf:DIR`` too), read from
    the recipe's folder when it is there; other specs as written."""
    if not isinstance(spec, str):
        return spec
    prefix = "hf:" if spec.startswith("hf:") else ""
    text = spec.removeprefix(prefix)
    if not text or text.startswith("example:") or Path(text).is_absolute() or (":" in text and not prefix):
        return spec
    candidate = folder / text
    return prefix + str(candidate) if candidate.exists() else spec


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (YAML would keep the last silently)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable mapping key {key!r}", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML recipe file: UTF-8, at most 1 MB, no duplicate keys, plain data only.

    Raises:
        InvalidConfigError: unreadable, not UTF-8, too large, invalid YAML or a duplicate key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidConfigError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise InvalidConfigError(f"{path} is larger than 1 MB: not a recipe")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidConfigError(f"{path} is not UTF-8 text (byte {exc.start}): save the recipe as UTF-8") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise InvalidConfigError(f"{path} is not valid YAML: {first}") from None
    except RecursionError:
        raise InvalidConfigError(f"{path} nests too deeply: not a recipe") from None
