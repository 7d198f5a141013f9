"""Structured pruning handlers: ``channels``, ``neurons`` and ``heads``.

Groups come from the dependency graph (channels, neurons) or from the attention modules
(heads, BERT FFNs); each prunable group keeps its most important channels and every
coupled layer is rebuilt smaller. The record holds the kept indices, so `rebuild`
replays the surgery on a freshly built model without data.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import DataError, InvalidConfigError, UnsupportedModelError
from slimkit.core.graph import capture
from slimkit.core.registry import Context, register
from slimkit.core.walk import check_matches
from slimkit.measure.profile import example_batch
from slimkit.pruning.attention import convert_mha, convertible_mha, ffn_groups, head_attrs, head_groups
from slimkit.pruning.configs import Channels, Heads, Neurons, _Structured
from slimkit.pruning.dependency import DependencyGraph
from slimkit.pruning.groups import Group, parse_groups
from slimkit.pruning.importance import make_importance
from slimkit.pruning.surgery import apply_keeps, plan_keeps

GROUPS_HINT = (
    "prune transformers' BERT-style models with method='heads' or 'neurons', or give the coupled layers "
    "explicitly: groups=[['fc1:out', 'fc2:in'], ...] ('module:out' / 'module:in', '*k' for k entries per channel)"
)


def keep_count(n: int, ratio: float, round_to: int) -> int:
    """Channels kept of ``n`` at ``ratio``: rounded up to ``round_to``, never fewer than ``round_to``."""
    keep = n - math.floor(n * ratio + 1e-9)
    keep = -(-keep // round_to) * round_to
    return min(n, max(keep, round_to))


def example_inputs_for(model: nn.Module, ctx: Context) -> Any:
    """``ctx.example_inputs``, else one sample of the data, the model's or its example's inputs."""
    try:
        batch = example_batch(model, ctx.example_inputs, ctx.data)
    except DataError:
        raise InvalidConfigError("structured pruning traces the model: pass example_inputs=(x,) or data=") from None
    return batch.kwargs or batch.args


def graph_groups(model: nn.Module, ctx: Context) -> list[Group]:
    """Groups of the model's dependency graph; layers it cannot follow are listed as skipped."""
    graph = DependencyGraph(capture(model, example_inputs_for(model, ctx), hint=GROUPS_HINT))
    ctx.state.setdefault("skipped", {}).update(graph.opaque)
    return graph.groups()


def _choose(scores: list[torch.Tensor], groups: list[Group], config: _Structured) -> list[torch.Tensor]:
    """Kept channel indices (sorted) of each group."""
    if config.scope == "global" and scores:
        normed = [s.float() / s.float().mean().clamp_min(1e-12) for s in scores]
        flat = torch.cat(normed)
        drop = math.floor(len(flat) * config.ratio + 1e-9)
        threshold = flat.sort().values[drop - 1] if drop else flat.min() - 1
        counts = [int((s > threshold).sum()) for s in normed]
        counts = [keep_count(g.size, 1 - c / g.size, config.round_to) for g, c in zip(groups, counts, strict=True)]
    else:
        counts = [keep_count(g.size, config.ratio, config.round_to) for g in groups]
    return [s.topk(c).indices.sort().values.cpu() for s, c in zip(scores, counts, strict=True)]


def prune_groups(model: nn.Module, groups: list[Group], config: _Structured, ctx: Context) -> nn.Module:
    """Score, choose and cut ``groups``; fills ``ctx.state`` with what `rebuild` needs."""
    skipped: dict[str, str] = dict(ctx.state.get("skipped", {}))
    prunable = []
    for group in groups:
        if group.blocked:
            skipped[group.label] = group.blocked
        elif not all(ctx.selector(p) for p in group.producers):
            skipped[group.label] = "excluded by include/exclude"
        else:
            prunable.append(group)
    if not prunable:
        warnings.warn(f"nothing to prune with {config.method!r}: {skipped or 'no prunable layers'}", stacklevel=3)
    modules = dict(model.named_modules())
    importance = make_importance(config.importance, config.seed)
    if hasattr(importance, "prepare"):
        importance.prepare(model.to(ctx.device), ctx.data, ctx.device)
    scores = [importance(g, modules) for g in prunable]
    kept = _choose(scores, prunable, config)
    model.zero_grad(set_to_none=True)
    attrs: dict[str, dict[str, int]] = {}
    for group, keep in zip(prunable, kept, strict=True):
        attrs.update(head_attrs(model, group, len(keep)))
    keeps = plan_keeps(prunable, kept, modules)
    apply_keeps(model, keeps, attrs)
    ctx.state.update(
        keeps=keeps,
        attrs=attrs,
        skipped=skipped,
        pruned={g.label: [g.size, len(k)] for g, k in zip(prunable, kept, strict=True)},
    )
    return model


def rebuild_structured(model: nn.Module, config: _Structured, state: dict[str, Any]) -> nn.Module:
    """Replay the recorded surgery (MHA conversion, kept indices, head counts) without data."""
    convert_mha(model, state.get("converted", []))
    return apply_keeps(model, state.get("keeps", {}), state.get("attrs", {}))


def _explicit(model: nn.Module, config: _Structured) -> list[Group] | None:
    return parse_groups(model, config.groups) if config.groups else None


@register("prune", "channels", Channels, rebuild=rebuild_structured)
def prune_channels(model: nn.Module, config: Channels, ctx: Context) -> nn.Module:
    """Remove channels of every prunable group of the dependency graph."""
    check_matches(model, ctx.selector)
    return prune_groups(model, _explicit(model, config) or graph_groups(model, ctx), config, ctx)


def _is_linear_group(group: Group, modules: dict[str, nn.Module]) -> bool:
    return all(isinstance(modules[m.module], nn.Linear) for m in group.members)


@register("prune", "neurons", Neurons, rebuild=rebuild_structured)
def prune_neurons(model: nn.Module, config: Neurons, ctx: Context) -> nn.Module:
    """Remove hidden neurons between Linear layers (from the graph, or BERT FFNs by structure)."""
    check_matches(model, ctx.selector)
    groups = _explicit(model, config)
    if groups is None:
        groups = ffn_groups(model, ctx.selector)
        if not groups:
            modules = dict(model.named_modules())
            groups = [g for g in graph_groups(model, ctx) if _is_linear_group(g, modules)]
    if not groups:
        raise UnsupportedModelError(f"{type(model).__name__} has no Linear -> activation -> Linear neurons to prune")
    return prune_groups(model, groups, config, ctx)


@register("prune", "heads", Heads, rebuild=rebuild_structured)
def prune_heads(model: nn.Module, config: Heads, ctx: Context) -> nn.Module:
    """Remove attention heads of ``nn.MultiheadAttention`` and BERT-style self-attention."""
    check_matches(model, ctx.selector)
    names, skipped = convertible_mha(model, ctx.selector)
    convert_mha(model, names)
    ctx.state.update(converted=names, skipped=skipped)
    groups = _explicit(model, config) or head_groups(model, ctx.selector)
    if not groups:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no attention module slimkit knows (nn.MultiheadAttention or "
            "transformers' BERT-style self-attention); give the heads explicitly, e.g. "
            "groups=[['q:out*64', 'k:out*64', 'v:out*64', 'o:in*64']]"
        )
    return prune_groups(model, groups, config, ctx)
