"""One calibration pass that feeds observers at chosen points of a model (NNCF style:
statistics are collected once, then any number of algorithms read them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.core.data import iter_batches, run_model
from slimkit.core.errors import DataError
from slimkit.quantization.observers import Observer


@dataclass(frozen=True)
class Point:
    """Where to observe: the first input or the output of module ``module``."""

    module: str
    where: str = "input"  # "input" or "output"


@torch.no_grad()
def calibrate(
    model: nn.Module,
    data: Iterable[Any],
    observers: dict[Point, Observer],
    *,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    require_all: bool = True,
) -> dict[Point, Observer]:
    """Run ``model`` (eval mode) over ``data`` and feed every observer its point's tensor.

    Args:
        model: run as is; hooks are removed afterwards and the train/eval mode restored.
        data: calibration batches (anything `slimkit.core.data.iter_batches` accepts).
        observers: point -> observer (each observes the tensor at its point, every batch).
        device: where the batches go (the model must be there already).
        limit: stop after this many batches.
        on_batch: called with each batch index (progress).
        require_all: raise when a point never runs; otherwise the caller reads
            ``observer.count == 0`` and decides.

    Returns:
        ``observers``, filled.

    Raises:
        DataError: when the data is empty, holds NaN/Inf (naming the batch), or (with
            ``require_all``) a point never runs.
    """
    handles = []
    current = {"batch": 0}
    for point, observer in observers.items():
        module = model.get_submodule(point.module)

        def hook(_m: nn.Module, args: Any, out: Any = None, *, p: Point = point, o: Observer = observer) -> None:
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
        batches = iter(iter_batches(data, device, limit))
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except DataError as exc:
                raise DataError(f"calibration batch {current['batch']}: {exc}") from None
            run_model(model, batch)
            if on_batch is not None:
                on_batch(current["batch"])
            current["batch"] += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    silent = list(dict.fromkeys(p.module for p, o in observers.items() if o.count == 0))
    if silent and require_all:
        raise DataError(
            f"these layers never ran as modules during calibration: {silent[:5]}; a model that reads a "
            "layer's weight directly (F.linear(x, layer.weight)) bypasses it -- exclude those layers"
        )
    return observers
