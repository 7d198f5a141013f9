"""Standard views of the layers users' models are built from.

Techniques handle ``nn.Linear``; libraries ship layers that compute the same thing in
another layout (transformers' ``Conv1D`` in GPT-2 stores its weight as ``[in, out]``).
A *linear-like* type is registered with a function turning one into an equivalent
``nn.Linear``; `linearize` swaps them in before a technique runs, so every technique
handles them without knowing them. Subclasses of a standard layer are that layer unless
they override ``forward`` (`overrides_forward`), in which case techniques skip them and say why.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from slimkit.core.walk import Selector, replace_module

ToLinear = Callable[[nn.Module], nn.Linear]
_LINEAR_LIKE: dict[type[nn.Module], ToLinear] = {}


def register_linear_like(cls: type[nn.Module], to_linear: ToLinear) -> None:
    """Declare that modules of ``cls`` compute a linear map ``to_linear(module)`` reproduces."""
    _LINEAR_LIKE[cls] = to_linear


def _transposed_linear(module: nn.Module) -> nn.Linear:
    """``y = x @ W + b`` with ``W`` stored ``[in, out]`` (transformers' ``Conv1D``)."""
    weight = module.weight
    linear = nn.Linear(weight.shape[0], weight.shape[1], module.bias is not None, device="meta")
    linear.weight = nn.Parameter(weight.detach().t().contiguous(), requires_grad=weight.requires_grad)
    if module.bias is not None:
        linear.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=module.bias.requires_grad)
    return linear.train(module.training)


def linear_like_types() -> dict[type[nn.Module], ToLinear]:
    """The registered linear-like types, with transformers' ``Conv1D`` once transformers is loaded."""
    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(pytorch_utils, "Conv1D", None)
    if isinstance(conv1d, type) and conv1d not in _LINEAR_LIKE:
        register_linear_like(conv1d, _transposed_linear)
    return dict(_LINEAR_LIKE)


@torch.no_grad()
def linearize(model: nn.Module, selector: Selector | None = None, names: list[str] | None = None) -> list[str]:
    """Replace linear-like modules (selected, or exactly ``names``) by equivalent ``nn.Linear``.

    Returns:
        The names replaced (what a saved model replays to rebuild the same structure).
    """
    kinds = linear_like_types()
    if not kinds:
        return []
    selector = selector or Selector()
    found = [
        (name, module)
        for name, module in model.named_modules()
        if name and (name in names if names is not None else selector(name)) and type(module) in kinds
    ]
    for name, module in found:
        replace_module(model, name, kinds[type(module)](module))
    return [name for name, _ in found]


def overrides_forward(module: nn.Module, bases: tuple[type[nn.Module], ...]) -> type[nn.Module] | None:
    """The standard base of ``module`` whose ``forward`` its class replaces, or None.

    A subclass that keeps its base's ``forward`` (e.g. ``NonDynamicallyQuantizableLinear``)
    is that base for every technique; one that overrides it computes something else.
    """
    base = next((b for b in bases if isinstance(module, b)), None)
    if base is None or type(module) is base:
        return None
    return base if type(module).forward is not base.forward else None


def _write_back(original: nn.Module, linear: nn.Linear) -> nn.Module:
    """``original`` (a ``Conv1D``-layout layer: weight ``[in, out]``, ``nf`` outputs) holding ``linear``'s weights."""
    original.weight = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        original.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=linear.bias.requires_grad)
    original.nf = linear.out_features
    if hasattr(original, "nx"):
        original.nx = linear.in_features
    return original


@contextmanager
def linear_view(model: nn.Module, names: list[str] | None = None) -> Iterator[list[str]]:
    """See linear-like layers (all, or exactly ``names``) as ``nn.Linear`` inside the block.

    Afterwards each goes back to its own type and layout when it is a ``Conv1D``-layout
    layer (an ``nf`` attribute); other registered types stay ``nn.Linear``.

    Yields:
        The names seen as Linear (what a replay passes back as ``names``).
    """
    originals = {n: m for n, m in model.named_modules() if n and (names is None or n in names)}
    replaced = linearize(model, names=list(originals)) if originals else []
    try:
        yield replaced
    finally:
        for name in replaced:
            if hasattr(originals[name], "nf"):
                replace_module(model, name, _write_back(originals[name], model.get_submodule(name)))
