"""Rank specifications and rank selection.

A rank is given as one value, validated by `parse_rank`:

- ``int`` (e.g. ``16``): that rank, for every mode the method factorizes.
- ``float`` in (0, 1] (e.g. ``0.25``): that fraction of each mode's full rank (rounded up).
- ``"energy:0.9"``: the smallest rank keeping that fraction of the spectrum's energy Σσ².
- ``"vbmf"``: the rank estimated by analytic EVBMF (see `slimkit.decomposition.vbmf`).
- ``"params:0.5"`` / ``"macs:0.5"``: the largest rank whose layer keeps at most that
  fraction of the dense layer's parameters / MACs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import BeforeValidator

from slimkit.decomposition.base import singular_values
from slimkit.decomposition.vbmf import vbmf_rank

RankKind = Literal["fixed", "ratio", "energy", "vbmf", "params", "macs"]
_PREFIXED = ("energy", "params", "macs", "ratio")
_FORMS = "an int >= 1, a float in (0, 1], 'vbmf', or 'energy:X' / 'params:X' / 'macs:X' / 'ratio:X' with X in (0, 1]"


@dataclass(frozen=True)
class RankSpec:
    """A parsed rank: its kind and value (the rank for ``fixed``, a fraction otherwise)."""

    kind: RankKind
    value: float

    @property
    def is_budget(self) -> bool:
        """True for ``params``/``macs`` budgets."""
        return self.kind in ("params", "macs")


def _fraction(value: float, text: Any) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"rank {text!r}: the fraction must be in (0, 1]; a rank must be {_FORMS}")
    return value


def parse_rank(value: Any) -> RankSpec:
    """Parse a rank value (see the module docstring); raises ``ValueError`` naming the valid forms."""
    if isinstance(value, RankSpec):
        return value
    if isinstance(value, bool):
        raise ValueError(f"rank must be {_FORMS}, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"rank must be >= 1, got {value}")
        return RankSpec("fixed", float(value))
    if isinstance(value, float):
        return RankSpec("ratio", _fraction(value, value))
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "vbmf":
            return RankSpec("vbmf", 0.0)
        if text.isdigit():
            return parse_rank(int(text))
        kind, sep, number = text.partition(":")
        if sep and kind in _PREFIXED:
            try:
                fraction = float(number)
            except ValueError:
                raise ValueError(f"rank {value!r}: {number!r} is not a number; a rank must be {_FORMS}") from None
            return RankSpec(kind, _fraction(fraction, value))  # type: ignore[arg-type]
        try:
            return RankSpec("ratio", _fraction(float(text), value))
        except ValueError:
            pass
    raise ValueError(f"rank must be {_FORMS}, got {value!r}")


def _check_rank(value: Any) -> Any:
    parse_rank(value)
    return value


RankValue = Annotated[int | float | str, BeforeValidator(_check_rank)]
"""Config field type for a rank: validated by `parse_rank`, stored as given (JSON-friendly)."""


def energy_rank(singular_values: torch.Tensor, fraction: float) -> int:
    """Smallest rank whose leading singular values keep ``fraction`` of Σσ²."""
    energy = singular_values.to(torch.float64) ** 2
    kept = torch.cumsum(energy, 0) / energy.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return min(int((kept < fraction - 1e-12).sum()) + 1, len(singular_values))


def spectrum_rank(spec: RankSpec, matrix: torch.Tensor, floor_energy: float = 0.0) -> int:
    """Rank of one unfolding ``matrix`` for an ``energy`` or ``vbmf`` spec; a ``vbmf`` rank is
    raised to keep at least ``floor_energy`` of the energy Σσ².

    On small trained layers EVBMF often reads most of the spectrum as noise and answers
    rank 1, which destroys the model (a digits CNN fell from 0.999 to 0.101 accuracy).
    """
    if spec.kind == "vbmf":
        floor = energy_rank(singular_values(matrix), floor_energy) if floor_energy > 0 else 1
        return max(vbmf_rank(matrix), floor)
    return energy_rank(singular_values(matrix), spec.value)


def ranks_at(fraction: float, full: Sequence[int]) -> tuple[int, ...]:
    """Each mode's rank at ``fraction`` of its full rank (rounded up, at least 1)."""
    return tuple(max(1, min(f, math.ceil(fraction * f - 1e-9))) for f in full)


def budget_ranks(
    spec: RankSpec, full: Sequence[int], cost: Callable[[tuple[int, ...]], tuple[int, int]], dense: tuple[int, int]
) -> tuple[int, ...] | None:
    """The largest per-mode ranks (a common fraction of each full rank) within a budget.

    Args:
        spec: a ``params`` or ``macs`` spec.
        full: full rank of each mode.
        cost: ranks -> (params, MACs per output position) of the factorized layer.
        dense: (params, MACs per output position) of the dense layer.

    Returns:
        The ranks, or ``None`` when even rank 1 exceeds the budget.
    """
    index = 0 if spec.kind == "params" else 1
    limit = spec.value * dense[index]
    steps = max(full)
    candidates = sorted({ranks_at(k / steps, full) for k in range(1, steps + 1)})
    fitting = [r for r in candidates if cost(r)[index] <= limit]
    return max(fitting, key=lambda r: cost(r)[index]) if fitting else None
