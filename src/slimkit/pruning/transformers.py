"""``heads`` and ``neurons``: transformer attention heads and FFN neurons, found by structure.

Nothing here knows a model by name. Attention modules are found by their projections and
head attributes (`slimkit.pruning.attention`); FFNs by an up projection (``up_proj``,
``fc1``, ``c_fc``, ``lin1``, ``wi``, ``intermediate.dense``, ``linear1``...) feeding a down
projection (``down_proj``, ``fc2``, ``c_proj``, ``lin2``, ``wo``, ``output.dense``,
``linear2``...) of the same module, with an optional gate (``gate_proj``, ``wi_0``) pruned
with the up projection, or by an ``nn.Sequential`` of Linear -> parameter-free layers ->
Linear. Linear-like layers (transformers' ``Conv1D``) are seen as ``nn.Linear`` while
pruning and written back in their own layout, so the model stays what its library expects.

A transformers config is updated where it can express the result (``intermediate_size``,
``n_inner``, ``d_ff``...; head counts where it states the head width, as ``head_dim`` or
``d_kv``, with ``num_key_value_heads``), so ``save_pretrained``/``from_pretrained`` and
``generate`` keep working. The record holds the kept indices, attribute and config
updates, so `sk.load` replays the surgery without data.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import InvalidConfigError, UnsupportedModelError
from slimkit.core.layers import linear_view
from slimkit.core.registry import Context, register
from slimkit.core.walk import Selector
from slimkit.pruning.attention import (
    AttentionSite,
    convert_mha,
    convertible_mha,
    find_attention,
    head_groups,
    linear_child,
)
from slimkit.pruning.configs import Heads, Neurons, _Structured
from slimkit.pruning.groups import Group, Member, parse_groups
from slimkit.pruning.structured import graph_groups, prune_groups
from slimkit.pruning.surgery import apply_keeps

UP_NAMES = (
    "up_proj", "fc1", "c_fc", "lin1", "wi", "wi_1", "intermediate.dense", "intermediate_dense", "linear1", "fc_in",
    "dense_h_to_4h",
)  # fmt: skip
GATE_NAMES = ("gate_proj", "wi_0")
DOWN_NAMES = (
    "down_proj", "fc2", "c_proj", "lin2", "wo", "output.dense", "output_dense", "linear2", "fc_out", "dense_4h_to_h",
)  # fmt: skip
FFN_CONFIG_KEYS = ("intermediate_size", "n_inner", "d_ff", "hidden_dim", "ffn_dim", "encoder_ffn_dim")
ConfigUpdates = dict[str, dict[str, Any]]
"""``{module holding the config: {key: new value}}``."""


# ----------------------------------------------------------------------------- linear-like layers


# ----------------------------------------------------------------------------- model configs


def model_configs(model: nn.Module) -> dict[str, Any]:
    """The transformers configs of ``model`` by the name of the first module holding each."""
    found: dict[str, Any] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict") and id(config) not in seen:
            seen.add(id(config))
            found[name] = config
    return found


def _current(config: Any, key: str) -> Any:
    value = getattr(config, key, None)
    if value is None and key == "n_inner":  # GPT-2: None means 4 x the width
        return 4 * getattr(config, "hidden_size", 0)
    return value


def builds_same(owner: nn.Module, values: dict[str, Any]) -> bool:
    """Whether ``owner``'s class, built from its config with ``values`` set, has ``owner``'s shapes.

    True for a module that cannot be rebuilt from its config (not a ``PreTrainedModel``).
    """
    from_config = getattr(type(owner), "_from_config", None)
    if from_config is None:
        return True
    config = copy.deepcopy(owner.config)
    for key, value in values.items():
        setattr(config, key, value)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = from_config(config).state_dict()
    except Exception:  # transformers refuses the config (e.g. a width not divisible by the heads)
        return False
    mine = owner.state_dict()
    return all(tuple(t.shape) == tuple(fresh[k].shape) for k, t in mine.items() if k in fresh)


def config_updates(
    model: nn.Module, changes: dict[str, tuple[int, int]], extra: dict[str, Any] | None = None
) -> ConfigUpdates:
    """``{key: (old, new)}`` as updates of every config whose ``key`` holds ``old`` and that then
    builds the model's shapes (first as is, then with ``extra`` values, e.g. an explicit ``head_dim``)."""
    updates: ConfigUpdates = {}
    for owner, config in model_configs(model).items():
        values = {k: new for k, (old, new) in changes.items() if hasattr(config, k) and _current(config, k) == old}
        module = model.get_submodule(owner)
        for attempt in (values, {**values, **(extra or {})}):
            if values and builds_same(module, attempt):
                updates[owner] = attempt
                break
    return updates


