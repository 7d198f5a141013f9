"""Observers: accumulate statistics of a tensor over calibration batches, then choose qparams.

One interface: ``observe(x)`` accumulates (any number of calls), ``clip_range()`` returns the
chosen ``(lo, hi)``, ``qparams()`` returns ``(scale, zero_point)`` for the observer's `QuantSpec`.
Observers never change the tensors they see.

- ``minmax``: running min/max (per tensor, or per channel / group from the spec).
- ``moving-average``: exponential moving average of each batch's min/max.
- ``percentile``: clip at the ``percentile``-th percentile of all values seen (histogram).
- ``mse``: the clip range minimizing the expected quantization MSE over a grid of clip ratios.
- ``entropy``: TensorRT-style KL-divergence calibration on the ``|x|`` histogram.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from torch import Tensor

from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.core.statistics import Statistic
from slimkit.core.tables import Table
from slimkit.quantization.primitives import QuantSpec

ACTIVATION_SPEC = QuantSpec(bits=8, symmetric=False, signed=False)
"""Per-tensor unsigned asymmetric 8-bit: the default for activations."""


class Observer(Statistic):
    """Base observer: a `Statistic` (``observe(x)`` checks and counts, subclasses implement
    ``_observe``) that also chooses a range, `clip_range`.

    Args:
        spec: how the observed tensor will be quantized (bits, symmetry, granularity).
    """

    name = ""

    def __init__(self, spec: QuantSpec = ACTIVATION_SPEC) -> None:
        super().__init__()
        self.spec = spec

    @property
    def label(self) -> str:
        """How errors name this observer."""
        return f"the {self.name} observer"

    @abstractmethod
    def clip_range(self) -> tuple[Tensor, Tensor]:
        """The ``(lo, hi)`` range to quantize over."""

    def qparams(self) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` for the chosen range."""
        if self.count == 0:
            raise DataError(f"the {self.name} observer saw no data: the layer never ran during calibration")
        return self.spec.qparams(*self.clip_range())


class MinMaxObserver(Observer):
    """Running min and max (at the spec's granularity)."""

    name = "minmax"

    def __init__(self, spec: QuantSpec = ACTIVATION_SPEC) -> None:
        super().__init__(spec)
        self.lo: Tensor | None = None
        self.hi: Tensor | None = None

    def _observe(self, x: Tensor) -> None:
        lo, hi = self.spec.minmax(x)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def clip_range(self) -> tuple[Tensor, Tensor]:
        return self.lo, self.hi


class MovingAverageObserver(MinMaxObserver):
    """Exponential moving average of per-batch min/max: ``r = (1 - momentum) r + momentum r_batch``.

    Args:
        spec: quantization spec.
        momentum: weight of the newest batch (the first batch initializes the average).
    """

    name = "moving-average"

    def __init__(self, spec: QuantSpec = ACTIVATION_SPEC, momentum: float = 0.01) -> None:
        super().__init__(spec)
        if not 0 < momentum <= 1:
            raise InvalidConfigError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum

    def _observe(self, x: Tensor) -> None:
        lo, hi = self.spec.minmax(x)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo = self.lo + self.momentum * (lo - self.lo)
            self.hi = self.hi + self.momentum * (hi - self.hi)


