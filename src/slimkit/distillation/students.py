"""Build a student from the teacher: fewer transformer layers, or narrower CNNs.

``shrink(model, depth=0.5)`` keeps every other layer of a transformers encoder
(DistilBERT-style initialization: the kept layers' weights are copied) and is recorded
as a structural transform, so `sk.save` / `sk.load` rebuild the shorter model.
``width`` uses structured channel pruning (`slimkit.pruning`).
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import Field
from torch import nn

from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError
from slimkit.core.registry import Context, apply, register


class Shrink(Config):
    """Keep a fraction ``depth`` of a transformer's layers, evenly spaced from the first."""

    method = "shrink"
    depth: float = Field(0.5, gt=0, le=1)


def find_layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList, Any]:
    """The transformer layer list of ``model``: ``(dotted name, ModuleList, HF config)``.

    Looks for a submodule whose ``config.num_hidden_layers`` equals the length of one of
    its descendant ``ModuleList``s (``BertModel.encoder.layer``, ...).

    Raises:
        UnsupportedModelError: when the model has no such layer stack.
    """
    for prefix, module in model.named_modules():
        config = getattr(module, "config", None)
        count = getattr(config, "num_hidden_layers", None)
        if not isinstance(count, int):
            continue
        for name, child in module.named_modules():
            if isinstance(child, nn.ModuleList) and len(child) == count and name:
                return ".".join(p for p in (prefix, name) if p), child, config
    raise UnsupportedModelError(
        f"depth shrinking needs a transformers encoder (a module with config.num_hidden_layers and its "
        f"layer list, e.g. BertModel); {type(model).__name__} has none. For CNNs use width=..."
    )


def kept_layers(count: int, depth: float) -> list[int]:
    """Indices of the layers kept: ``round(count·depth)`` (at least 1), evenly spaced from 0
    (6 layers, depth 0.5 -> 0, 2, 4)."""
    keep = max(1, round(count * depth))
    return [i * count // keep for i in range(keep)]


def _drop_layers(model: nn.Module, path: str, kept: list[int]) -> nn.Module:
    _, layers, config = find_layer_stack(model)
    if max(kept) >= len(layers):
        raise UnsupportedModelError(f"cannot keep layers {kept} of {path}: it has only {len(layers)}")
    parent_name, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.ModuleList([layers[i] for i in kept]))
    config.num_hidden_layers = len(kept)
    for new_index, layer in enumerate(getattr(parent, attr)):
        for sub in layer.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = new_index
    return model


def _rebuild_shrink(model: nn.Module, config: Config, state: dict[str, Any]) -> nn.Module:
    return _drop_layers(model, state["path"], list(state["kept"]))


@register("distill", "shrink", Shrink, rebuild=_rebuild_shrink)
def _shrink_depth(model: nn.Module, config: Shrink, ctx: Context) -> nn.Module:
    path, layers, _ = find_layer_stack(model)
    kept = kept_layers(len(layers), config.depth)
    ctx.state.update(path=path, kept=kept, original_layers=len(layers))
    return _drop_layers(model, path, kept)


def _narrow(model: nn.Module, width: float, example_inputs: Any, inplace: bool) -> nn.Module:
    try:
        pruning = importlib.import_module("slimkit.pruning")
    except ModuleNotFoundError as exc:
        if exc.name != "slimkit.pruning":
            raise
        pruning = None
    if pruning is None or not hasattr(pruning, "prune"):
        raise UnsupportedModelError(
            "width shrinking needs structured pruning (slimkit.pruning), which is not available in this install"
        )
    return pruning.prune(model, "channels", ratio=1 - width, example_inputs=example_inputs, inplace=inplace)


def shrink(
    model: nn.Module,
    *,
    depth: float | None = None,
    width: float | None = None,
    example_inputs: Any = None,
) -> nn.Module:
    """A smaller copy of ``model`` to use as a student (the input is never changed).

    Args:
        model: the teacher.
        depth: fraction of transformer layers kept (0.5: layers 0, 2, 4 of 6), weights copied.
        width: fraction of channels kept, by structured channel pruning (needs
            ``example_inputs`` for models whose graph must be traced).
        example_inputs: inputs for the width pruning's graph capture.

    Raises:
        InvalidConfigError: when neither or an invalid fraction is given.
        UnsupportedModelError: when the model has no transformer layers (depth) or
            structured pruning is not available (width).
    """
    if depth is None and width is None:
        raise InvalidConfigError("shrink needs depth=... (fraction of layers kept) or width=... (of channels kept)")
    if width is not None and not 0 < width < 1:
        raise InvalidConfigError(f"width must be in (0, 1): the fraction of channels kept, got {width}")
    student = model
    if depth is not None:
        student = apply("distill", model, Shrink.build(depth=depth))
    if width is not None:
        student = _narrow(student, width, example_inputs, inplace=student is not model)
    return student