def apply_config(model: nn.Module, updates: ConfigUpdates) -> None:
    """Set the recorded config values."""
    for owner, values in updates.items():
        config = model.get_submodule(owner).config
        for key, value in values.items():
            setattr(config, key, value)


def _uniform(pruned: dict[str, list[int]], labels: list[str]) -> tuple[int, int] | None:
    """``(size, kept)`` shared by every group labelled ``labels``, or None when they differ."""
    pairs = {tuple(pruned[label]) for label in labels if label in pruned}
    return pairs.pop() if len(pairs) == 1 else None  # type: ignore[return-value]


def head_config_changes(model: nn.Module, sites: list[AttentionSite], kept: tuple[int, int] | None) -> ConfigUpdates:
    """Head counts for the configs that can state them, when every layer kept the same heads."""
    if not sites or kept is None or len({(s.heads, s.kv_heads, s.head_dim) for s in sites}) != 1:
        return {}
    site, groups = sites[0], kept[1]
    changes = {"num_attention_heads": (site.heads, groups * site.per_group)}
    changes["num_key_value_heads"] = (site.kv_heads, groups)
    return config_updates(model, changes, {"head_dim": site.head_dim})


# ----------------------------------------------------------------------------- FFNs


@dataclass(frozen=True)
class FFNSite:
    """An FFN: its up projections (gate first, when gated) and its down projection."""

    name: str
    up: tuple[str, ...]
    down: str
    hidden: int

    def group(self, module: nn.Module) -> Group:
        """The FFN's hidden neurons as a group (the module's ``intermediate_size`` follows it)."""
        members = [Member(u, "out") for u in self.up] + [Member(self.down, "in")]
        attrs = [a for a in ("intermediate_size",) if vars(module).get(a) == self.hidden]
        return Group(self.hidden, members, f"{self.up[-1]} neurons", heads={self.name: attrs} if attrs else {})


def _sequential_ffn(modules: dict[str, nn.Module], name: str) -> FFNSite | None:
    """``nn.Sequential`` of Linear, parameter-free layers (activation, dropout), Linear."""
    module = modules[name]
    children = list(module.named_children()) if isinstance(module, nn.Sequential) else []
    linears = [n for n, c in children if isinstance(c, nn.Linear)]
    if len(linears) != 2 or any(
        not isinstance(c, nn.Linear) and next(c.parameters(), None) is not None for _, c in children
    ):
        return None
    prefix = f"{name}." if name else ""
    up, down = (modules[f"{prefix}{n}"] for n in linears)
    if up.out_features != down.in_features:
        return None
    return FFNSite(name, (f"{prefix}{linears[0]}",), f"{prefix}{linears[1]}", up.out_features)


def _ffn_site(modules: dict[str, nn.Module], name: str) -> FFNSite | None:
    prefix = f"{name}." if name else ""
    up, down = linear_child(modules, prefix, UP_NAMES), linear_child(modules, prefix, DOWN_NAMES)
    if up is None or down is None:
        return _sequential_ffn(modules, name)
    hidden = modules[up].out_features
    if modules[down].in_features != hidden or modules[up].in_features != modules[down].out_features:
        return None
    gate = linear_child(modules, prefix, GATE_NAMES)
    gated = gate is not None and modules[gate].weight.shape == modules[up].weight.shape
    return FFNSite(name, (gate, up) if gated else (up,), down, hidden)


def find_ffns(model: nn.Module, selector: Selector) -> list[FFNSite]:
    """The FFNs whose up projections are selected."""
    modules = dict(model.named_modules())
    sites = [_ffn_site(modules, name) for name in modules]
    return [s for s in sites if s is not None and all(selector(u) for u in s.up)]


# ----------------------------------------------------------------------------- handlers


def _explicit(model: nn.Module, config: _Structured) -> list[Group] | None:
    return parse_groups(model, config.groups) if config.groups else None


def _linear_groups(model: nn.Module, ctx: Context) -> list[Group]:
    """Hidden neurons between Linear layers of the traced graph (models with no named FFN).
    Groups that also hold other members (convolutions, norms, bare parameters such as a layer
    scale) are channel groups, not FFN neurons."""
    modules = dict(model.named_modules())
    groups = graph_groups(model, ctx)
    return [g for g in groups if all(isinstance(modules.get(m.module), nn.Linear) for m in g.members)]


def rebuild_transformer(model: nn.Module, config: _Structured, state: dict[str, Any]) -> nn.Module:
    """Replay ``heads``/``neurons``: MHA conversion, kept indices, attributes, config values."""
    convert_mha(model, state.get("converted", []))
    with linear_view(model, list(state.get("as_linear", []))):
        apply_keeps(model, state.get("keeps", {}), state.get("attrs", {}))
    apply_config(model, state.get("config", {}))
    return model