class HistogramObserver(Observer):
    """Per-tensor histogram of all values seen, over a range that grows as needed (old counts
    are re-binned into the wider range by their bin centres).

    Args:
        spec: quantization spec (per tensor).
        bins: histogram bins.
    """

    def __init__(self, spec: QuantSpec = ACTIVATION_SPEC, bins: int = 2048) -> None:
        super().__init__(spec)
        self.bins = bins
        self.hist: Tensor | None = None
        self.lo = self.hi = 0.0

    def _observe(self, x: Tensor) -> None:
        lo, hi = float(x.min()), float(x.max())
        if self.hist is None:
            self.lo, self.hi = lo, hi if hi > lo else lo + 1e-8
            self.hist = torch.zeros(self.bins, dtype=torch.float64, device=x.device)
        elif lo < self.lo or hi > self.hi:
            self._widen(min(lo, self.lo), max(hi, self.hi))
        self.hist += torch.histc(x, self.bins, self.lo, self.hi).double()

    def _widen(self, lo: float, hi: float) -> None:
        centres = self.lo + (torch.arange(self.bins, device=self.hist.device) + 0.5) * self.width
        self.lo, self.hi = lo, hi
        index = ((centres - lo) / self.width).long().clamp(0, self.bins - 1)
        self.hist = torch.zeros_like(self.hist).index_add_(0, index, self.hist)

    @property
    def width(self) -> float:
        """Bin width."""
        return (self.hi - self.lo) / self.bins

    def edges(self) -> Tensor:
        """The ``bins + 1`` bin edges."""
        return torch.linspace(self.lo, self.hi, self.bins + 1, dtype=torch.float64, device=self.hist.device)


class PercentileObserver(HistogramObserver):
    """Clip at the ``percentile``-th percentile above and ``100 - percentile`` below (linear
    interpolation inside the histogram bin; accurate to one bin width).

    Args:
        spec: quantization spec (per tensor).
        percentile: e.g. 99.99.
        bins: histogram bins.
    """

    name = "percentile"

    def __init__(self, spec: QuantSpec = ACTIVATION_SPEC, percentile: float = 99.99, bins: int = 2048) -> None:
        super().__init__(spec, bins)
        if not 50 < percentile <= 100:
            raise InvalidConfigError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def _quantile(self, q: float) -> float:
        cdf = torch.cat([self.hist.new_zeros(1), self.hist.cumsum(0)]) / self.hist.sum()
        i = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype, device=cdf.device)).clamp(1, self.bins))
        lo_c, hi_c = float(cdf[i - 1]), float(cdf[i])
        frac = 0.0 if hi_c <= lo_c else (q - lo_c) / (hi_c - lo_c)
        return self.lo + (i - 1 + frac) * self.width

    def clip_range(self) -> tuple[Tensor, Tensor]:
        hi = self._quantile(self.percentile / 100)
        lo = self._quantile(1 - self.percentile / 100)
        return torch.tensor(lo), torch.tensor(hi)


class MSEObserver(HistogramObserver):
    """Search clip ratios ``r`` (range ``[r * lo, r * hi]``) for the least expected squared
    quantization error over the histogram (bin centres weighted by counts), all candidates at once.

    Args:
        spec: quantization spec (per tensor).
        steps: number of clip ratios between ``min_ratio`` and 1.
        min_ratio: smallest ratio tried.
        bins: histogram bins.
    """

    name = "mse"

    def __init__(
        self, spec: QuantSpec = ACTIVATION_SPEC, steps: int = 100, min_ratio: float = 0.2, bins: int = 2048
    ) -> None:
        super().__init__(spec, bins)
        self.ratios = torch.linspace(min_ratio, 1.0, steps, dtype=torch.float64)

    def clip_range(self) -> tuple[Tensor, Tensor]:
        centres = (self.edges()[:-1] + self.edges()[1:]) / 2
        ratios = self.ratios.to(centres.device)
        lo, hi = ratios * min(self.lo, 0.0), ratios * max(self.hi, 0.0)
        scale, zero_point = self.spec.qparams(lo, hi)
        qmin, qmax = self.spec.range
        s, z = scale.double()[:, None], zero_point.double()[:, None]
        q = torch.clamp(torch.round(centres[None] / s) + z, qmin, qmax)
        error = (((q - z) * s - centres[None]) ** 2 * self.hist[None]).sum(-1)
        best = int(torch.argmin(error))
        return lo[best].float(), hi[best].float()


