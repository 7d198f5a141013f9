"""BatchNorm adaptation: re-estimate running statistics after a model's layers changed.

Removing channels (or factorizing a layer) shifts what every later BatchNorm sees, while its
running mean and variance still describe the original model; a pruned small CNN can fall to
chance accuracy from that alone. Running a few batches with only the BatchNorms in training
mode (cumulative averages, no gradients, dropout and other layers left in eval mode) restores
them — the "adaptive BN" evaluation of EagleEye (Li et al., 2020) and NNCF's BN adaptation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.data import iter_batches, run_model


def tracked_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers (any subclass) of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


def recalibrate_batchnorms(
    model: nn.Module, data: Iterable[Any], *, max_batches: int | None = None, device: torch.device | str | None = None
) -> int:
    """Reset and re-estimate the running statistics of ``model``'s BatchNorms on ``data``, in place.

    Args:
        model: the model (its train/eval flags are restored afterwards).
        data: batches in any form `iter_batches` reads (targets are ignored).
        max_batches: use at most this many batches (default: all).
        device: where batches go (default: the model's parameters' device).

    Returns:
        How many BatchNorm layers were re-estimated (0: none to do, nothing run).

    Raises:
        DataError: empty data, NaN/Inf, or inputs that do not fit the model.
    """
    norms = tracked_batchnorms(model)
    if not norms:
        return 0
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches, not an exponential one
        norm.train()
    try:
        with torch.no_grad():
            for batch in iter_batches(data, device, max_batches):
                run_model(model, batch)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for module, training in modes.items():
            module.train(training)
    return len(norms)
