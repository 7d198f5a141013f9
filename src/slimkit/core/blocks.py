"""Repeated block lists (a transformer's layers, a CNN stage) and which blocks to keep.

Shared by depth pruning and depth-shrunk distillation students: both keep blocks spread
evenly from the first to the last (DistilBERT's pick), and renumber what the blocks
remember of their position (transformers' ``layer_idx``, used by key/value caches).
"""

from __future__ import annotations

import math

from torch import nn


def spread(count: int, keep: int) -> list[int]:
    """``keep`` of ``count`` indices, evenly spaced from the first to the last (12, 6 -> 0, 2, 4, 7, 9, 11)."""
    keep = max(1, min(keep, count))
    if keep == 1:
        return [0]
    return [math.floor(i * (count - 1) / (keep - 1) + 0.5) for i in range(keep)]


def keep_blocks(model: nn.Module, path: str, kept: list[int]) -> nn.Module:
    """Keep only blocks ``kept`` of the list at ``path``, in place, and renumber them.

    A ``ModuleList``'s blocks are renamed ``0..k-1`` (what a config with ``k`` layers builds);
    an ``nn.Sequential`` keeps its blocks' names.

    Returns:
        The block list.

    Raises:
        IndexError: when ``kept`` names a block the list does not have.
    """
    blocks = model.get_submodule(path)
    items = list(blocks._modules.items())
    if not kept or max(kept) >= len(items):
        raise IndexError(f"cannot keep blocks {kept} of {path}: it has {len(items)}")
    blocks._modules.clear()
    for index, i in enumerate(kept):
        name, block = items[i]
        blocks._modules[str(index) if isinstance(blocks, nn.ModuleList) else name] = block
        for sub in block.modules():
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = index
    return blocks
