"""The one walk over a model that every replace-one-layer-at-a-time method shares.

A layer-wise method (decompose's factorizations, ``winograd``, ``separable``; quantization's
driver, which also resolves a config per layer and fills calibration statistics, is built the
same way in `slimkit.quantization.ptq`) gives a function of one layer. `select_layers` picks
the layers (types, include/exclude), leaving alone a subclass that overrides its base's
``forward`` (with the reason) and layers nested in one of ``inside``; `replace_layers` calls the
function on each and swaps the result in, collecting what each conversion recorded and why
each other layer stayed; `rebuild_layers` replays the recorded swaps without data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from slimkit.core.layers import overrides_forward
from slimkit.core.walk import Selector, replace_module, select_modules

Convert = Callable[[str, nn.Module], "tuple[nn.Module, Any] | str"]
"""``(name, layer) -> (new layer, what the record keeps for it)``, or why the layer stays."""


def select_layers(
    model: nn.Module,
    selector: Selector,
    types: tuple[type[nn.Module], ...],
    inside: tuple[type[nn.Module], ...] = (),
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The selected layers of ``types``, and ``{name: reason}`` for those a method cannot take.

    Args:
        model: the model (not modified).
        selector: include/exclude.
        types: the layer types the method converts (subclasses keeping the base ``forward``
            count as the base; one that overrides it is skipped with the reason).
        inside: layers nested in a module of these types are not candidates (e.g. the dense
            parts of an already factorized layer).
    """
    nested = [name + "." for name, module in model.named_modules() if inside and isinstance(module, inside)]
    layers: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    for name, layer in select_modules(model, selector, types):
        if any(name.startswith(prefix) for prefix in nested):
            continue
        if base := overrides_forward(layer, types):
            skipped[name] = f"{type(layer).__name__} overrides the forward of {base.__name__}"
        else:
            layers[name] = layer
    return layers, skipped


def replace_layers(
    model: nn.Module, layers: dict[str, nn.Module], convert: Convert
) -> tuple[dict[str, Any], dict[str, str]]:
    """Convert each of ``layers`` (in order) and swap the result into ``model``.

    Returns:
        ``{name: recorded}`` for the converted layers and ``{name: reason}`` for the others.
    """
    converted: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, layer in layers.items():
        result = convert(name, layer)
        if isinstance(result, str):
            skipped[name] = result
            continue
        new, recorded = result
        replace_module(model, name, new)
        converted[name] = recorded
    return converted, skipped


def rebuild_layers(
    model: nn.Module, recorded: dict[str, Any], shell: Callable[[str, nn.Module, Any], nn.Module]
) -> nn.Module:
    """Swap in ``shell(name, layer, recorded)`` (the converted layer's empty twin) for each entry."""
    for name, entry in recorded.items():
        replace_module(model, name, shell(name, model.get_submodule(name), entry))
    return model
