"""The multiple-choice knapsack behind allocation, solved exactly with `scipy.optimize.milp`.

Each slot (a layer or group) offers options ``(drop, saved)``; a plan takes at most one
option per slot (none: the slot stays as it is, costing and saving nothing). Two budgets:

- ``max_drop``: maximise the bytes saved subject to ``sum(drop) <= max_drop``;
- ``min_saved``: minimise the summed drop subject to ``sum(saved) >= min_saved``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from slimkit.core.errors import InvalidConfigError

Option = tuple[float, float]
"""``(predicted metric drop, bytes saved)`` of one setting."""
TOLERANCE = 1e-9
"""Slack allowed on the budget row, for the solver's floating point."""


def choose(
    slots: Sequence[Sequence[Option]], *, max_drop: float | None = None, min_saved: float | None = None
) -> list[int | None]:
    """Pick at most one option per slot under one budget.

    Args:
        slots: per slot, its options ``(drop, saved)``.
        max_drop: the largest summed drop allowed (maximise the saving).
        min_saved: the least summed saving wanted (minimise the drop).

    Returns:
        Per slot the index of the chosen option, or None where the slot is left unchanged.

    Raises:
        InvalidConfigError: not exactly one budget, a negative ``max_drop``, or a
            ``min_saved`` no plan reaches.
    """
    if (max_drop is None) == (min_saved is None):
        raise InvalidConfigError("give exactly one budget: max_drop or min_saved")
    if max_drop is not None and max_drop < 0:
        raise InvalidConfigError(f"max_drop must be >= 0, got {max_drop}")
    flat = [(i, j, d, s) for i, options in enumerate(slots) for j, (d, s) in enumerate(options)]
    if not flat:
        return [None] * len(slots)
    from scipy.optimize import Bounds, LinearConstraint, milp

    drops = np.array([d for *_, d, _ in flat], dtype=float)
    saved = np.array([s for *_, s in flat], dtype=float)
    one_per_slot = np.zeros((len(slots), len(flat)))
    for k, (i, *_) in enumerate(flat):
        one_per_slot[i, k] = 1.0
    rows = [LinearConstraint(one_per_slot, 0, 1)]
    if max_drop is not None:
        # a tiny drop penalty breaks ties towards the safer plan of equal saving
        scale = max(1.0, float(np.abs(saved).max()))
        objective = -saved / scale + 1e-9 * drops
        rows.append(LinearConstraint(drops[None, :], -np.inf, max_drop + TOLERANCE))
    else:
        # ties towards the safer plan too: of equal drop, the one saving least beyond the target
        objective = drops + 1e-12 * saved / max(1.0, float(np.abs(saved).max()))
        rows.append(LinearConstraint(saved[None, :], min_saved, np.inf))
    # HiGHS stops at a 1e-4 relative gap by default: a byte in 10^4 is a real difference here
    options = {"mip_rel_gap": 0.0}
    result = milp(objective, constraints=rows, integrality=np.ones(len(flat)), bounds=Bounds(0, 1), options=options)
    if result.status != 0 or result.x is None:
        best = sum(max((s for _, s in options), default=0.0) for options in slots)
        raise InvalidConfigError(
            f"no plan saves {min_saved:.0f} bytes: the settings tried save at most {best:.0f}; "
            "allow more aggressive settings or a larger size target"
        )
    chosen: list[int | None] = [None] * len(slots)
    for (i, j, *_), x in zip(flat, result.x, strict=True):
        if x > 0.5:
            chosen[i] = j
    return chosen
