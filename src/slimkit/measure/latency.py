"""Wall-clock latency of a callable: warm-up excluded, percentiles over timed runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from slimkit.core.errors import InvalidConfigError


@dataclass(frozen=True)
class Latency:
    """Latency statistics in milliseconds over ``runs`` timed calls (warm-up excluded)."""

    p50_ms: float
    p90_ms: float
    mean_ms: float
    runs: int


def _default_sync() -> None:
    """Wait for queued CUDA work when CUDA is in use in this process, so it is timed."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 200,
    budget_s: float = 1.0,
    sync: Callable[[], None] | None = None,
) -> Latency:
    """Time ``fn()`` with `time.perf_counter`.

    After ``warmup`` untimed calls, calls are timed one by one until ``max_runs`` are done,
    or earlier once ``min_runs`` are done and ``budget_s`` seconds have been spent timing.

    Args:
        fn: the work to time, called with no arguments.
        warmup: untimed calls made first.
        min_runs: timed calls always made.
        max_runs: timed calls never exceeded.
        budget_s: time after which no new run starts once ``min_runs`` are done.
        sync: called after each call, inside the timed span, to wait for asynchronous work;
            by default ``torch.cuda.synchronize`` when CUDA is initialized, else nothing.

    Raises:
        InvalidConfigError: when the counts or the budget are out of range.
    """
    if warmup < 0 or min_runs < 1 or max_runs < min_runs or budget_s < 0:
        raise InvalidConfigError(
            f"need warmup >= 0, 1 <= min_runs <= max_runs and budget_s >= 0; got warmup={warmup}, "
            f"min_runs={min_runs}, max_runs={max_runs}, budget_s={budget_s}"
        )
    sync = sync or _default_sync
    for _ in range(warmup):
        fn()
        sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs:
        t0 = time.perf_counter()
        fn()
        sync()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if len(times) >= min_runs and t1 - start >= budget_s:
            break
    ms = torch.tensor(times, dtype=torch.float64) * 1e3
    p50, p90 = torch.quantile(ms, torch.tensor([0.5, 0.9], dtype=torch.float64)).tolist()
    return Latency(p50_ms=p50, p90_ms=p90, mean_ms=float(ms.mean()), runs=len(times))


@contextmanager
def fixed_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after.

    Args:
        n: intra-op threads to use; ``None`` leaves the setting as it is.

    Raises:
        InvalidConfigError: when ``n`` is below 1.
    """
    if n is None:
        yield
        return
    if n < 1:
        raise InvalidConfigError(f"the number of threads must be >= 1, got {n}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
