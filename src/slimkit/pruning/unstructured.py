"""Unstructured, N:M and gradual pruning, and sparse storage.

Each method masks Conv/Linear weights with `MaskedWeight`; with ``permanent=True`` (the
default) the masked weights are then stored as `SparseWeight` so the saved artifact is
really smaller. ``permanent=False`` keeps trainable masks; `make_permanent` converts later.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError
from slimkit.core.registry import Context, apply, register
from slimkit.core.walk import select_modules
from slimkit.pruning.configs import NM, Gradual, Unstructured
from slimkit.pruning.masks import PRUNABLE, apply_masks, masked_layers, nm_mask, sparsity_masks
from slimkit.pruning.sparse import rebuild_masks, rebuild_storage, to_sparse_storage


class SparseStorage(Config):
    """Store masked weights sparse (bitmask or CSR): what `make_permanent` applies."""

    method = "sparse-storage"


def cubic_sparsity(step: int, steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta: ``s_t = s_f + (s_i - s_f) (1 - t / n)^3`` for step ``t`` of ``n``."""
    t = min(max(step, 0), steps)
    return final + (initial - final) * (1 - t / steps) ** 3


def _layers(model: nn.Module, ctx: Context) -> dict[str, nn.Module]:
    layers = dict(select_modules(model, ctx.selector, PRUNABLE))
    if not layers:
        raise InvalidConfigError("no Conv/Linear layer is selected: check include/exclude")
    return layers


def _scores(layers: dict[str, nn.Module], importance: str, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if importance == "random":
        return {n: torch.rand(m.weight.shape, generator=generator).to(m.weight.device) for n, m in layers.items()}
    return {n: m.weight.detach().abs() for n, m in layers.items()}


def _finish(model: nn.Module, names: list[str], permanent: bool, ctx: Context, **extra: Any) -> nn.Module:
    ctx.state.update(masked=names, **extra)
    if permanent:
        ctx.state["storage"] = to_sparse_storage(model)
    return model


def rebuild_masked(model: nn.Module, config: Config, state: dict[str, Any]) -> nn.Module:
    """Recreate the mask parametrizations, then the sparse storages, of the recorded sizes."""
    rebuild_masks(model, state.get("masked", []))
    rebuild_storage(model, state.get("storage", {}))
    return model


@register("prune", "unstructured", Unstructured, rebuild=rebuild_masked)
def prune_unstructured(model: nn.Module, config: Unstructured, ctx: Context) -> nn.Module:
    """Zero the lowest-magnitude (or random) weights, per layer or globally."""
    layers = _layers(model, ctx)
    masks = sparsity_masks(_scores(layers, config.importance, config.seed), config.ratio, config.scope)
    apply_masks(model, masks)
    return _finish(model, list(masks), config.permanent, ctx)


@register("prune", "nm", NM, rebuild=rebuild_masked)
def prune_nm(model: nn.Module, config: NM, ctx: Context) -> nn.Module:
    """Keep the N largest of every M consecutive input weights of each layer."""
    layers = _layers(model, ctx)
    masks, skipped = {}, {}
    for name, module in layers.items():
        if module.weight.shape[1] % config.m:
            skipped[name] = f"input size {module.weight.shape[1]} is not a multiple of m={config.m}"
        else:
            masks[name] = nm_mask(module.weight, config.n, config.m)
    if skipped:
        warnings.warn(f"N:M skipped layers: {skipped}", stacklevel=3)
    if not masks:
        raise InvalidConfigError(f"no layer can take {config.n}:{config.m} sparsity: {skipped}")
    apply_masks(model, masks)
    return _finish(model, list(masks), config.permanent, ctx, skipped=skipped)


@register("prune", "sparse-storage", SparseStorage, rebuild=rebuild_masked)
def store_sparse(model: nn.Module, config: SparseStorage, ctx: Context) -> nn.Module:
    """Convert masked layers to sparse storage (see `make_permanent`)."""
    ctx.state["storage"] = to_sparse_storage(model)
    return model


def make_permanent(model: nn.Module, inplace: bool = True) -> nn.Module:
    """Bake the masks of a ``permanent=False`` model into sparse storage (really smaller when saved)."""
    return apply("prune", model, "sparse-storage", inplace=inplace)


@register("prune", "gradual", Gradual, rebuild=rebuild_masked)
def prune_gradual(model: nn.Module, config: Gradual, ctx: Context) -> nn.Module:
    """Raise sparsity along the cubic schedule, fine-tuning on ``data`` between steps."""

    if ctx.data is None:
        raise InvalidConfigError("gradual pruning fine-tunes between steps: pass data= (training batches)")
    teacher = copy.deepcopy(model).eval() if config.finetune.distills else None
    layers = _layers(model, ctx)
    names = list(layers)
    history = []
    for step in range(config.steps + 1):
        sparsity = cubic_sparsity(step, config.steps, config.ratio, config.initial_ratio)
        scores = {n: model.get_submodule(n).weight.detach().abs() for n in names}
        apply_masks(model, sparsity_masks(scores, sparsity, config.scope))
        history.append(round(sparsity, 6))
        epochs = config.finetune.epochs if step < config.steps else config.final_epochs
        tuning = config.finetune.model_copy(update={"epochs": epochs})
        model = tuning.run(model, ctx.data, teacher, device=ctx.device, seed=config.seed + step)
    model.eval()
    return _finish(model, names, config.permanent, ctx, schedule=history)


def sparsity_of(model: nn.Module) -> float:
    """Fraction of zero weights over all Conv/Linear layers."""
    total = zero = 0
    for module in model.modules():
        if isinstance(module, PRUNABLE):
            w = module.weight.detach()
            total, zero = total + w.numel(), zero + int((w == 0).sum())
    return zero / max(total, 1)


__all__ = ["SparseStorage", "cubic_sparsity", "make_permanent", "masked_layers", "sparsity_of"]
