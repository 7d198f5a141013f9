"""Structured pruning: the ``channels`` handler and what ``neurons``/``heads`` share with it.

Groups come from the dependency graph (channels, neurons) or from the attention modules
(heads, BERT FFNs); each prunable group keeps its most important channels and every
coupled layer is rebuilt smaller. The record holds the kept indices, so `rebuild`
replays the surgery on a freshly built model without data.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.core.graph import capture
from slimkit.core.layers import linear_view
from slimkit.core.registry import Context, register
from slimkit.core.samples import example_batch
from slimkit.pruning.attention import convert_mha, convertible_mha, find_attention, head_attrs, width_groups
from slimkit.pruning.configs import Channels, _Structured
from slimkit.pruning.dependency import DependencyGraph
from slimkit.pruning.groups import Group, layer_table, parse_groups
from slimkit.pruning.importance import make_importance
from slimkit.pruning.layers import custom_layer_types, layer_pruner
from slimkit.pruning.surgery import Keeps, apply_keeps, plan_keeps

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
    inputs = example_inputs_for(model, ctx)
    if isinstance(inputs, dict) and "use_cache" in inspect.signature(model.forward).parameters:
        inputs = {**inputs, "use_cache": False}  # a decoder's key/value cache is no part of its channels
    gm = capture(model, inputs, hint=GROUPS_HINT, leaf_types=custom_layer_types())
    graph = DependencyGraph(gm)
    groups = graph.groups()
    graph.router(gm, groups)
    ctx.state.setdefault("skipped", {}).update(graph.opaque)
    ctx.state["skipped"].update(_unknown_layers(model, groups))
    return groups


def _unknown_layers(model: nn.Module, groups: list[Group]) -> dict[str, str]:
    """Layers (modules without submodules) holding parameters no group reaches, of a type
    channel pruning does not know."""
    reached = {member.module for group in groups for member in group.members}
    unknown = {}
    for name, module in model.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        layer = own and next(module.children(), None) is None and layer_pruner(module) is None
        if layer and name not in reached and not reached.intersection(own):
            unknown[name or type(module).__name__] = (
                f"{type(module).__name__} holds parameters of a layer type channel pruning does not know: "
                "teach it with sk.pruning.register_layer_pruner"
            )
    return unknown


def _top(score: torch.Tensor, count: int, blocks: int) -> torch.Tensor:
    """Indices (sorted) of the ``count`` best channels, as many in each of ``blocks`` equal blocks."""
    rows = score.view(blocks, -1)
    per = min(rows.shape[1], -(-count // blocks))
    offsets = torch.arange(blocks, device=score.device)[:, None] * rows.shape[1]
    return (rows.topk(per, dim=1).indices + offsets).flatten().sort().values.cpu()


def _counts(scores: list[torch.Tensor], groups: list[Group], config: _Structured) -> list[int]:
    """Channels each group keeps: ``ratio`` of each (``scope="layer"``) or the best of all (``"global"``)."""
    if config.scope == "global" and scores:
        normed = [s.float() / s.float().mean().clamp_min(1e-12) for s in scores]
        flat = torch.cat(normed)
        drop = math.floor(len(flat) * config.ratio + 1e-9)
        threshold = flat.sort().values[drop - 1] if drop else flat.min() - 1
        counts = [int((s > threshold).sum()) for s in normed]
        return [keep_count(g.size, 1 - c / g.size, config.round_to) for g, c in zip(groups, counts, strict=True)]
    return [keep_count(g.size, config.ratio, config.round_to) for g in groups]


def _routed(
    groups: list[Group], scores: list[torch.Tensor], counts: list[int], taken: set[tuple[str, str]], step: int
) -> tuple[Keeps, dict[str, list[int]], dict[str, str]]:
    """Prune the groups blocked only by size-dependent channel routing (`Router`): the ordered kept
    indices per layer, ``{label: [size, kept]}`` of those pruned, and why the others stay."""
    if not groups:
        return {}, {}, {}
    router = groups[0].router
    targets = {g.space: c for g, c in zip(groups, counts, strict=True)}
    by_space = {g.space: s for g, s in zip(groups, scores, strict=True)}
    keeps, widths, failed = router.solve(targets, by_space, taken, step)
    pruned = {g.label: [g.size, widths[g.space]] for g in groups if g.space in widths}
    kept_whole = {g.label: f"{g.blocked}; {failed[g.space]}" for g in groups if g.space in failed}
    return keeps, pruned, kept_whole


def prune_groups(model: nn.Module, groups: list[Group], config: _Structured, ctx: Context) -> nn.Module:
    """Score, choose and cut ``groups``; fills ``ctx.state`` with what `rebuild` needs."""
    skipped: dict[str, str] = dict(ctx.state.get("skipped", {}))
    prunable, routed = [], []
    for group in groups:
        if group.blocked and group.router is None:
            skipped[group.label] = group.blocked
        elif not all(ctx.selector(p) for p in group.producers):
            skipped[group.label] = "excluded by include/exclude"
        else:
            (routed if group.blocked else prunable).append(group)
    modules = layer_table(model)
    importance = make_importance(config.importance, config.seed)
    if hasattr(importance, "prepare"):
        importance.prepare(model, ctx.data, ctx.device)
    scores = [importance(g, modules) for g in prunable + routed]
    counts = _counts(scores, prunable + routed, config)
    kept = [_top(s, c, g.blocks) for s, c, g in zip(scores, counts, prunable, strict=False)]
    model.zero_grad(set_to_none=True)
    attrs: dict[str, dict[str, int]] = {}
    for group, keep in zip(prunable, kept, strict=True):
        attrs.update(head_attrs(model, group, len(keep)))
    keeps = plan_keeps(prunable, kept, modules)
    taken = {(m.module, m.axis) for g in prunable for m in g.members}
    n = len(prunable)
    routed_keeps, routed_pruned, kept_whole = _routed(routed, scores[n:], counts[n:], taken, config.round_to)
    skipped.update(kept_whole)
    for name, axes in routed_keeps.items():
        keeps.setdefault(name, {}).update(axes)
    apply_keeps(model, keeps, attrs)
    pruned = {g.label: [g.size, len(k)] for g, k in zip(prunable, kept, strict=True)} | routed_pruned
    if not pruned:
        warnings.warn(f"nothing to prune with {config.method!r}: {skipped or 'no prunable layers'}", stacklevel=3)
    ctx.state.update(
        keeps=keeps,
        attrs=attrs,
        skipped=skipped,
        pruned=pruned,
        recalibrated=_recalibrate(model, config, ctx) if pruned else 0,
    )
    return model


def _recalibrate(model: nn.Module, config: _Structured, ctx: Context) -> int:
    """BatchNorms re-estimated on ``ctx.data`` after the cut (0 without data or batches)."""
    if ctx.data is None or not config.recalibrate_batches:
        return 0
    from slimkit.training.batchnorm import recalibrate_batchnorms

    return recalibrate_batchnorms(model, ctx.data, max_batches=config.recalibrate_batches, device=ctx.device)


def rebuild_structured(model: nn.Module, config: _Structured, state: dict[str, Any]) -> nn.Module:
    """Replay the recorded surgery (MHA conversion, kept indices, head counts) without data."""
    convert_mha(model, state.get("converted", []))
    with linear_view(model, list(state.get("as_linear", []))):
        return apply_keeps(model, state.get("keeps", {}), state.get("attrs", {}))


def _inside_torch_layer(model: nn.Module, name: str) -> bool:
    """Whether a module sits in a ``torch.nn`` layer graph capture keeps whole (``nn.TransformerEncoderLayer``)."""
    parts = name.split(".")
    owners = (model.get_submodule(".".join(parts[:i])) for i in range(1, len(parts)))
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    return any(type(m).__module__.startswith("torch.nn.") and not isinstance(m, containers) for m in owners)


def _explicit(model: nn.Module, config: _Structured) -> list[Group] | None:
    return parse_groups(model, config.groups) if config.groups else None


@register("prune", "channels", Channels, rebuild=rebuild_structured)
def prune_channels(model: nn.Module, config: Channels, ctx: Context) -> nn.Module:
    """Remove channels of every prunable group of the dependency graph (linear-like layers such
    as transformers' ``Conv1D`` seen as ``nn.Linear`` meanwhile)."""
    if config.groups is None:  # q/k/v as separate Linears: their input width is the residual's
        names = [name for name in convertible_mha(model, ctx.selector)[0] if not _inside_torch_layer(model, name)]
        convert_mha(model, names)
        ctx.state["converted"] = names
    with linear_view(model) as as_linear:
        ctx.state["as_linear"] = as_linear
        groups = _explicit(model, config) or _with_head_widths(model, ctx, graph_groups(model, ctx))
        return prune_groups(model, groups, config, ctx)


def _with_head_widths(model: nn.Module, ctx: Context, groups: list[Group]) -> list[Group]:
    """``groups`` plus the head-width groups of the attention modules whose projections' outputs
    none of them prunes (the graph does not follow a reshape into heads)."""
    taken = {(m.module, m.axis) for g in groups if not g.blocked for m in g.members}
    sites, _ = find_attention(model, ctx.selector)
    widths, skipped = width_groups(model, sites)
    ctx.state.setdefault("skipped", {}).update(skipped)
    return groups + [g for g in widths if not any((m.module, m.axis) in taken for m in g.members)]
