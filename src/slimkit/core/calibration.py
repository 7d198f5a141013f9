"""Calibration: `run_batches` is the one loop every data-driven method runs its calibration
data through (batches checked, errors naming the batch, the forward optionally cut short after
a given module); `calibrate` runs it once with every statistic the methods declared attached at
its point of the model (a layer's input or output), so one pass serves all of them. GPTQ
declares its Hessians one block of layers at a time (``stop_at`` the block): each block must
see its inputs as the blocks before it were already quantized, and only one block's Hessians
are held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.core.data import iter_batches, run_model
from slimkit.core.errors import DataError
from slimkit.core.statistics import Statistic


@dataclass(frozen=True)
class Point:
    """Where to observe: the first input or the output of module ``module``."""

    module: str
    where: str = "input"  # "input" or "output"


class _StopForward(Exception):
    """Raised by a hook to end a calibration forward once the module of interest has run."""


@torch.no_grad()
def run_batches(
    model: nn.Module,
    data: Iterable[Any],
    device: torch.device | str,
    *,
    limit: int | None = None,
    stop_at: nn.Module | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Run ``model`` over the calibration ``data`` (hooks set by the caller see every forward).

    Args:
        model: run as is (already on ``device``, in the mode the caller wants).
        data: calibration batches (anything `slimkit.core.data.iter_batches` accepts).
        device: where the batches go.
        limit: stop after this many batches.
        stop_at: cut each forward short once this module has produced its output (no
            activations of later layers are computed or kept).
        on_batch: called with each batch index after its forward.

    Returns:
        The number of batches run.

    Raises:
        DataError: when the data is empty or holds NaN/Inf, naming the batch.
    """
    handle = stop_at.register_forward_hook(_stop) if stop_at is not None else None
    index = 0
    try:
        batches = iter(iter_batches(data, device, limit))
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except DataError as exc:
                raise DataError(f"calibration batch {index}: {exc}") from None
            try:
                run_model(model, batch)
            except _StopForward:
                pass
            if on_batch is not None:
                on_batch(index)
            index += 1
    finally:
        if handle is not None:
            handle.remove()
    return index


def _stop(_module: nn.Module, _inputs: tuple[Any, ...], _output: Any) -> None:
    raise _StopForward


@torch.no_grad()
def calibrate(
    model: nn.Module,
    data: Iterable[Any],
    statistics: dict[Point, Statistic],
    *,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    require_all: bool = True,
    stop_at: nn.Module | None = None,
) -> dict[Point, Statistic]:
    """Run ``model`` (eval mode) over ``data`` once and feed every statistic its point's tensor.

    Args:
        model: run as is; hooks are removed afterwards and the train/eval mode restored.
        data: calibration batches (anything `slimkit.core.data.iter_batches` accepts).
        statistics: point -> `Statistic` (an activation observer, a channel mean, ...), each
            fed the tensor at its point on every batch.
        device: where the batches go (the model must be there already).
        limit: stop after this many batches.
        on_batch: called with each batch index (progress).
        require_all: raise when a point never runs; otherwise the caller reads
            ``statistic.count == 0`` and decides.
        stop_at: cut each forward short once this module has run (later layers compute nothing).

    Returns:
        ``statistics``, filled.

    Raises:
        DataError: when the data is empty, holds NaN/Inf (naming the batch), or (with
            ``require_all``) a point never runs.
    """
    handles = []
    current = {"batch": 0}

    def count(index: int) -> None:
        current["batch"] = index + 1
        if on_batch is not None:
            on_batch(index)

    for point, statistic in statistics.items():
        module = model.get_submodule(point.module)

        def hook(_m: nn.Module, args: Any, out: Any = None, *, p: Point = point, o: Statistic = statistic) -> None:
            tensor = (args[0] if args else None) if p.where == "input" else out
            if isinstance(tensor, torch.Tensor):
                try:
                    o.observe(tensor)
                except DataError:
                    raise DataError(
                        f"calibration batch {current['batch']} produces NaN/Inf at the {p.where} of "
                        f"{p.module!r}: check that batch and the model's numerics"
                    ) from None

        if point.where == "input":
            handles.append(module.register_forward_pre_hook(hook))
        else:
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        run_batches(model, data, device, limit=limit, on_batch=count, stop_at=stop_at)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    silent = list(dict.fromkeys(p.module for p, o in statistics.items() if o.count == 0))
    if silent and require_all:
        raise DataError(
            f"these layers never ran as modules during calibration: {silent[:5]}; a model that reads a "
            "layer's weight directly (F.linear(x, layer.weight)) bypasses it -- exclude those layers"
        )
    return statistics
