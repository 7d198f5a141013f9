"""Parameter counts: every weight a model holds, including weights kept outside ``nn.Parameter``.

Modules that store their weights in another form (packed low-bit buffers, factorized
storage, ...) take part by defining ``logical_weights()``: it returns the tensors the module
represents, dequantized-equivalent, and their elements are counted alongside the module's
parameters (so it must not return tensors that are already parameters).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def _counted_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    """Each parameter once (shared ones too), then each module's ``logical_weights()``."""
    yield from model.parameters()
    for module in model.modules():
        logical = getattr(module, "logical_weights", None)
        if callable(logical):
            yield from logical()


def count_params(model: nn.Module) -> int:
    """Number of weight elements: all parameters (a shared one counted once) plus the
    elements of every ``logical_weights()`` a submodule reports."""
    return sum(t.numel() for t in _counted_tensors(model))


def count_nonzero(model: nn.Module) -> int:
    """Number of nonzero weight elements, over the same tensors as `count_params`."""
    return sum(int(torch.count_nonzero(t.detach())) for t in _counted_tensors(model))
