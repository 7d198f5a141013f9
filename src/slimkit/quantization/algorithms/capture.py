"""Calibration capture shared by the data-driven algorithms (GPTQ, SmoothQuant, bias correction).

Statistics are gathered with forward hooks. To keep peak memory low on large models the
layers are visited one *unit* at a time (a transformer block, or a lone layer outside the
blocks): the model runs on the calibration data only until that unit has produced its
output, then the forward is cut short, so no activations of later layers are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from slimkit.quantization.calibration import run_batches


def block_units(model: nn.Module, names: list[str]) -> list[tuple[str, list[str]]]:
    """Group layer ``names`` into units: one per child of the model's main block list.

    The block list is the `nn.ModuleList` holding the most of ``names`` (``encoder.layer``
    in BERT). Layers outside it form single-layer units. Units follow module order.

    Returns:
        ``[(unit_module_name, [layer names]), ...]``.
    """
    best, best_count = None, 0
    for lname, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            count = sum(1 for n in names if n.startswith(lname + "."))
            if count > best_count:
                best, best_count = lname, count
    units: dict[str, list[str]] = {}
    for name in names:
        unit = name
        if best is not None and name.startswith(best + "."):
            unit = best + "." + name[len(best) + 1 :].split(".")[0]
        units.setdefault(unit, []).append(name)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(units.items(), key=lambda item: order[item[0]])


def run_until(
    model: nn.Module,
    data: Iterable[Any],
    stop_at: nn.Module,
    hooks: dict[nn.Module, Callable[[nn.Module, tuple[Any, ...], Any], None]],
    device: torch.device,
    limit: int | None = None,
) -> int:
    """Run ``model`` over ``data`` with forward ``hooks``, cutting each forward after ``stop_at``.

    Args:
        model: the model (already on ``device``).
        data: calibration batches (any form `iter_batches` reads).
        stop_at: the module after whose forward the rest of the model is skipped.
        hooks: ``module -> hook(module, inputs, output)`` called on each forward.
        device: where batches go.
        limit: use at most this many batches.

    Returns:
        The number of batches run.
    """
    handles = [m.register_forward_hook(h) for m, h in hooks.items()]
    try:
        return run_batches(model, data, device, limit=limit, stop_at=stop_at)
    finally:
        for handle in handles:
            handle.remove()


def flat_inputs(inputs: tuple[Any, ...], features: int) -> torch.Tensor:
    """A layer's first input as a float32 ``(rows, features)`` matrix."""
    return inputs[0].detach().reshape(-1, features).float()