class EntropyObserver(HistogramObserver):
    """TensorRT's entropy calibration: the ``|x|`` threshold whose ``2**(bits-1)``-level
    quantized histogram has the least KL divergence from the clipped reference histogram.

    The range is symmetric ``[-t, t]`` (or ``[0, t]`` for non-negative data).

    Args:
        spec: quantization spec (per tensor).
        bins: histogram bins of ``|x|``.
        stride: test every ``stride``-th threshold bin.
    """

    name = "entropy"

    def __init__(self, spec: QuantSpec = ACTIVATION_SPEC, bins: int = 2048, stride: int = 8) -> None:
        super().__init__(spec, bins)
        self.stride = stride
        self.negative = False

    def _observe(self, x: Tensor) -> None:
        self.negative = self.negative or bool((x < 0).any())
        super()._observe(x.abs())

    def clip_range(self) -> tuple[Tensor, Tensor]:
        hist = self.hist.double().cpu()
        levels = 1 << (self.spec.bits - 1) if self.negative else 1 << self.spec.bits
        levels = min(levels, self.bins)
        best, best_kl = self.bins, math.inf
        for i in range(levels, self.bins + 1, self.stride):
            kl = _kl_for_threshold(hist, i, levels)
            if kl < best_kl:
                best, best_kl = i, kl
        t = self.lo + best * self.width
        return torch.tensor(-t if self.negative else 0.0), torch.tensor(t)


_SMOOTH = 1e-4


def _kl_for_threshold(hist: Tensor, i: int, levels: int) -> float:
    """KL(P || Q): P = first ``i`` bins with the tail folded into bin ``i-1``; Q = P merged
    into ``levels`` chunks and spread back uniformly over each chunk's nonzero bins; empty bins
    of Q where P has mass get a small probability (so sparse tails do not make every KL infinite)."""
    p = hist[:i].clone()
    p[-1] += hist[i:].sum()
    nonzero = (hist[:i] > 0).double()
    chunk = torch.div(torch.arange(i) * levels, i, rounding_mode="floor")
    sums = torch.zeros(levels, dtype=torch.float64).index_add_(0, chunk, hist[:i])
    counts = torch.zeros(levels, dtype=torch.float64).index_add_(0, chunk, nonzero)
    q = torch.where(nonzero > 0, sums[chunk] / counts[chunk].clamp_min(1), torch.zeros_like(p))
    if float(q.sum()) == 0:
        return math.inf
    p, q = p / p.sum(), q / q.sum()
    q = torch.where((q == 0) & (p > 0), torch.full_like(q, _SMOOTH), q)  # smoothing, as onnxruntime does
    q = q / q.sum()
    mask = p > 0
    return float((p[mask] * torch.log(p[mask] / q[mask])).sum())


OBSERVERS: Table[type[Observer]] = Table(
    "observer",
    (
        (cls.name, cls)
        for cls in (MinMaxObserver, MovingAverageObserver, PercentileObserver, MSEObserver, EntropyObserver)
    ),
    hint="slimkit.quantization.register_observer adds one",
)


def register_observer(cls: type[Observer]) -> type[Observer]:
    """Register an `Observer` subclass under its ``name`` (usable as a decorator), so
    ``observer=NAME`` picks it in configs, recipes and ``--observer``.

    Raises:
        InvalidConfigError: when ``cls`` is not an `Observer` subclass with a ``name``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Observer) and cls.name):
        raise InvalidConfigError(f"register_observer needs an Observer subclass with a name, got {cls!r}")
    return OBSERVERS.register(cls.name, cls)


def check_observer(name: str) -> str:
    """``name`` if an observer is registered under it.

    Raises:
        ValueError: naming the registered observers (pydantic reports it as a field error).
    """
    return OBSERVERS.check(name)


def make_observer(name: str, spec: QuantSpec = ACTIVATION_SPEC) -> Observer:
    """A fresh observer by registered name (see `OBSERVERS`)."""
    return OBSERVERS.lookup(name)(spec)
