"""Per-layer mixed precision as one choice of the recipe search.

Before the trials, the model's weight-only sensitivity is estimated once (`sensitivity` with
the Fisher proxy: one gradient pass and a few measured anchors). A trial that picks
``mixed`` then only chooses *how far* to go: a share of the way from every layer at the
widest bit width to every layer at the narrowest, in bytes. The exact knapsack over the
table (`allocate.plan`) puts the least sensitive layers at fewer bits until that size is
reached, and the plan becomes ordinary recipe stages (one ``quantize: weight-only`` per
width, with its layers in ``include``), so `slimkit compress` reproduces a front point.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from slimkit.core.data import DataSplits
from slimkit.search.allocate import plan
from slimkit.search.candidates import plan_stages
from slimkit.search.sensitivity import SensitivityTable, sensitivity

GRANULARITY = "group:128"
"""Weight-only scales of the mixed stages (the ``weight-only`` choice's default)."""


class MixedPrecision:
    """Recipe stages of a mixed-precision plan at a chosen share of the possible saving.

    Args:
        table: weight-only rows of the model (at least two bit widths).
    """

    def __init__(self, table: SensitivityTable):
        self.table = table
        slots = table.slots().values()
        self.widest = sum(min(r.bytes_saved for r in rows) for rows in slots)
        self.narrowest = sum(max(r.bytes_saved for r in rows) for rows in slots)

    @classmethod
    def estimate(
        cls, model: nn.Module, data: DataSplits, bits: tuple[int, ...], example_inputs: Any = None
    ) -> MixedPrecision:
        """Estimate the table on ``data``'s calibration split (Fisher proxy, scored by fidelity to
        the model's outputs: unlike accuracy on a small split it moves with every layer) and plan
        from it."""
        table = sensitivity(
            model, data, ("quantize",), metric="fidelity", bits=bits, granularity=GRANULARITY, estimate="fisher",
            example_inputs=example_inputs,
        )  # fmt: skip
        return cls(table)

    def stages(self, share: float) -> list[dict[str, Any]]:
        """``[{"quantize": {...}}, ...]``: the least predicted drop saving ``widest + share *
        (narrowest - widest)`` bytes (share 0: every layer at the most bits, 1: at the fewest)."""
        saved = self.widest + share * (self.narrowest - self.widest)
        ratio = 1 - saved / self.table.model_bytes
        rows = plan(self.table, max_size_ratio=min(1.0, ratio * (1 + 1e-9)))
        return plan_stages([r.setting for r in rows])
