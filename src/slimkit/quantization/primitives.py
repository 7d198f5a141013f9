"""Affine quantization primitives for 2..8 bits: ranges, qparams, quantize, dequantize.

Conventions (shared by every quantized module, observer and algorithm in slimkit):

- ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` and ``x̂ = (q - zero_point) * scale``;
  rounding is half-to-even (like ``torch.quantize_per_tensor`` and ONNX ``QuantizeLinear``).
- Granularity is given by the shape of ``scale``/``zero_point`` plus two keywords:

  * per-tensor: 0-dim ``scale``; ``axis=None, group_size=None``.
  * per-channel: 1-dim ``scale`` of length ``x.shape[axis]``; ``axis=k``.
  * per-group: ``scale`` of shape ``[*x.shape[:-1], ceil(x.shape[-1] / group_size)]``; groups
    run along the LAST dimension (the input dim of a Linear weight ``[out, in]``). When the last
    dim is not a multiple of ``group_size`` the last group is shorter (see `pad_to_groups`).

- Signed values are stored as ``int8``, unsigned as ``uint8`` (any bits <= 8); zero points are
  ``int32``. Symmetric signed zero points are 0; symmetric unsigned ones are the mid-code.
- fp16/bf16 is the 16-bit case: `cast16` (no scale, just a dtype).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from slimkit.core.errors import InvalidConfigError

MIN_BITS, MAX_BITS = 2, 8
_EPS = torch.finfo(torch.float32).eps


def check_bits(bits: int) -> int:
    """Return ``bits`` or raise `InvalidConfigError` when outside 2..8."""
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise InvalidConfigError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def qrange(bits: int, signed: bool = True, narrow_range: bool = False) -> tuple[int, int]:
    """The integer code range ``(qmin, qmax)``.

    Args:
        bits: 2..8.
        signed: codes ``[-2^(b-1), 2^(b-1)-1]`` if True, else ``[0, 2^b-1]``.
        narrow_range: drop the lowest code (``[-127, 127]`` for int8), keeping it symmetric.
    """
    check_bits(bits)
    qmin, qmax = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return (qmin + 1 if narrow_range else qmin), qmax


def qparams(
    min_val: Tensor,
    max_val: Tensor,
    bits: int = 8,
    *,
    symmetric: bool = True,
    signed: bool = True,
    narrow_range: bool = False,
) -> tuple[Tensor, Tensor]:
    """Scale and zero point covering ``[min_val, max_val]`` (element-wise, any shape).

    The range is first widened to include 0 so that zero is exactly representable.
    Symmetric: ``scale = max(|min|, |max|) / ((qmax - qmin) / 2)``, zero point 0 (signed) or the
    mid-code (unsigned). Asymmetric: ``scale = (max - min) / (qmax - qmin)`` and
    ``zero_point = qmin - round(min / scale)``.

    Returns:
        ``(scale float32, zero_point int32)`` with the shape of ``min_val``; scales are at least
        float32 eps so constant tensors do not divide by zero.
    """
    qmin, qmax = qrange(bits, signed, narrow_range)
    lo = torch.minimum(min_val.float(), torch.zeros_like(min_val, dtype=torch.float32))
    hi = torch.maximum(max_val.float(), torch.zeros_like(max_val, dtype=torch.float32))
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = (amax / ((qmax - qmin) / 2)).clamp_min(_EPS)
        mid = 0 if signed else (qmin + qmax + 1) // 2
        zero_point = torch.full_like(scale, mid, dtype=torch.int32)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp_min(_EPS)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def _expand(p: Tensor, x: Tensor, axis: int | None, group_size: int | None) -> Tensor:
    """Broadcast a qparam tensor against ``x`` (per-group: against ``x`` seen as groups)."""
    if group_size is not None:
        return p.unsqueeze(-1)
    if axis is None or p.dim() == 0:
        return p
    shape = [1] * x.dim()
    shape[axis] = -1
    return p.reshape(shape)


def pad_to_groups(x: Tensor, group_size: int) -> Tensor:
    """``x`` with its last dim zero-padded to a multiple of ``group_size``."""
    extra = -x.shape[-1] % group_size
    return torch.nn.functional.pad(x, (0, extra)) if extra else x


def _grouped(x: Tensor, group_size: int | None) -> Tensor:
    if group_size is None:
        return x
    padded = pad_to_groups(x, group_size)
    return padded.reshape(*x.shape[:-1], padded.shape[-1] // group_size, group_size)


def _ungrouped(g: Tensor, group_size: int | None, last: int) -> Tensor:
    if group_size is None:
        return g
    return g.reshape(*g.shape[:-2], -1)[..., :last]


def reduce_minmax(x: Tensor, axis: int | None = None, group_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Min and max of ``x`` per tensor (both None), per channel along ``axis``, or per group of
    ``group_size`` along the last dim (padding never widens the range)."""
    x = x.detach().float()
    if group_size is not None:
        g = _grouped(x, group_size)
        n = x.shape[-1]
        if n % group_size:  # padded zeros must not count: fill them with a real group element
            idx = torch.arange(g.shape[-2] * group_size, device=x.device).reshape(g.shape[-2], group_size)
            g = torch.where((idx < n).expand_as(g), g, g[..., :1].expand_as(g))
        return g.amin(-1), g.amax(-1)
    if axis is None:
        return x.min(), x.max()
    dims = [d for d in range(x.dim()) if d != axis % x.dim()]
    return x.amin(dim=dims), x.amax(dim=dims)


