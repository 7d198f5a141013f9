"""The batches of one epoch, in an order that depends only on seed + epoch (so a resumed
run sees the same data as an uninterrupted one)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import torch

from slimkit.core.data import TensorData


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator seeded by ``seed`` and ``epoch``."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def count_batches(data: Iterable[Any]) -> int:
    """Number of batches in ``data`` (its ``len`` when it has one, else by iterating once)."""
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return sum(1 for _ in data)


def epoch_batches(data: Iterable[Any], epoch: int, seed: int, shuffle: bool) -> Iterator[Any]:
    """Iterate ``data`` for ``epoch``.

    `TensorData` is shuffled by sample, a list/tuple of batches by batch order, each with
    a permutation drawn from (seed, epoch); other iterables (DataLoaders, generators)
    keep their own order.
    """
    if shuffle and isinstance(data, TensorData):
        perm = torch.randperm(len(data.x), generator=epoch_generator(seed, epoch))
        y = None if data.y is None else data.y[perm]
        return iter(TensorData(data.x[perm], y, data.batch_size))
    if shuffle and isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        perm = torch.randperm(len(data), generator=epoch_generator(seed, epoch)).tolist()
        return (data[i] for i in perm)
    return iter(data)


def rank_batches(batches: Iterator[Any], rank: int, world: int, count: int, skip: int = 0) -> Iterator[Any]:
    """Batches ``rank, rank + world, ...`` (``count`` of them), skipping the first ``skip``."""
    start = rank + skip * world
    return islice(batches, start, start + (count - skip) * world, world)
