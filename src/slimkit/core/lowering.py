"""Export lowerings: the techniques tell the exporters how to write the layers they create.

A technique whose layers a format cannot trace as they are registers a `Lowering` for that
format: the module to export in each layer's place, the exporter's translation of the custom
ops that module calls, or, for a layer the format cannot express at all, the refusal users
read. The exporters (`slimkit.runtime`) read this table and never import the technique, so
the layers stay in their order (DESIGN.md): quantization registers its ONNX lowering when it
is imported, which it is whenever a model holds its layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

from slimkit.core.errors import UnsupportedModelError
from slimkit.core.walk import replace_module

ANY_FORMAT = "*"
"""A lowering for every format (what `refuse_unexpressible` checks before any trace)."""


@dataclass(frozen=True)
class Lowering:
    """How one format writes some layer types.

    Attributes:
        layer_types: the layer types it covers.
        standin: ``layer -> module`` exported in the layer's place (``None`` returned: the
            layer as it is).
        translations: ``(**options) -> {custom op: translation}`` for the exporter (ONNX's
            ``custom_translation_table``).
        refusal: for a layer the format cannot express: the message after "FORMAT cannot run",
            with ``{layers}`` for the layers' names.
        rewrite: ``(exported graph) -> None``: a rewrite of the whole exported graph in place
            (ONNX: the ``ModelProto``), run after every export of the format, before verification.
    """

    layer_types: tuple[type[nn.Module], ...]
    standin: Callable[[nn.Module], nn.Module | None] | None = None
    translations: Callable[..., dict[Any, Callable[..., Any]]] | None = None
    refusal: str | None = None
    rewrite: Callable[[Any], None] | None = None


_LOWERINGS: dict[str, list[Lowering]] = {}


def register_lowering(fmt: str, lowering: Lowering) -> None:
    """Add ``lowering`` for format ``fmt`` (``"onnx"``, ``"pte"``, ``"tflite"``, or `ANY_FORMAT`)."""
    _LOWERINGS.setdefault(fmt, []).append(lowering)


def _lowering(fmt: str, module: nn.Module) -> Lowering | None:
    return next((lw for lw in _LOWERINGS.get(fmt, []) if isinstance(module, lw.layer_types)), None)


def refuse_unexpressible(model: nn.Module, fmt: str, label: str) -> None:
    """Raise when ``model`` holds a layer a lowering of ``fmt`` (or of every format) refuses.

    Raises:
        UnsupportedModelError: "LABEL cannot run ..." naming the first layer and how many more.
    """
    for key in (fmt, ANY_FORMAT):
        for lowering in _LOWERINGS.get(key, []):
            names = [n for n, m in model.named_modules() if isinstance(m, lowering.layer_types)]
            if names and lowering.refusal:
                more = f" and {len(names) - 1} more" if len(names) > 1 else ""
                layers = f"{names[0]!r}{more}"
                raise UnsupportedModelError(f"{label} cannot run " + lowering.refusal.format(layers=layers))


@contextmanager
def export_standins(model: nn.Module, fmt: str) -> Iterator[dict[str, nn.Module]]:
    """Swap ``model``'s layers for their ``fmt`` stand-ins for the block (restored after, also on
    error); one stand-in per module, shared where the model shares it. Yields ``{name: stand-in}``."""
    built: dict[int, nn.Module | None] = {}
    originals: dict[str, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        lowering = _lowering(fmt, module)
        if lowering is None or lowering.standin is None:
            continue
        originals[name] = module
        if id(module) not in built:
            built[id(module)] = lowering.standin(module)
    swapped = {name: built[id(module)] for name, module in originals.items() if built[id(module)] is not None}
    for name, new in swapped.items():
        replace_module(model, name, new)
    try:
        yield swapped
    finally:
        for name in swapped:
            replace_module(model, name, originals[name])


def translation_table(fmt: str, **options: Any) -> dict[Any, Callable[..., Any]]:
    """Every registered translation of ``fmt``'s custom ops, built with ``options``."""
    table: dict[Any, Callable[..., Any]] = {}
    for lowering in _LOWERINGS.get(fmt, []):
        if lowering.translations is not None:
            table.update(lowering.translations(**options))
    return table


def rewrite_graph(fmt: str, graph: Any) -> None:
    """Run every registered ``rewrite`` of ``fmt`` on the exported ``graph`` (in place)."""
    for lowering in _LOWERINGS.get(fmt, []):
        if lowering.rewrite is not None:
            lowering.rewrite(graph)
