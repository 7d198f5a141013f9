"""The method registry: verb + name -> config class + handler.

Technique packages register their methods on import::

    @register("prune", "channels", ChannelsConfig)
    def prune_channels(model, config, ctx): ...

Handlers receive a copy of the model (unless ``inplace``), the validated config and a
`Context`, and return the transformed model. `apply` is the one place where every verb's
shared conventions live (method resolution, copying, the transform record).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.device import resolve_device
from slimkit.core.errors import InvalidConfigError
from slimkit.core.record import Transform, append_transform
from slimkit.core.walk import Selector

Handler = Callable[[nn.Module, Config, "Context"], nn.Module]
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


_METHODS: dict[str, dict[str, Method]] = {}
_PACKAGES: dict[str, str] = {
    "quantize": "slimkit.quantization",
    "prune": "slimkit.pruning",
    "distill": "slimkit.distillation",
    "decompose": "slimkit.decomposition",
    "accelerate": "slimkit.conv",
}
"""Which package registers each verb's methods; imported on first use (e.g. by `load`)."""


def register_verb(verb: str, package: str) -> None:
    """Declare which package registers the methods of ``verb`` (imported on first use)."""
    _PACKAGES[verb] = package


def register(
    verb: str, name: str, config: type[Config], rebuild: Rebuild | None = None
) -> Callable[[Handler], Handler]:
    """Decorator registering ``handler`` as method ``name`` of ``verb``."""

    def decorate(handler: Handler) -> Handler:
        _METHODS.setdefault(verb, {})[name] = Method(verb, name, config, handler, rebuild)
        return handler

    return decorate


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
    """Run one verb with the conventions every verb shares; returns the transformed model."""
    if not isinstance(model, nn.Module):
        raise InvalidConfigError(f"{verb} needs a torch.nn.Module, got {type(model).__name__}")
    found, config = resolve(verb, method, options)
    if example_inputs is not None and not isinstance(example_inputs, (tuple, dict)):
        example_inputs = (example_inputs,)
    ctx = Context(
        data=data,
        example_inputs=example_inputs,
        selector=Selector.of(include, exclude),
        device=resolve_device(device),
        extras=extras or {},
    )
    target = model if inplace else copy.deepcopy(model)
    result = found.handler(target, config, ctx)
    append_transform(result, Transform(verb, found.name, config.model_dump(mode="json"), ctx.state))
    return result


def replay(model: nn.Module, transform: Transform) -> nn.Module:
    """Re-apply a recorded structural transform (no data) while loading a saved model."""
    found = get_method(transform.verb, transform.method)
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

    def run(
        model: nn.Module,
        method: str | Config = default_method,
        *,
        data: Iterable[Any] | None = None,
        example_inputs: Any = None,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        inplace: bool = False,
        device: str | torch.device = "auto",
        **options: Any,
    ) -> nn.Module:
        return apply(
            verb, model, method, data=data, example_inputs=example_inputs, include=include, exclude=exclude,
            inplace=inplace, device=device, **options,
        )  # fmt: skip

    run.__name__ = run.__qualname__ = verb
    run.__doc__ = summary + _VERB_DOC
    return run
