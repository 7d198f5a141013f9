"""The method registry: per verb, config class -> handler, its names being aliases.

Technique packages register their methods on import::

    @register("prune", "channels", ChannelsConfig)
    def prune_channels(model, config, ctx): ...

Handlers receive a copy of the model (unless ``inplace``) already on the work device, the
validated config and a `Context`, and return the transformed model or an `Outcome` (the
model plus the layers skipped and why). `apply` is the one place where every verb's shared
conventions live: method resolution, include/exclude validation, copying, moving to the
work device and back, measuring what changed, and the transform record.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.device import model_device, resolve_device
from slimkit.core.errors import InvalidConfigError
from slimkit.core.hf import remember_config
from slimkit.core.layers import linearize
from slimkit.core.outcome import Outcome, changed_modules, fingerprint, normalize_skipped
from slimkit.core.record import Transform, append_transform
from slimkit.core.tables import Table
from slimkit.core.walk import Selector, check_matches

log = logging.getLogger(__name__)

Handler = Callable[[nn.Module, Config, "Context"], "nn.Module | Outcome"]
Rebuild = Callable[[nn.Module, Config, dict[str, Any]], nn.Module]


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        verb: the verb it belongs to (``"quantize"``, ``"prune"``, ...).
        name: its registered name.
        config: its config class.
        handler: applies it to a model.
        rebuild: re-creates its structural change without data (used by `load`); ``None``
            for transforms that only change values.
    """

    verb: str
    name: str
    config: type[Config]
    handler: Handler
    rebuild: Rebuild | None = None


@dataclass
class Context:
    """What a handler gets besides model and config."""

    data: Iterable[Any] | None = None
    example_inputs: tuple[Any, ...] | None = None
    selector: Selector = field(default_factory=Selector)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    extras: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    """Handlers put what `rebuild` needs here (kept indices, ranks, shapes); saved in the record."""


_METHODS: dict[str, Table[Method]] = {}
"""Per verb, the methods by name; a config class registered under several names is one
`Method` (named by its first registration) and the other names are aliases of it."""
_PACKAGES: dict[str, str] = {
    "quantize": "slimkit.quantization",
    "prune": "slimkit.pruning",
    "distill": "slimkit.distillation",
    "decompose": "slimkit.decomposition",
    "accelerate": "slimkit.conv",
}
"""Which package registers each verb's methods; imported on first use (e.g. by `load`)."""
LINEARIZED_VERBS = {"quantize", "decompose"}
"""Verbs whose methods see linear-like layers (transformers' ``Conv1D``) as ``nn.Linear``."""


def register_verb(verb: str, package: str) -> None:
    """Declare which package registers the methods of ``verb`` (imported on first use)."""
    _PACKAGES[verb] = package


def register(
    verb: str, name: str, config: type[Config], rebuild: Rebuild | None = None
) -> Callable[[Handler], Handler]:
    """Decorator registering ``handler`` as method ``name`` of ``verb``.

    A method is its config class: registering the same class and handler under another name
    adds an alias (``fitnets`` for ``hint``); the same class with another handler is refused.
    """

    def decorate(handler: Handler) -> Handler:
        table = _METHODS.setdefault(verb, Table(f"{verb} method"))
        known = next((m for m in table.values() if m.config is config and m.name != name), None)
        if known is None:
            table.register(name, Method(verb, name, config, handler, rebuild))
        elif (known.handler, known.rebuild) == (handler, rebuild):
            table.register(name, known)
        else:
            raise InvalidConfigError(
                f"{config.__name__} is already the config of {verb} method {known.name!r}: give {name!r} a config "
                "class of its own (a subclass will do)"
            )
        return handler

    return decorate


def verbs() -> tuple[str, ...]:
    """The verbs methods register under (``quantize``, ``prune``, ...)."""
    return tuple(dict.fromkeys((*_PACKAGES, *_METHODS)))


def methods(verb: str) -> dict[str, Method]:
    """All methods registered for ``verb`` (importing the verb's package first)."""
    if verb in _PACKAGES:
        try:
            importlib.import_module(_PACKAGES[verb])
        except ModuleNotFoundError as exc:
            if exc.name != _PACKAGES[verb]:
                raise
    return dict(_METHODS.get(verb, {}))


def get_method(verb: str, name: str) -> Method:
    """The method ``name`` of ``verb``; `InvalidConfigError` lists the valid names."""
    known = methods(verb)
    if name not in known:
        valid = ", ".join(sorted(known)) or "none registered"
        raise InvalidConfigError(f"unknown {verb} method {name!r}; valid methods: {valid}")
    return known[name]


def resolve(verb: str, method: str | Config, options: dict[str, Any]) -> tuple[Method, Config]:
    """Turn a method name + options, or a config object (+ overriding options), into both."""
    if isinstance(method, Config):
        found = next((m for m in methods(verb).values() if m.config is type(method)), None)
        if found is None:
            raise InvalidConfigError(f"{type(method).__name__} is not a {verb} config")
        return found, method.with_options(**options) if options else method
    if not isinstance(method, str):
        raise InvalidConfigError(f"method must be a name or a config object, got {type(method).__name__}")
    found = get_method(verb, method)
    return found, found.config.build(**options)


