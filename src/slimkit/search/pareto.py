"""The Pareto front: items no other item beats on every minimised objective."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` is no worse than ``b`` everywhere and better somewhere (all minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(items: Sequence[T], values: Callable[[T], Sequence[float]]) -> list[T]:
    """The items no other item dominates, in input order; of equal points the first is kept."""
    points = [tuple(values(item)) for item in items]
    front = []
    for i, (item, point) in enumerate(zip(items, points, strict=True)):
        beaten = any(dominates(other, point) for other in points)
        repeated = point in points[:i]
        if not beaten and not repeated:
            front.append(item)
    return front
