"""``depth``: remove whole blocks of a repeated block list, keeping the first and the last.

A block list is an ``nn.ModuleList`` or ``nn.Sequential`` of blocks of one type. When the
model has transformers configs, the lists whose length is a config's ``num_hidden_layers``
are the ones pruned (a model's own layer stack); otherwise every outermost list of at least
three composite blocks of one type whose blocks after the first have identical parameter
shapes (so dropping one keeps the shapes the next expects). ``include``/``exclude`` select
lists by name. Kept blocks are spread evenly from the first to the last, the rule
`slimkit.distillation.shrink` uses; blocks are renumbered (``layer_idx``) and the config's
layer count (and per-layer ``layer_types``) follows, so ``generate`` and ``save_pretrained``
keep working.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from slimkit.core.blocks import keep_blocks, spread
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError
from slimkit.core.registry import Context, register
from slimkit.pruning.configs import Depth
from slimkit.pruning.transformers import apply_config, model_configs

COUNT_ATTRS = ("num_layers", "num_hidden_layers", "n_layers", "n_layer", "depth")
"""Attributes of a list's parent that hold its length (``nn.TransformerEncoder.num_layers``)."""
PER_LAYER_CONFIG_KEYS = ("layer_types",)
"""Config lists with one entry per layer."""


def _is_block_list(module: nn.Module, minimum: int) -> bool:
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) < minimum:
        return False
    blocks = list(module)
    if len({type(b) for b in blocks}) != 1 or not list(blocks[0].children()):
        return False
    shapes = {tuple((n, tuple(p.shape)) for n, p in b.named_parameters()) for b in blocks[1:]}
    return len(shapes) == 1


def _outermost(names: list[str]) -> list[str]:
    return [n for n in names if not any(n.startswith(f"{o}.") for o in names if o != n)]


def block_lists(model: nn.Module, selector: Any) -> list[str]:
    """Names of the block lists ``depth`` prunes (see the module doc)."""
    counts = {getattr(c, "num_hidden_layers", None) for c in model_configs(model).values()} - {None}
    candidates = [n for n, m in model.named_modules() if n and selector(n) and _is_block_list(m, 3)]
    linked = [n for n in candidates if len(model.get_submodule(n)) in counts]
    return _outermost(linked or candidates)


def kept_blocks(count: int, ratio: float) -> list[int]:
    """Blocks kept of ``count`` when ``ratio`` of them are removed: the first, the last, spread between."""
    return spread(count, max(min(count, 2), count - math.floor(count * ratio + 1e-9)))


def _updates(model: nn.Module, path: str, kept: list[int]) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    """Attribute and config updates after keeping ``kept`` of the list at ``path``."""
    count = len(model.get_submodule(path))
    parent_name = path.rpartition(".")[0]
    parent = model.get_submodule(parent_name)
    attrs = {a: len(kept) for a in COUNT_ATTRS if vars(parent).get(a) == count}
    configs: dict[str, Any] = {}
    for owner, config in model_configs(model).items():
        if getattr(config, "num_hidden_layers", None) != count:
            continue
        values: dict[str, Any] = {"num_hidden_layers": len(kept)}
        for key in PER_LAYER_CONFIG_KEYS:
            per_layer = getattr(config, key, None)
            if isinstance(per_layer, (list, tuple)) and len(per_layer) == count:
                values[key] = [per_layer[i] for i in kept]
        configs[owner] = values
    return ({parent_name: attrs} if attrs else {}), configs


def _apply(model: nn.Module, state: dict[str, Any]) -> nn.Module:
    for path, kept in state["kept"].items():
        keep_blocks(model, path, list(kept))
    for name, values in state.get("attrs", {}).items():
        module = model.get_submodule(name)
        for attr, value in values.items():
            setattr(module, attr, value)
    apply_config(model, state.get("config", {}))
    return model


def rebuild_depth(model: nn.Module, config: Depth, state: dict[str, Any]) -> nn.Module:
    """Replay the recorded block removal."""
    return _apply(model, state)


@register("prune", "depth", Depth, rebuild=rebuild_depth)
def prune_depth(model: nn.Module, config: Depth, ctx: Context) -> nn.Module:
    """Remove ``ratio`` of the blocks of every repeated block list."""
    paths = block_lists(model, ctx.selector)
    if not paths:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no repeated block list (an nn.ModuleList or nn.Sequential of at least three "
            "blocks of one type with the same shapes, e.g. transformer layers); depth pruning needs one"
        )
    kept = {p: kept_blocks(len(model.get_submodule(p)), config.ratio) for p in paths}
    if config.ratio > 0 and all(len(k) == len(model.get_submodule(p)) for p, k in kept.items()):
        shortest = min(len(model.get_submodule(p)) for p in paths)
        raise InvalidConfigError(
            f"depth ratio {config.ratio} removes no block of {', '.join(paths)}; use ratio >= {1 / shortest:.2f}"
        )
    attrs: dict[str, dict[str, int]] = {}
    configs: dict[str, Any] = {}
    for path, keep in kept.items():
        more_attrs, more_configs = _updates(model, path, keep)
        attrs.update(more_attrs)
        configs.update(more_configs)
    ctx.state.update(
        kept=kept,
        attrs=attrs,
        config=configs,
        pruned={p: [len(model.get_submodule(p)), len(k)] for p, k in kept.items()},
    )
    return _apply(model, ctx.state)
