"""Per-layer candidate settings and applying a chosen set of them with the verbs.

A *unit* is what one per-layer choice changes: a layer (``quantize`` with weight-only
``bits``, or ``decompose`` with ``svd`` at a ``rank`` fraction: one slot, so a plan takes at
most one of them per layer) or a prunable channel group of the dependency graph (``prune``
with ``channels`` at a ``ratio``, selected through the group's producing layers). Each unit
has candidate `Setting` s; keeping the unit unchanged is always allowed and is not listed.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field
from torch import nn

from slimkit.core.config import Bits, Config, OpenFraction, sorted_unique
from slimkit.core.errors import InvalidConfigError
from slimkit.core.registry import apply
from slimkit.core.walk import Selector, select_modules
from slimkit.quantization.granularity import WeightGranularity
from slimkit.training.config import Finetune

TECHNIQUES = ("quantize", "prune", "decompose")
"""Techniques `sensitivity` scores per layer."""
LAYER_VERBS = ("quantize", "decompose")
"""Verbs that replace one layer: a plan takes at most one of them per layer (one slot)."""
ORDER = {"prune": 0, "decompose": 1, "quantize": 2}
"""Verbs run in this order when a plan is applied (structure first, precision last)."""
QUANTIZED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Embedding)
"""Layers weight-only quantization handles (convolutions are left to pruning)."""


class CandidateConfig(Config):
    """Which settings `sensitivity` tries on each layer."""

    renamed = {"group_size": "granularity"}
    techniques: tuple[Literal[TECHNIQUES], ...] = Field(TECHNIQUES, min_length=1)
    """``quantize`` (weight-only per layer), ``prune`` (channels per group) and/or ``decompose``."""
    bits: Annotated[tuple[Bits, ...], AfterValidator(sorted_unique)] = Field((2, 4, 8), min_length=1)
    """weight-only bit widths tried per layer (2..8)."""
    granularity: WeightGranularity = Field("group:32", validate_default=True)
    """weight-only scales, ``"group:N"`` or ``"channel"`` (``group_size`` before 0.2)."""
    ratios: Annotated[tuple[OpenFraction, ...], AfterValidator(sorted_unique)] = Field((0.25, 0.5, 0.75), min_length=1)
    """channel-pruning ratios tried per group, each in (0, 1)."""
    ranks: tuple[OpenFraction, ...] = Field((0.25, 0.5), min_length=1)
    """SVD rank fractions tried per Linear (``decompose``), each in (0, 1)."""
    include: tuple[str, ...] | None = None
    """globs over module names a unit must match to be scored (None: all)."""
    exclude: tuple[str, ...] | None = None
    """globs over module names to leave alone."""


@dataclass(frozen=True)
class Setting:
    """One per-unit change: a verb, its method and options, on the unit's layers.

    Attributes:
        unit: the layer name or group label it changes.
        verb: ``quantize`` or ``prune``.
        method: the registered method name.
        options: the method's options as sorted ``(name, value)`` pairs.
        include: the module names the verb is restricted to.
    """

    unit: str
    verb: str
    method: str
    options: tuple[tuple[str, Any], ...]
    include: tuple[str, ...]

    @property
    def key(self) -> str:
        """A readable unique name: ``quantize:weight-only(bits=4,granularity=group:32)@fc``."""
        opts = ",".join(f"{k}={v}" for k, v in self.options)
        return f"{self.verb}:{self.method}({opts})@{self.unit}"

    @property
    def slot(self) -> str:
        """What a plan chooses one setting for: a layer (``layer fc``: its bits or its rank) or a
        channel group (``prune stem.0.0``)."""
        return f"{'layer' if self.verb in LAYER_VERBS else self.verb} {self.unit}"

    @property
    def label(self) -> str:
        """A short name for tables: ``int4``, ``svd 25%`` or ``prune 50%``."""
        opts = dict(self.options)
        if "bits" in opts:
            return f"int{opts['bits']}"
        return f"svd {opts['rank']:.0%}" if "rank" in opts else f"prune {opts['ratio']:.0%}"

    def apply(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        """A copy of ``model`` with only this setting applied (``kwargs`` go to the verb)."""
        return apply_settings(model, [self], **kwargs)


def _quantize_units(model: nn.Module, config: CandidateConfig) -> list[Setting]:
    selector = Selector.of(config.include, config.exclude)
    options = {"granularity": str(config.granularity)}
    return [
        Setting(name, "quantize", "weight-only", tuple(sorted({**options, "bits": bits}.items())), (name,))
        for name, _ in select_modules(model, selector, QUANTIZED_TYPES)
        for bits in config.bits
    ]


def _decompose_units(model: nn.Module, config: CandidateConfig) -> list[Setting]:
    selector = Selector.of(config.include, config.exclude)
    return [
        Setting(name, "decompose", "svd", (("rank", rank),), (name,))
        for name, _ in select_modules(model, selector, (nn.Linear,))
        for rank in config.ranks
    ]


def prunable_groups(model: nn.Module, example_inputs: Any) -> list[tuple[str, tuple[str, ...]]]:
    """``(label, producing layers)`` of every channel group the dependency graph can prune."""
    from slimkit.core.graph import capture
    from slimkit.pruning.dependency import DependencyGraph

    graph = DependencyGraph(capture(model, example_inputs))
    return [(g.label, tuple(g.producers)) for g in graph.groups() if not g.blocked]


def _prune_units(model: nn.Module, config: CandidateConfig, example_inputs: Any) -> list[Setting]:
    selector = Selector.of(config.include, config.exclude)
    return [
        Setting(label, "prune", "channels", (("ratio", ratio),), producers)
        for label, producers in prunable_groups(model, example_inputs)
        if all(selector(p) for p in producers)
        for ratio in config.ratios
    ]


def candidates(model: nn.Module, config: CandidateConfig, example_inputs: Any) -> list[Setting]:
    """Every per-unit setting `config` asks for: quantize, decompose, then prune units.

    Raises:
        InvalidConfigError: when no unit matches (a typo in ``include``, or no layer the
            techniques handle).
    """
    found: list[Setting] = []
    if "quantize" in config.techniques:
        found += _quantize_units(model, config)
    if "decompose" in config.techniques:
        found += _decompose_units(model, config)
    if "prune" in config.techniques:
        found += _prune_units(model, config, example_inputs)
    if not found:
        raise InvalidConfigError(
            f"no layer to score with {', '.join(config.techniques)}: weight-only quantization takes "
            "Linear/Embedding layers, SVD Linear layers, channel pruning conv/linear groups; check include/exclude"
        )
    return found


def plan_stages(settings: Iterable[Setting]) -> list[dict[str, dict[str, Any]]]:
    """The recipe stages that apply ``settings``: one verb call per (verb, method, options), with
    the union of their layers as ``include``, structure-changing verbs first.

    Returns:
        ``[{verb: {"method": ..., **options, "include": [...]}}]``.
    """
    merged: dict[tuple[str, str, tuple[tuple[str, Any], ...]], list[str]] = {}
    for s in settings:
        merged.setdefault((s.verb, s.method, s.options), []).extend(s.include)
    ordered = sorted(merged.items(), key=lambda item: (ORDER[item[0][0]], repr(item[0][2])))
    return [
        {verb: {"method": method, **dict(options), "include": sorted(set(layers))}}
        for (verb, method, options), layers in ordered
    ]


def apply_settings(
    model: nn.Module, settings: Sequence[Setting], *, data: Any = None, example_inputs: Any = None, device: Any = "auto"
) -> nn.Module:
    """A copy of ``model`` with ``settings`` applied by the verbs (the input is never changed).

    Args:
        model: the model.
        settings: at most one per slot (verb and unit).
        data: calibration data handed to every verb.
        example_inputs: sample inputs for tracing (pruning).
        device: where the verbs run.

    Raises:
        InvalidConfigError: two settings for one slot.
    """
    check_units(settings)
    stages = plan_stages(settings)
    return apply_stages(model, stages, data=data, example_inputs=example_inputs, device=device)


def apply_stages(
    model: nn.Module,
    stages: Sequence[dict[str, Any]],
    *,
    data: Any = None,
    example_inputs: Any = None,
    device: Any = "auto",
    train: Any = None,
    seed: int = 0,
) -> nn.Module:
    """A copy of ``model`` with recipe ``stages`` (``[{"prune": {"method": ..., ...}}]``) applied in order.

    Args:
        model: the model (never changed).
        stages: technique stages in recipe form; ``include``/``exclude`` go to the verb; a
            ``{"finetune": {epochs, lr, distill}}`` stage trains on ``train`` (distilling from
            ``model`` when asked).
        data: calibration data handed to every verb.
        example_inputs: sample inputs for tracing (pruning, static quantization).
        device: where the verbs run.
        train: the training data of ``finetune`` stages.
        seed: the seed of ``finetune`` stages.
    """
    result = model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*changed nothing.*")
        for stage in stages:
            ((verb, options),) = stage.items()
            options = dict(options)
            if verb == "finetune":
                if train is None:
                    raise InvalidConfigError("a finetune stage needs training data")
                result = Finetune.build(**options).run(copy.deepcopy(result), train, model, device=device, seed=seed)
                continue
            method = options.pop("method")
            result = apply(verb, result, method, data=data, example_inputs=example_inputs, device=device, **options)
    return result if result is not model else copy.deepcopy(model)


def check_units(settings: Sequence[Setting]) -> None:
    """Refuse two settings for one unit (a plan chooses one per unit).

    Raises:
        InvalidConfigError: naming the unit.
    """
    seen: set[str] = set()
    for s in settings:
        if s.slot in seen:
            raise InvalidConfigError(f"two settings for {s.slot!r}: a plan chooses one setting per layer")
        seen.add(s.slot)
