"""Learned Step Size Quantization (LSQ, Esser et al., 2020) fake-quant modules for QAT.

``x̂ = round(clamp(x / s, qmin, qmax)) · s`` where the rounding passes gradients straight
through and the step ``s`` is a parameter whose gradient is scaled by
``g = 1 / sqrt(N · qmax)`` (``N`` elements per step), as the paper prescribes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from slimkit.quantization.primitives import qrange


def grad_scale(x: Tensor, g: float) -> Tensor:
    """``x`` (exactly) in the forward pass; gradient multiplied by ``g`` in the backward pass."""
    y = x * g
    return x.detach() + (y - y.detach())


def round_ste(x: Tensor) -> Tensor:
    """Round to nearest with a straight-through (identity) gradient."""
    return x.round().detach() + (x - x.detach())


class LSQQuantizer(nn.Module):
    """Fake-quantizer with a learnable step per tensor, per output channel or per group.

    Args:
        bits: 2..8.
        signed: codes ``[-2^(b-1), 2^(b-1)-1]`` (weights) or ``[0, 2^b-1]`` (non-negative
            activations).
        shape: shape of the step tensor, broadcastable against the (grouped) input:
            ``()`` per tensor, ``(out, 1, ...)`` per channel, ``(out, groups, 1)`` per group.
        group_size: quantize the last dim in groups of this size (input must divide).
    """

    def __init__(self, bits: int, signed: bool, shape: tuple[int, ...] = (), group_size: int | None = None):
        super().__init__()
        self.bits, self.signed, self.group_size = bits, signed, group_size
        self.qmin, self.qmax = qrange(bits, signed)
        self.scale = nn.Parameter(torch.ones(shape))

    def _grouped(self, x: Tensor) -> Tensor:
        return x if self.group_size is None else x.reshape(*x.shape[:-1], -1, self.group_size)

    @torch.no_grad()
    def init_from(self, x: Tensor) -> None:
        """Set the step from data: the range-based (min-max) step of each slice."""
        g = self._grouped(x.detach().float())
        if self.scale.dim() == 0:
            amax = g.abs().max() if self.signed else g.clamp_min(0).max()
        else:
            dims = [d for d in range(g.dim()) if self.scale.shape[d] == 1]
            amax = g.abs().amax(dim=dims, keepdim=True)
        self.scale.copy_((amax / self.qmax).clamp_min(1e-8).reshape(self.scale.shape))

    def forward(self, x: Tensor) -> Tensor:
        g = self._grouped(x)
        per_step = g.numel() // max(1, self.scale.numel())
        step = grad_scale(self.scale, 1.0 / math.sqrt(per_step * self.qmax)).abs().clamp_min(1e-8)
        q = round_ste(torch.clamp(g / step, self.qmin, self.qmax)) * step
        return q.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, steps={tuple(self.scale.shape)}"


class QATWrapper(nn.Module):
    """A Linear/Conv with LSQ fake-quant on its weight and (optionally) its input.

    Args:
        layer: the float layer (kept; its weight is trained).
        weight_bits: bits of the weight codes (signed, symmetric).
        act_bits: bits of the input activations, or ``None`` to leave them float.
        act_signed: whether input activations can be negative.
        group_size: per-group weight steps along the input dim (Linear only); per output
            channel when ``None``.
    """

    def __init__(
        self,
        layer: nn.Module,
        weight_bits: int,
        act_bits: int | None,
        act_signed: bool = True,
        group_size: int | None = None,
    ):
        super().__init__()
        self.layer = layer
        w = layer.weight
        if group_size is not None:
            shape = (w.shape[0], w.shape[1] // group_size, 1)
        else:
            shape = (w.shape[0],) + (1,) * (w.dim() - 1)
        self.weight_quant = LSQQuantizer(weight_bits, True, shape, group_size)
        self.weight_quant.init_from(w)
        self.act_quant = LSQQuantizer(act_bits, act_signed) if act_bits is not None else None

    def forward(self, x: Tensor) -> Tensor:
        if self.act_quant is not None:
            x = self.act_quant(x)
        w = self.weight_quant(self.layer.weight)
        if isinstance(self.layer, nn.Linear):
            return nn.functional.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)  # type: ignore[operator]
