"""Quick A/B timings used to decide whether a conversion pays off on the current device.

The machines slimkit runs on are often shared and noisy, so the two candidates are timed
interleaved (A, B, A, B, ...) and compared by their lower quartile, which is far more
stable than a single mean.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.data import Batch
from slimkit.core.samples import example_batch as profile_batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ab_timing(
    baseline: Callable[[], Any],
    candidate: Callable[[], Any],
    *,
    device: torch.device | None = None,
    repeats: int = 15,
    warmup: int = 2,
) -> tuple[float, float]:
    """Time two callables interleaved; returns their lower-quartile times in milliseconds.

    Args:
        baseline: the current way (called with no arguments).
        candidate: the replacement.
        device: where they run (CUDA work is synchronized inside the timed span).
        repeats: timed calls of each.
        warmup: untimed calls of each first.
    """
    device = device or torch.device("cpu")
    fns = (baseline, candidate)
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns:
                fn()
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeats):
            for fn, bucket in zip(fns, times, strict=True):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                bucket.append(time.perf_counter() - t0)
    quartile = [sorted(bucket)[len(bucket) // 4] * 1e3 for bucket in times]
    return quartile[0], quartile[1]


def example_batch(model: nn.Module, example_inputs: Any, data: Iterable[Any] | None, device: torch.device) -> Batch:
    """One batch to time the model on: the example inputs, else a batch of 1 from ``data``,
    else the model's own ``example_inputs()``; moved to ``device``.

    Raises:
        DataError: when none of these is available.
    """
    return profile_batch(model, example_inputs, data).to(device)
