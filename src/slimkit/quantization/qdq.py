"""`QDQLayer`: a statically quantized conv/linear written as quantize-dequantize ops.

The forward runs ``quantized_decomposed`` ops, the reference semantics of int8 inference::

    x̂ = DQ(Q(x; s_in, z_in))                         # uint8 per-tensor activation
    Ŵ = DQ(W_int8; s_w[c], 0)                        # int8 per-channel, narrow range [-127, 127]
    b̂ = DQ(b_int32; s_in * s_w[c], 0)                # int32 bias, like ONNX QLinearConv
    y = relu?(conv_or_linear(x̂, Ŵ, b̂));  ŷ = DQ(Q(y; s_out, z_out))   # when output is quantized

so ``torch.onnx.export(..., dynamo=True)`` emits a QDQ graph (QuantizeLinear /
DequantizeLinear around Conv/Gemm) that onnxruntime fuses into QLinearConv / QLinearMatMul.
In PyTorch this is a float simulation of the int8 arithmetic (it is not faster than fp32).
State: ``weight_int8``, ``weight_scale``, ``bias_int32``, ``input_scale``, ``input_zero_point``,
``output_scale``, ``output_zero_point`` (plain tensors). The activation qparams are mirrored as
Python numbers (refreshed on load) so an exported graph holds them as constants; call
`QDQLayer._refresh` after editing those buffers in place.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.quantization.primitives import QuantSpec

WEIGHT_SPEC = QuantSpec(bits=8, symmetric=True, signed=True, narrow_range=True, axis=0)
WEIGHT_SPEC_7BIT = QuantSpec(bits=7, symmetric=True, signed=True, narrow_range=True, axis=0)
"""Codes in [-63, 63]: a uint8 x int8 pair sum cannot saturate 16-bit adds (x86 without VNNI)."""
_QD = torch.ops.quantized_decomposed
_I32 = (-(2**31), 2**31 - 1)

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _qdq(x: Tensor, qp: tuple[float, int]) -> Tensor:
    if not torch.compiler.is_compiling():  # eager: one fused kernel, same arithmetic (x * (1/scale))
        return torch.fake_quantize_per_tensor_affine(x, qp[0], qp[1], 0, 255)
    q = _QD.quantize_per_tensor(x, qp[0], qp[1], 0, 255, torch.uint8)
    return _QD.dequantize_per_tensor(q, qp[0], qp[1], 0, 255, torch.uint8)


class QDQLayer(nn.Module):
    """Static int8 conv (1d/2d) or linear with optional fused ReLU and output quantization.

    Args:
        float_layer: the (BN-folded) float layer giving shapes and hyperparameters.
        relu: apply ReLU before output quantization (a following ReLU fused in).
        quantize_output: quantize the output too (lets runtimes keep int8 between layers).
    """

    def __init__(self, float_layer: nn.Module, relu: bool = False, quantize_output: bool = True) -> None:
        super().__init__()
        weight = float_layer.weight
        out_channels = weight.shape[0]
        self.kind = "linear" if isinstance(float_layer, nn.Linear) else f"conv{weight.dim() - 2}d"
        self.conv_args: dict[str, Any] = {}
        if self.kind != "linear":
            self.conv_args = {k: getattr(float_layer, k) for k in ("stride", "padding", "dilation", "groups")}
        self.relu, self.quantize_output = relu, quantize_output
        self.register_buffer("weight_int8", torch.zeros(weight.shape, dtype=torch.int8, device=weight.device))
        self.register_buffer("weight_scale", torch.ones(out_channels, device=weight.device))
        self.register_buffer("bias_int32", torch.zeros(out_channels, dtype=torch.int32, device=weight.device))
        for name in ("input", "output"):
            self.register_buffer(f"{name}_scale", torch.ones((), device=weight.device))
            self.register_buffer(f"{name}_zero_point", torch.zeros((), dtype=torch.int64, device=weight.device))
        self._refresh()

    def _refresh(self) -> None:
        """Python copies of the activation qparams: export keeps them as graph constants."""
        self._input_qp = (float(self.input_scale), int(self.input_zero_point))
        self._output_qp = (float(self.output_scale), int(self.output_zero_point))

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh()

    @classmethod
    def from_float(
        cls,
        float_layer: nn.Module,
        input_qparams: tuple[Tensor, Tensor],
        output_qparams: tuple[Tensor, Tensor] | None,
        relu: bool = False,
        reduce_range: bool = False,
    ) -> QDQLayer:
        """Quantize ``float_layer`` given calibrated activation ``(scale, zero_point)`` pairs;
        ``reduce_range`` stores 7-bit weight codes (still int8 tensors)."""
        new = cls(float_layer, relu, output_qparams is not None)
        spec = WEIGHT_SPEC_7BIT if reduce_range else WEIGHT_SPEC
        codes, scale, _ = spec.quantize_tensor(float_layer.weight.detach())
        new.weight_int8.copy_(codes)
        new.weight_scale.copy_(scale)
        new.input_scale.copy_(input_qparams[0])
        new.input_zero_point.copy_(input_qparams[1])
        if output_qparams is not None:
            new.output_scale.copy_(output_qparams[0])
            new.output_zero_point.copy_(output_qparams[1])
        if float_layer.bias is not None:
            bias_scale = new.input_scale.double() * new.weight_scale.double()
            new.bias_int32.copy_(torch.round(float_layer.bias.detach().double() / bias_scale).clamp(*_I32))
        new._refresh()
        return new

    @property
    def weight(self) -> Tensor:
        """The dequantized float weight (what code reading ``layer.weight`` expects)."""
        zeros = torch.zeros_like(self.weight_scale, dtype=torch.int64)
        return _QD.dequantize_per_channel(self.weight_int8, self.weight_scale, zeros, 0, -127, 127, torch.int8)

    @property
    def bias(self) -> Tensor:
        """The dequantized float bias (zeros when the float layer had none), for code reading ``layer.bias``
        (``nn.TransformerEncoderLayer`` checks its Linears' biases before choosing a path)."""
        zeros = torch.zeros_like(self.weight_scale, dtype=torch.int64)
        bias_scale = self.weight_scale * self._input_qp[0]
        return _QD.dequantize_per_channel(self.bias_int32, bias_scale, zeros, 0, *_I32, torch.int32)

    def forward(self, x: Tensor) -> Tensor:
        x = _qdq(x.float(), self._input_qp)
        bias = self.bias
        if self.kind == "linear":
            y = F.linear(x, self.weight, bias)
        else:
            conv = F.conv1d if self.kind == "conv1d" else F.conv2d
            y = conv(x, self.weight, bias, **self.conv_args)
        if self.relu:
            y = F.relu(y)
        return _qdq(y, self._output_qp) if self.quantize_output else y

    def logical_weights(self) -> list[Tensor]:
        """The dequantized weight, so `count_params` counts this layer."""
        return [self.weight]

    def extra_repr(self) -> str:
        return f"{self.kind}, weight={tuple(self.weight_int8.shape)}, relu={self.relu}, output={self.quantize_output}"
