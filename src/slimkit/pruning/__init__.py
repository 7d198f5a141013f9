"""Pruning ``W_p = P(W, alpha)``: unstructured, N:M, gradual, and structured pruning that
physically removes channels, neurons and attention heads along the dependency graph.

Methods (``sk.prune(model, NAME_OR_CONFIG, ...)``): ``channels`` (`Channels`), ``neurons``
(`Neurons`), ``heads`` (`Heads`), ``unstructured`` (`Unstructured`), ``nm`` (`NM`),
``gradual`` (`Gradual`), ``sparse-storage`` (what `make_permanent` applies).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.registry import apply
from slimkit.pruning import structured, unstructured  # noqa: F401  (registers the methods)
from slimkit.pruning.configs import NM, Channels, Gradual, Heads, Neurons, Unstructured
from slimkit.pruning.dependency import DependencyGraph
from slimkit.pruning.groups import Group, Member
from slimkit.pruning.importance import BNScale, Magnitude, RandomImportance, Taylor, make_importance
from slimkit.pruning.unstructured import SparseStorage, cubic_sparsity, make_permanent, sparsity_of


def prune(
    model: nn.Module,
    method: str | Config = "channels",
    *,
    data: Iterable[Any] | None = None,
    example_inputs: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    inplace: bool = False,
    device: str | torch.device = "auto",
    **options: Any,
) -> nn.Module:
    """Prune ``model`` with a registered method (name + options, or a config object).

    Args:
        model: the model (copied unless ``inplace``).
        method: ``"channels"``, ``"neurons"``, ``"heads"``, ``"unstructured"``, ``"nm"``,
            ``"gradual"``, or a config such as ``Channels(ratio=0.5)``.
        data: batches for Taylor importance and for gradual pruning's fine-tuning.
        example_inputs: inputs to trace the model with (structured methods).
        include: glob patterns of module names that may be pruned.
        exclude: glob patterns of module names never pruned.
        inplace: change ``model`` itself.
        device: where computation runs (``"auto"``: CUDA when present).
        **options: fields of the method's config (``ratio=0.5``, ``sparsity=0.9``, ...).

    Returns:
        The pruned model, whose record lists the transform (and the layers skipped).
    """
    return apply(
        "prune", model, method, data=data, example_inputs=example_inputs, include=include, exclude=exclude,
        inplace=inplace, device=device, **options,
    )  # fmt: skip


__all__ = [
    "NM",
    "BNScale",
    "Channels",
    "DependencyGraph",
    "Gradual",
    "Group",
    "Heads",
    "Magnitude",
    "Member",
    "Neurons",
    "RandomImportance",
    "SparseStorage",
    "Taylor",
    "Unstructured",
    "cubic_sparsity",
    "make_importance",
    "make_permanent",
    "prune",
    "sparsity_of",
]
