"""Statistics of the tensors at one point of a model (a layer's input or output), accumulated
over calibration batches and filled by `slimkit.core.calibration.calibrate` in one pass.

`Statistic.observe(x)` checks ``x`` (finite; empty and integer tensors such as token ids are
not observed), counts it and folds it in with the subclass's ``_observe``. Techniques declare
which statistics they need: quantization's activation observers
(`slimkit.quantization.observers`), SmoothQuant's per-channel ``max |x|`` (`ChannelAbsMax`),
bias correction's mean input (`ChannelMean`), GPTQ's Hessian (`InputHessian`), QAT's initial
range (`AbsMaxSign`), and pruning's per-channel mean square (`ChannelMean` with ``power=2``,
the ``activation`` importance).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from slimkit.core.errors import DataError


class Statistic(ABC):
    """Accumulates the float tensors observed at one point of a model."""

    def __init__(self) -> None:
        self.count = 0

    @property
    def label(self) -> str:
        """How errors name this statistic."""
        return type(self).__name__

    def observe(self, x: Tensor) -> None:
        """Accumulate ``x`` (never modified).

        Raises:
            DataError: ``x`` holds NaN or Inf.
        """
        x = x.detach()
        if x.numel() == 0 or not x.is_floating_point():
            return
        if not torch.isfinite(x).all():
            raise DataError(f"{self.label} saw NaN or Inf values: clean the calibration data")
        self._observe(x.float())
        self.count += 1

    @abstractmethod
    def _observe(self, x: Tensor) -> None:
        """Fold in a finite, non-empty float32 tensor."""


class ChannelStatistic(Statistic):
    """A statistic per channel; channels on dimension ``dim`` (-1: features, 1: conv channels)."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def rows(self, x: Tensor) -> Tensor:
        """``x`` as a ``(rows, channels)`` matrix."""
        x = x.movedim(self.dim, -1)
        return x.reshape(-1, x.shape[-1])


class ChannelAbsMax(ChannelStatistic):
    """Per-channel ``max |x|`` over every row seen."""

    value: Tensor | None = None

    def _observe(self, x: Tensor) -> None:
        peak = self.rows(x).abs().amax(0)
        self.value = peak if self.value is None else torch.maximum(self.value, peak)


class ChannelMean(ChannelStatistic):
    """Per-channel mean of ``x`` (``power=1``) or of ``x²`` (``power=2``) over every row seen,
    from float64 sums."""

    def __init__(self, dim: int = -1, power: int = 1) -> None:
        super().__init__(dim)
        self.power = power
        self.sums: Tensor | None = None
        self.n = 0

    def _observe(self, x: Tensor) -> None:
        rows = self.rows(x).double().pow(self.power)
        self.sums = rows.sum(0) if self.sums is None else self.sums + rows.sum(0)
        self.n += rows.shape[0]

    @property
    def value(self) -> Tensor:
        """The mean (float32)."""
        return (self.sums / max(self.n, 1)).float()


class InputHessian(Statistic):
    """GPTQ's running ``H = 2/N Σ xᵀx`` over the rows of a layer's inputs (float32).

    Args:
        features: the layer's input features.
        device: where ``H`` lives.
    """

    def __init__(self, features: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.hessian = torch.zeros(features, features, device=device)
        self.rows = 0

    def _observe(self, x: Tensor) -> None:
        self.add(x.reshape(-1, x.shape[-1]))

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


class AbsMaxSign(Statistic):
    """The tensor-wide ``max |x|`` and whether any value was negative (QAT's initial step)."""

    peak = 0.0
    negative = False

    def _observe(self, x: Tensor) -> None:
        self.peak = max(self.peak, float(x.abs().max()))
        self.negative = self.negative or bool((x < 0).any())
