"""Pruning ``W_p = P(W, alpha)``: unstructured, N:M, gradual, and structured pruning that
physically removes channels, neurons, attention heads and whole blocks.

Methods (``sk.prune(model, NAME_OR_CONFIG, ...)``): ``channels`` (`Channels`), ``neurons``
(`Neurons`), ``heads`` (`Heads`), ``depth`` (`Depth`), ``unstructured`` (`Unstructured`), ``nm`` (`NM`),
``gradual`` (`Gradual`), ``sparse-storage`` (what `make_permanent` applies).
"""

from __future__ import annotations

from slimkit.core.registry import make_verb
from slimkit.pruning import depth, structured, transformers, unstructured  # noqa: F401  (registers the methods)
from slimkit.pruning.configs import NM, Channels, Depth, Gradual, Heads, Neurons, Unstructured
from slimkit.pruning.dependency import DependencyGraph
from slimkit.pruning.groups import Group, Member
from slimkit.pruning.importance import (
    Activation,
    BNScale,
    Importance,
    Magnitude,
    RandomImportance,
    Taylor,
    make_importance,
    register_importance,
)
from slimkit.pruning.layers import LayerPruner, register_layer_pruner
from slimkit.pruning.unstructured import SparseStorage, cubic_sparsity, make_permanent, sparsity_of

prune = make_verb(
    "prune",
    "channels",
    "Prune ``model`` with a registered method (name + options, or a config object).",
)


__all__ = [
    "NM",
    "BNScale",
    "Channels",
    "DependencyGraph",
    "Depth",
    "Gradual",
    "Group",
    "Heads",
    "LayerPruner",
    "Magnitude",
    "Member",
    "Neurons",
    "RandomImportance",
    "SparseStorage",
    "Taylor",
    "Activation",
    "Unstructured",
    "cubic_sparsity",
    "make_importance",
    "register_importance",
    "register_layer_pruner",
    "Importance",
    "make_permanent",
    "prune",
    "sparsity_of",
]