def _no_heads_error(model: nn.Module, skipped: dict[str, str]) -> UnsupportedModelError:
    if skipped:
        found = "; ".join(f"{name}: {why}" for name, why in list(skipped.items())[:3])
        return UnsupportedModelError(f"no attention heads of {type(model).__name__} can be removed ({found})")
    return UnsupportedModelError(
        f"{type(model).__name__} has no attention module slimkit recognizes (query/key/value projections such as "
        "q_proj/query/q_lin or a packed c_attn/qkv, an output projection, and a head width attribute such as "
        "head_dim); give the heads explicitly, e.g. groups=[['q:out*64', 'k:out*64', 'v:out*64', 'o:in*64']]"
    )


def _whole_units(config: Heads, groups: list[Group]) -> Heads:
    """``config`` with its ratio rounded up to one whole unit per group when it would remove none
    but half a unit or more (0.25 of 2 key/value groups -> 0.5, one group, with a warning); a
    ratio nearer to none is left for `_check_removed` to refuse."""
    if not groups or config.ratio == 0 or any(math.floor(g.size * config.ratio + 1e-9) for g in groups):
        return config
    smallest = min(groups, key=lambda g: g.size)
    if config.ratio * smallest.size < 0.5 - 1e-9:
        return config
    warnings.warn(
        f"heads ratio {config.ratio} is less than one of the {smallest.size} prunable units (key/value heads with "
        f"their query heads) of {smallest.label}: removing one, ratio {1 / smallest.size:.2f}",
        stacklevel=4,
    )
    return config.model_copy(update={"ratio": 1 / smallest.size})


def _check_removed(groups: list[Group], state: dict[str, Any], ratio: float) -> None:
    """Refuse a ratio that removes no head at all (e.g. 0.25 of 2 key/value groups)."""
    pruned = state.get("pruned", {})
    if ratio > 0 and groups and all(size == kept for size, kept in pruned.values()):
        smallest = min(groups, key=lambda g: g.size)
        raise InvalidConfigError(
            f"heads ratio {ratio} removes no head: {smallest.label} has {smallest.size} prunable units (key/value "
            f"heads with their query heads); a ratio >= {0.5 / smallest.size:.2f} removes one of them "
            f"(ratio {1 / smallest.size:.2f})"
        )


@register("prune", "heads", Heads, rebuild=rebuild_transformer)
def prune_heads(model: nn.Module, config: Heads, ctx: Context) -> nn.Module:
    """Remove attention heads (whole key/value groups under grouped-query attention)."""
    names, skipped = convertible_mha(model, ctx.selector)
    convert_mha(model, names)
    ctx.state.update(converted=names, skipped=skipped)
    sites: list[AttentionSite] = []
    with linear_view(model) as as_linear:
        ctx.state["as_linear"] = as_linear
        groups = _explicit(model, config)
        if groups is None:
            sites, unsupported = find_attention(model, ctx.selector)
            ctx.state["skipped"].update(unsupported)
            if not sites:
                raise _no_heads_error(model, ctx.state["skipped"])
            groups = head_groups(model, sites)
        effective = _whole_units(config, groups)
        if effective is not config:
            ctx.state["ratio"] = effective.ratio
        prune_groups(model, groups, effective, ctx)
    _check_removed(groups, ctx.state, config.ratio)
    kept = _uniform(ctx.state["pruned"], [g.label for g in groups])
    ctx.state["config"] = head_config_changes(model, sites, kept) if len(ctx.state["pruned"]) == len(groups) else {}
    apply_config(model, ctx.state["config"])
    return model


@register("prune", "neurons", Neurons, rebuild=rebuild_transformer)
def prune_neurons(model: nn.Module, config: Neurons, ctx: Context) -> nn.Module:
    """Remove hidden neurons of FFNs (gated ones: gate, up and down together)."""
    with linear_view(model) as as_linear:
        ctx.state["as_linear"] = as_linear
        modules = dict(model.named_modules())
        sites = find_ffns(model, ctx.selector) if not config.groups else []
        groups = _explicit(model, config) or [s.group(modules[s.name]) for s in sites] or _linear_groups(model, ctx)
        if not groups:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no FFN slimkit recognizes (up_proj/fc1/c_fc/intermediate.dense/linear1 "
                "feeding down_proj/fc2/c_proj/output.dense/linear2, or Linear -> activation -> Linear); give the "
                "neurons explicitly: groups=[['fc1:out', 'fc2:in']]"
            )
        prune_groups(model, groups, config, ctx)
    kept = _uniform(ctx.state["pruned"], [g.label for g in groups]) if sites else None
    changes = dict.fromkeys(FFN_CONFIG_KEYS, kept) if kept and len(ctx.state["pruned"]) == len(groups) else {}
    ctx.state["config"] = config_updates(model, changes)
    apply_config(model, ctx.state["config"])
    return model