def apply(
    verb: str,
    model: nn.Module,
    method: str | Config,
    *,
    data: Iterable[Any] | None = None,
    example_inputs: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    inplace: bool = False,
    device: str | torch.device = "auto",
    extras: dict[str, Any] | None = None,
    **options: Any,
) -> nn.Module:
    """Run one verb with the conventions every verb shares; returns the transformed model.

    ``overrides={"glob": options or None}`` works with every method whose config has no
    ``overrides`` field of its own: the layers each pattern matches (first match wins) get the
    method with those options (None: left alone), the others (within ``include``) the base
    options; ``exclude`` holds for all. Each group is one transform of the record.
    """
    if not isinstance(model, nn.Module):
        raise InvalidConfigError(f"{verb} needs a torch.nn.Module, got {type(model).__name__}")
    if "overrides" in options and not _own_overrides(verb, method):
        shared = dict(data=data, example_inputs=example_inputs, device=device, extras=extras)
        return _apply_overrides(verb, model, method, options, include, exclude, inplace, shared)
    found, config = resolve(verb, method, options)
    if example_inputs is not None and not isinstance(example_inputs, (tuple, dict)):
        example_inputs = (example_inputs,)
    selector = Selector.of(include, exclude)
    check_matches(model, selector)
    ctx = Context(
        data=data,
        example_inputs=example_inputs,
        selector=selector,
        device=resolve_device(device),
        extras=extras or {},
    )
    home = model_device(model)
    before = fingerprint(model)
    target = remember_config(model if inplace else copy.deepcopy(model))  # a transformers config, before changes
    if verb in LINEARIZED_VERBS and (linearized := linearize(target, selector)):
        ctx.state["linearized"] = linearized
    returned = found.handler(target.to(ctx.device), config, ctx)
    outcome = returned if isinstance(returned, Outcome) else Outcome(returned)
    if outcome.model is None:
        raise TypeError(f"the {verb} handler of {found.name!r} returned an Outcome without a model")
    result = outcome.model.to(home)
    changed = changed_modules(before, fingerprint(result))
    skipped = outcome.skipped or normalize_skipped(ctx.state.get("skipped"), found.name)
    _report(verb, found.name, changed, skipped)
    transform = Transform(verb, found.name, config.model_dump(mode="json"), ctx.state, changed, skipped)
    append_transform(result, transform)
    return result


def _own_overrides(verb: str, method: str | Config) -> bool:
    """Whether the method's config resolves per-layer ``overrides`` itself (the PTQ configs)."""
    config = type(method) if isinstance(method, Config) else get_method(verb, method).config
    return "overrides" in config.model_fields


def _apply_overrides(
    verb: str,
    model: nn.Module,
    method: str | Config,
    options: dict[str, Any],
    include: str | Iterable[str] | None,
    exclude: str | Iterable[str] | None,
    inplace: bool,
    shared: dict[str, Any],
) -> nn.Module:
    """`apply` once per override pattern (its layers only), then once for the other layers."""
    options = dict(options)
    overrides = options.pop("overrides")
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise InvalidConfigError("overrides must map glob patterns of module names to options (a dict) or None")
    selector = Selector.of(include, exclude)
    check_matches(model, Selector.of(tuple(overrides)))
    result = model if inplace else copy.deepcopy(model)
    taken: list[str] = []
    for pattern, override in overrides.items():
        if override is not None:
            if not isinstance(override, dict):
                raise InvalidConfigError(f"overrides[{pattern!r}] must be a dict of options or None")
            result = apply(
                verb, result, method, include=pattern, exclude=(*selector.exclude, *taken),
                inplace=True, **shared, **{**options, **override},
            )  # fmt: skip
        taken.append(pattern)
    rest = {"include": selector.include or None, "exclude": (*selector.exclude, *taken)}
    return apply(verb, result, method, **rest, inplace=True, **shared, **options)


def _report(verb: str, method: str, changed: tuple[str, ...], skipped: dict[str, str]) -> None:
    """Log what a transform did; warn when it changed nothing, so no no-op is silent."""
    outcome = Outcome(changed=changed, skipped=skipped, verb=verb, method=method)
    log.info(outcome.summary())
    if not changed:
        reason = f" (skipped: {outcome.summary().partition('skipped ')[2]})" if skipped else ""
        warnings.warn(f"{verb}:{method} changed nothing in this model{reason}", UserWarning, stacklevel=4)


def replay(model: nn.Module, transform: Transform) -> nn.Module:
    """Re-apply a recorded structural transform (no data) while loading a saved model."""
    if not transform.structural:  # training: values only, the saved weights hold its effect
        return model
    found = get_method(transform.verb, transform.method)
    if transform.state.get("linearized"):
        linearize(model, names=list(transform.state["linearized"]))
    if found.rebuild is None:
        return model
    config = found.config.build(**transform.config)
    return found.rebuild(model, config, transform.state)


_VERB_DOC = """

Args:
    model: the model (deep-copied first unless ``inplace``).
    method: a registered method name or a config object.
    data: batches the method may use (calibration, importance, fine-tuning, timing).
    example_inputs: inputs for tracing and timing.
    include: glob patterns of module names the method may change.
    exclude: glob patterns of module names it must leave alone.
    inplace: change ``model`` itself.
    device: where the work runs (``"auto"``: CUDA when present).
    **options: fields of the method's config.

Returns:
    The transformed model; its record lists the transform, its config and what was skipped.
"""


def make_verb(verb: str, default_method: str, summary: str) -> Callable[..., nn.Module]:
    """The public function of ``verb`` (``sk.quantize``, ``sk.prune``, ...): `apply` with the
    shared signature, a default method and a docstring."""

    def run(model: nn.Module, method: str | Config = default_method, **kwargs: Any) -> nn.Module:
        if "extras" in kwargs:
            raise InvalidConfigError(f"{verb} takes no option 'extras'")
        return apply(verb, model, method, **kwargs)

    shared = [p for p in inspect.signature(apply).parameters.values() if p.name not in ("verb", "extras")]
    shared[1] = shared[1].replace(default=default_method)  # method
    run.__signature__ = inspect.Signature(shared, return_annotation=nn.Module)  # type: ignore[attr-defined]
    run.__name__ = run.__qualname__ = verb
    run.__doc__ = summary + _VERB_DOC
    return run
