"""Statistics a data-driven method declares for a layer, filled by one calibration pass.

A statistic accumulates the tensors seen at one point of the model (a layer's input or
output) over the calibration batches: ``observe(x)`` any number of times, ``count`` the calls
so far. The activation observers of `slimkit.quantization.observers` are statistics too; the
ones here serve the weight-side algorithms: SmoothQuant's per-channel ``max |x|``, bias
correction's mean input, GPTQ's Hessian ``2/N Σ xᵀx``, QAT's initial activation range.
`slimkit.quantization.calibration.calibrate` feeds any mix of them in one pass.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Statistic(Protocol):
    """Accumulates the tensors observed at one point of the model."""

    count: int

    def observe(self, x: Tensor) -> None:
        """Accumulate ``x`` (never modified)."""


def _rows(x: Tensor) -> Tensor:
    """``x`` as a float32 ``(rows, channels)`` matrix, channels last."""
    return x.detach().reshape(-1, x.shape[-1]).float()


class ChannelAbsMax:
    """Per-channel ``max |x|`` over every row seen (channels on the last dimension)."""

    def __init__(self) -> None:
        self.value: Tensor | None = None
        self.count = 0

    def observe(self, x: Tensor) -> None:
        """Fold ``x``'s per-channel maximum in."""
        peak = _rows(x).abs().amax(0)
        self.value = peak if self.value is None else torch.maximum(self.value, peak)
        self.count += 1


class ChannelMean:
    """Per-channel mean over every row seen (float64 sums)."""

    def __init__(self) -> None:
        self.sums: Tensor | None = None
        self.rows = 0
        self.count = 0

    def observe(self, x: Tensor) -> None:
        """Add ``x``'s rows."""
        rows = _rows(x).double()
        self.sums = rows.sum(0) if self.sums is None else self.sums + rows.sum(0)
        self.rows += rows.shape[0]
        self.count += 1

    @property
    def value(self) -> Tensor:
        """The mean (float32)."""
        return (self.sums / max(self.rows, 1)).float()


class InputHessian:
    """GPTQ's running ``H = 2/N Σ xᵀx`` over the rows of a layer's inputs (float32).

    Args:
        features: the layer's input features.
        device: where ``H`` lives.
    """

    def __init__(self, features: int, device: torch.device | str = "cpu") -> None:
        self.hessian = torch.zeros(features, features, device=device)
        self.rows = 0
        self.count = 0

    def observe(self, x: Tensor) -> None:
        """Accumulate the rows of ``x``."""
        self.add(_rows(x))
        self.count += 1

    def add(self, x: Tensor) -> None:
        """Accumulate a ``(rows, features)`` matrix of inputs."""
        x = x.to(self.hessian.device, torch.float32)
        n = x.shape[0]
        if n == 0:
            return
        total = self.rows + n
        self.hessian.mul_(self.rows / total)
        self.hessian.addmm_(x.t(), x, alpha=2.0 / total)
        self.rows = total


class AbsMaxSign:
    """The tensor-wide ``max |x|`` and whether any value was negative (QAT's initial step)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self.negative = False
        self.count = 0

    def observe(self, x: Tensor) -> None:
        """Fold ``x`` in."""
        x = x.detach()
        self.peak = max(self.peak, float(x.abs().max()))
        self.negative = self.negative or bool((x < 0).any())
        self.count += 1
