"""Wall-clock latency of a callable: warm-up excluded, percentiles over timed runs, with their spread.

Measurements use one intra-op thread unless told otherwise (`DEFAULT_THREADS`): a figure
taken with every core of a shared machine says more about the neighbours than the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from slimkit.core.errors import InvalidConfigError

log = logging.getLogger(__name__)

DEFAULT_THREADS = 1
"""Intra-op threads every slimkit measurement uses unless given another count (``--threads``)."""
MAX_SPREAD = 1.2
"""Timing repeats until p90 / p50 is at most this (or the budget ends); above it a figure is noisy."""


@dataclass(frozen=True)
class Latency:
    """Latency statistics in milliseconds over ``runs`` timed calls (warm-up excluded).

    Attributes:
        spread: p90 / p50 (1.0: every run took the same time).
        noisy: the spread stayed above `MAX_SPREAD` until the time budget ended: the
            figures moved from run to run (a busy machine), treat them with care.
        p10_ms: the 10th percentile: an undisturbed run (0.0 in records written before it).
    """

    p50_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    spread: float = 0.0
    noisy: bool = False
    p10_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.spread:  # records written before the spread was stored
            object.__setattr__(self, "spread", self.p90_ms / self.p50_ms if self.p50_ms > 0 else 1.0)


def _default_sync() -> None:
    """Wait for queued CUDA work when CUDA is in use in this process, so it is timed."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 1000,
    budget_s: float = 1.0,
    max_spread: float = MAX_SPREAD,
    sync: Callable[[], None] | None = None,
) -> Latency:
    """Time ``fn()`` with `time.perf_counter`, repeating until the figures settle.

    After ``warmup`` untimed calls, calls are timed one by one. Once ``min_runs`` are done,
    timing stops as soon as the spread (p90 / p50) is at most ``max_spread``, or when
    ``budget_s`` seconds have been spent timing, or at ``max_runs``. A result whose spread
    is still above ``max_spread`` is flagged ``noisy``.

    Args:
        fn: the work to time, called with no arguments.
        warmup: untimed calls made first.
        min_runs: timed calls always made.
        max_runs: timed calls never exceeded.
        budget_s: time after which no new run starts once ``min_runs`` are done.
        max_spread: the p90 / p50 ratio that counts as settled (>= 1).
        sync: called after each call, inside the timed span, to wait for asynchronous work;
            by default ``torch.cuda.synchronize`` when CUDA is initialized, else nothing.

    Raises:
        InvalidConfigError: when the counts or the budget are out of range.
    """
    if warmup < 0 or min_runs < 1 or max_runs < min_runs or budget_s < 0 or max_spread < 1:
        raise InvalidConfigError(
            f"need warmup >= 0, 1 <= min_runs <= max_runs, budget_s >= 0 and max_spread >= 1; got warmup={warmup}, "
            f"min_runs={min_runs}, max_runs={max_runs}, budget_s={budget_s}, max_spread={max_spread}"
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
        if len(times) >= min_runs and (t1 - start >= budget_s or _spread(_percentiles(times)[1:]) <= max_spread):
            break
    p10, p50, p90 = _percentiles(times)
    spread = _spread((p50, p90))
    mean = float(torch.tensor(times, dtype=torch.float64).mean()) * 1e3
    log.debug("timed %d runs: p50 %.4f ms, p90 %.4f ms, spread %.2f", len(times), p50, p90, spread)
    if spread > max_spread:
        log.info("latency is noisy: p90/p50 = %.2f after %d runs (more than %.2f)", spread, len(times), max_spread)
    return Latency(
        p50_ms=p50, p90_ms=p90, mean_ms=mean, runs=len(times), spread=spread, noisy=spread > max_spread, p10_ms=p10
    )


def _percentiles(times_s: list[float]) -> tuple[float, float, float]:
    """(p10, p50, p90) in milliseconds."""
    ms = torch.tensor(times_s, dtype=torch.float64) * 1e3
    p10, p50, p90 = torch.quantile(ms, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return p10, p50, p90


def _spread(p50_p90: tuple[float, float]) -> float:
    p50, p90 = p50_p90
    return p90 / p50 if p50 > 0 else 1.0


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
