"""`LowBitLayer`: the deployable form of a QAT-trained Linear/Conv (packed weights, static
activation quantization with the learned step).

The weight is stored as packed unsigned codes with per-channel (or per-group) scales in the
``weight-only`` layout (`PackedWeight`); the input is quantized to ``act_bits`` with a fixed
per-tensor step before the layer runs, exactly as during QAT, so the converted model gives
the trained model's outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimkit.quantization.algorithms.lsq import QATWrapper
from slimkit.quantization.modules import PackedWeight
from slimkit.quantization.primitives import qrange


class LowBitLayer(nn.Module):
    """A Linear/Conv with packed low-bit weights and static low-bit input activations.

    Args:
        shell: the float layer without its weight (holds bias, stride, padding, ...).
        weight_shape: the logical weight shape.
        bits: weight bits.
        group_size: input columns per scale (Linear), ``None``: per output channel.
        act_bits: input activation bits (``None``: float input).
        act_signed: signed or unsigned activation codes.
    """

    def __init__(
        self,
        shell: nn.Module,
        weight_shape: tuple[int, ...],
        bits: int,
        group_size: int | None,
        act_bits: int | None,
        act_signed: bool,
    ):
        super().__init__()
        if "weight" in shell._parameters:
            del shell._parameters["weight"]
        self.shell, self.weight_shape = shell, tuple(weight_shape)
        rows, cols = weight_shape[0], int(torch.tensor(weight_shape[1:]).prod())
        self.packed = PackedWeight(rows, cols, bits, group_size)
        self.act_bits, self.act_signed = act_bits, act_signed
        self.register_buffer("act_scale", torch.ones(()))

    @classmethod
    def from_qat(cls, wrapper: QATWrapper) -> LowBitLayer:
        """Freeze a trained `QATWrapper` into packed codes with its learned steps."""
        layer, wq = wrapper.layer, wrapper.weight_quant
        weight = layer.weight.detach()
        act = wrapper.act_quant
        new = cls(
            layer, tuple(weight.shape), wq.bits, wq.group_size, act.bits if act else None, bool(act and act.signed)
        )
        step = wq.scale.detach().abs().clamp_min(1e-8)
        grouped = wq._grouped(weight)
        offset = 1 << (wq.bits - 1)  # signed symmetric codes stored unsigned with zero point 2^(b-1)
        codes = (torch.clamp(torch.round(grouped / step), wq.qmin, wq.qmax) + offset).reshape(weight.shape[0], -1)
        scales = step.reshape(weight.shape[0], -1).expand(-1, new.packed.n_groups)
        new.packed.to(weight.device).set_codes(codes, scales, torch.full_like(scales, offset))
        if act is not None:
            new.act_scale.copy_(act.scale.detach().abs().clamp_min(1e-8))
        return new

    def forward(self, x: Tensor) -> Tensor:
        if self.act_bits is not None:
            qmin, qmax = qrange(self.act_bits, self.act_signed)
            x = torch.clamp(torch.round(x / self.act_scale), qmin, qmax) * self.act_scale
        w = self.packed.dequantize(dtype=x.dtype).reshape(self.weight_shape)
        if isinstance(self.shell, nn.Linear):
            return nn.functional.linear(x, w, self.shell.bias)
        return self.shell._conv_forward(x, w, self.shell.bias)  # type: ignore[operator]

    def logical_weights(self) -> list[Tensor]:
        """The dequantized weight, so `count_params` counts this layer."""
        return [self.packed.dequantize().reshape(self.weight_shape)]
