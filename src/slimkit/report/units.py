"""One size unit per report, so every table cell and plot axis of a report reads the same way."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

_UNITS = (("B", 1), ("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3))


@dataclass(frozen=True)
class SizeUnit:
    """A binary byte unit (B, KiB, MiB, GiB) and the decimals that show the smallest size.

    Attributes:
        name: ``"KiB"``, ...
        scale: bytes per unit.
        decimals: decimals every value of the report is printed with.
    """

    name: str
    scale: int
    decimals: int

    @classmethod
    def for_sizes(cls, sizes: Iterable[float | None]) -> SizeUnit:
        """The unit where the largest size reads as 1..1023, with decimals enough to give the
        smallest size at least two significant digits (at most 3 decimals)."""
        known = [abs(s) for s in sizes if s is not None and math.isfinite(s)]
        largest = max(known, default=0)
        name, scale = _UNITS[0]
        for unit, unit_scale in _UNITS:
            if largest >= unit_scale:
                name, scale = unit, unit_scale
        if scale == 1:
            return cls(name, scale, 0)
        smallest = min((s for s in known if s > 0), default=scale) / scale
        decimals = 1 if smallest >= 10 else 2 if smallest >= 1 else 3
        return cls(name, scale, decimals)

    def value(self, n: float) -> float:
        """``n`` bytes in this unit."""
        return n / self.scale

    def number(self, n: float | None) -> str:
        """``n`` bytes as a number in this unit, no unit name (``"n/a"`` when not measured)."""
        return "n/a" if n is None else f"{n / self.scale:,.{self.decimals}f}"

    def text(self, n: float | None) -> str:
        """``n`` bytes with the unit name: ``"59.1 KiB"``."""
        return "n/a" if n is None else f"{self.number(n)} {self.name}"
