"""Sizes in bytes: of a saved artifact on disk, and of the tensors a model holds in memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from slimkit.core.errors import InvalidConfigError


def artifact_bytes(path: str | os.PathLike[str]) -> int:
    """Size of a saved artifact: a file's size, or the total over every file in a folder.

    Args:
        path: a file or a folder (walked recursively; symlinked folders are not followed,
            broken links are skipped).

    Raises:
        InvalidConfigError: when ``path`` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise InvalidConfigError(f"{str(root)!r} does not exist: give the path of a saved model file or folder")
    if root.is_file():
        return root.stat().st_size
    files = (Path(folder) / name for folder, _, names in os.walk(root) for name in names)
    return sum(f.stat().st_size for f in files if f.is_file())


def _held_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Parameters and buffers (each object once), then tensors only the state dict exposes,
    such as the packed weights of ``torch.ao`` quantized modules."""
    seen: set[int] = set()
    state = model.state_dict(keep_vars=True).values()
    for tensor in (*model.parameters(), *model.buffers(), *tree_leaves(list(state))):
        if isinstance(tensor, torch.Tensor) and id(tensor) not in seen:
            seen.add(id(tensor))
            yield tensor


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of the tensors a model holds: parameters and buffers, a shared one counted once.

    Weights kept outside parameters and buffers but saved in the state dict (for example
    the packed weights of ``torch.ao`` quantized modules) are counted too.
    """
    return sum(t.numel() * t.element_size() for t in _held_tensors(model))