def quantize(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    *,
    axis: int | None = None,
    group_size: int | None = None,
) -> Tensor:
    """Integer codes of ``x``: ``int8`` when ``qmin < 0`` else ``uint8``, same shape as ``x``."""
    g = _grouped(x.float(), group_size)
    s = _expand(scale.float(), g, axis, group_size)
    z = _expand(zero_point, g, axis, group_size)
    q = torch.clamp(torch.round(g / s) + z, qmin, qmax)
    return _ungrouped(q, group_size, x.shape[-1]).to(torch.int8 if qmin < 0 else torch.uint8)


def dequantize(
    q: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Real values ``(q - zero_point) * scale`` of integer codes, as ``dtype``."""
    g = _grouped(q.to(torch.int32), group_size)
    s = _expand(scale, g, axis, group_size)
    z = _expand(zero_point, g, axis, group_size)
    x = ((g - z).to(torch.float32) * s.float()).to(dtype)
    return _ungrouped(x, group_size, q.shape[-1])


def fake_quantize(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    *,
    axis: int | None = None,
    group_size: int | None = None,
) -> Tensor:
    """Quantize-dequantize ``x`` in float with a straight-through gradient (identity for ``x``).

    Gradients flow to ``x`` unchanged; ``scale`` is treated as a constant here (LSQ-style
    learnable scales belong to QAT, which builds on `quantize`/`dequantize`).
    """
    where = {"axis": axis, "group_size": group_size}
    codes = quantize(x.detach(), scale.detach(), zero_point.detach(), qmin, qmax, **where)
    dq = dequantize(codes, scale.detach(), zero_point.detach(), dtype=x.dtype, **where)
    return x + (dq - x).detach()


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized: bit width, code range, and granularity.

    Attributes:
        bits: 2..8.
        symmetric: zero point fixed (0 / mid-code) vs fitted to the range.
        signed: int8-style codes vs uint8-style codes.
        narrow_range: drop the lowest signed code (``[-127, 127]``).
        axis: per-channel axis (None: per tensor).
        group_size: per-group along the last dim (takes precedence over ``axis``).
    """

    bits: int = 8
    symmetric: bool = True
    signed: bool = True
    narrow_range: bool = False
    axis: int | None = None
    group_size: int | None = None

    def __post_init__(self) -> None:
        check_bits(self.bits)
        if self.group_size is not None and self.group_size < 1:
            raise InvalidConfigError(f"group_size must be a positive integer, got {self.group_size}")

    @property
    def range(self) -> tuple[int, int]:
        """``(qmin, qmax)``."""
        return qrange(self.bits, self.signed, self.narrow_range)

    @property
    def dtype(self) -> torch.dtype:
        """Storage dtype of the codes."""
        return torch.int8 if self.signed else torch.uint8

    def with_(self, **changes: object) -> QuantSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def minmax(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """`reduce_minmax` at this spec's granularity."""
        return reduce_minmax(x, None if self.group_size else self.axis, self.group_size)

    def qparams(self, min_val: Tensor, max_val: Tensor) -> tuple[Tensor, Tensor]:
        """`qparams` for this spec."""
        return qparams(
            min_val, max_val, self.bits, symmetric=self.symmetric, signed=self.signed, narrow_range=self.narrow_range
        )

    def _where(self) -> dict[str, int | None]:
        return {"axis": None if self.group_size else self.axis, "group_size": self.group_size}

    def quantize(self, x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
        """Codes of ``x`` under given qparams."""
        return quantize(x, scale, zero_point, *self.range, **self._where())

    def dequantize(self, q: Tensor, scale: Tensor, zero_point: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Values of codes ``q``."""
        return dequantize(q, scale, zero_point, dtype=dtype, **self._where())

    def fake_quantize(self, x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
        """Quantize-dequantize with a straight-through gradient."""
        return fake_quantize(x, scale, zero_point, *self.range, **self._where())

    def quantize_tensor(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Round-to-nearest with min-max qparams: ``(codes, scale, zero_point)``."""
        scale, zero_point = self.qparams(*self.minmax(x))
        return self.quantize(x, scale, zero_point), scale, zero_point


def cast16(x: Tensor, dtype: torch.dtype | str = torch.float16) -> Tensor:
    """The 16-bit case: ``x`` cast to ``float16`` or ``bfloat16`` (``"fp16"``/``"bf16"`` accepted)."""
    names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    target = names.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if target not in (torch.float16, torch.bfloat16):
        raise InvalidConfigError(f"16-bit dtype must be fp16 or bf16, got {dtype!r}")
    return x.to(target)
