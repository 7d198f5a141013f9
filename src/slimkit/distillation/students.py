"""Build a student from the teacher: fewer transformer layers, or narrower CNNs.

``shrink(model, depth=0.5)`` keeps every other layer of a transformers encoder, spread
from the first to the last as DistilBERT picked them (its weights are copied), and is
recorded as a structural transform, so `sk.save` / `sk.load` rebuild the shorter model;
`layer_pairs` says which teacher layer each kept layer stands in for (feature hints).
``width`` uses structured channel pruning (`slimkit.pruning`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import nn

from slimkit.core.blocks import keep_blocks, spread
from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError
from slimkit.core.record import get_record
from slimkit.core.registry import Context, apply, register
from slimkit.distillation.methods import Hints

Spacing = Literal["spread", "stride"]


class Shrink(Config):
    """Keep a fraction ``depth`` of a transformer's layers."""

    method = "shrink"
    depth: float = Field(0.5, gt=0, le=1)
    """fraction of the layers kept (``round(n·depth)``, at least one)."""
    spacing: Spacing = "spread"
    """``"spread"``: evenly spaced from the first layer to the last, DistilBERT's pick (12 -> 0,
    2, 4, 7, 9, 11; 6 -> 0, 3, 5); ``"stride"``: every k-th layer from the first (6 -> 0, 2,
    4), which drops the teacher's last layer."""


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


def kept_layers(count: int, depth: float, spacing: Spacing = "spread") -> list[int]:
    """Indices of the layers kept: ``round(count·depth)`` of them (at least 1), see `Shrink`."""
    keep = max(1, round(count * depth))
    if spacing == "stride" or keep == 1:
        return [i * count // keep for i in range(keep)]
    return spread(count, keep)


def layer_pairs(student: nn.Module) -> dict[str, str]:
    """``{student layer: teacher layer}`` for a student made by ``shrink(teacher, depth=...)``.

    Each kept layer stands in for the teacher's layers up to the next kept one, so its
    output is paired with the last of them: the pairs `Hints` (``adapter=False``) needs.

    Raises:
        InvalidConfigError: when ``student`` was not shrunk in depth by slimkit.
    """
    shrinks = [t for t in get_record(student).transforms if (t.verb, t.method) == ("distill", "shrink")]
    if not shrinks:
        raise InvalidConfigError(
            "layer_pairs needs a student made by shrink(teacher, depth=...); name the hint layers yourself"
        )
    path, kept, count = (shrinks[-1].state[key] for key in ("path", "kept", "original_layers"))
    ends = [*kept[1:], count]
    return {f"{path}.{i}": f"{path}.{end - 1}" for i, end in enumerate(ends)}


def layer_hints(student: nn.Module, weight: float = 10.0) -> Hints:
    """Direct hidden-state hints for a depth-shrunk student: `layer_pairs`, no adapter.

    Weight 10 was best of 0.1-30 for MiniLM 6 -> 3 (docs/distillation.md, Benchmarks).
    """
    return Hints(layers=layer_pairs(student), adapter=False, weight=weight)


def _drop_layers(model: nn.Module, path: str, kept: list[int]) -> nn.Module:
    _, layers, config = find_layer_stack(model)
    if max(kept) >= len(layers):
        raise UnsupportedModelError(f"cannot keep layers {kept} of {path}: it has only {len(layers)}")
    keep_blocks(model, path, kept)
    config.num_hidden_layers = len(kept)
    return model


def _rebuild_shrink(model: nn.Module, config: Config, state: dict[str, Any]) -> nn.Module:
    return _drop_layers(model, state["path"], list(state["kept"]))


@register("distill", "shrink", Shrink, rebuild=_rebuild_shrink)
def _shrink_depth(model: nn.Module, config: Shrink, ctx: Context) -> nn.Module:
    path, layers, _ = find_layer_stack(model)
    kept = kept_layers(len(layers), config.depth, config.spacing)
    ctx.state.update(path=path, kept=kept, original_layers=len(layers))
    return _drop_layers(model, path, kept)


def _narrow(model: nn.Module, width: float, example_inputs: Any, inplace: bool) -> nn.Module:
    """Structured channel pruning through the registry (the pruning package registers it), so
    distillation never imports another technique."""
    return apply("prune", model, "channels", ratio=1 - width, example_inputs=example_inputs, inplace=inplace)


def shrink(
    model: nn.Module,
    *,
    depth: float | None = None,
    width: float | None = None,
    spacing: Spacing = "spread",
    example_inputs: Any = None,
) -> nn.Module:
    """A smaller copy of ``model`` to use as a student (the input is never changed).

    Args:
        model: the teacher.
        depth: fraction of transformer layers kept (0.5: layers 0, 3, 5 of 6), weights copied.
        width: fraction of channels kept, by structured channel pruning (needs
            ``example_inputs`` for models whose graph must be traced).
        spacing: which layers ``depth`` keeps: ``"spread"`` (first to last, DistilBERT)
            or ``"stride"`` (every k-th from the first).
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
        student = apply("distill", model, Shrink.build(depth=depth, spacing=spacing))
    if width is not None:
        student = _narrow(student, width, example_inputs, inplace=student is not model)
    return student
