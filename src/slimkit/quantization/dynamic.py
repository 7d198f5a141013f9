"""`Int8DynamicLinear`: int8 per-channel weights, activations quantized on the fly, run on
PyTorch's int8 CPU kernel (``torch.ops.quantized.linear_dynamic``, fbgemm/x86).

Saved state is plain tensors: ``weight_int8`` (``int8 [out, in]``, symmetric, zero point 0),
``weight_scale`` (``float32 [out]``) and ``bias`` (``float32 [out]``). The kernel's prepacked
weight is an opaque object; it is built from those tensors on first use and rebuilt whenever
they are loaded (call `Int8DynamicLinear.repack` after editing them in place; the bias is
added in float after the kernel, so editing it needs nothing), so it never reaches the state
dict, a deepcopy or a pickle.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.core.device import int8_saturates
from slimkit.quantization.primitives import QuantSpec

INT8_PER_CHANNEL = QuantSpec(bits=8, symmetric=True, signed=True, axis=0)


class Int8DynamicLinear(nn.Module):
    """Linear with int8 per-output-channel weights and dynamically quantized activations.

    The kernel quantizes its input with one uint8 scale per call. With ``per_token`` (the
    default) each row (token) is first divided by its own max ``|x|`` and the output row
    multiplied back: the linear map is homogeneous, so this is exact in float and gives every
    token its own activation scale, which keeps a token with outliers from crushing the others'
    resolution; it costs one max, one division and one multiplication per call. ``reduce_range``
    quantizes them to 7 bits (fbgemm's guard against 16-bit saturation on CPUs without
    AVX512-VNNI); with VNNI/AMX it only costs accuracy. ``None`` (the default) decides on the
    machine that runs the model: 7 bits exactly when `int8_saturates` says the kernel needs
    it. On CUDA the forward falls back to a dequantized-weight float matmul (same weights,
    float activations).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        reduce_range: 7-bit activations; None: only where the CPU kernel would saturate.
        per_token: one activation scale per row instead of one per call.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        reduce_range: bool | None = None,
        per_token: bool = True,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.reduce_range = in_features, out_features, reduce_range
        self.per_token = per_token
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._packed: Any = None

    @classmethod
    def from_float(
        cls, linear: nn.Linear, reduce_range: bool | None = None, weight: Tensor | None = None, per_token: bool = True
    ) -> Int8DynamicLinear:
        """Quantize ``linear`` (or ``weight`` in its place, e.g. after smoothing) per channel."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, reduce_range, per_token)
        codes, scale, _ = INT8_PER_CHANNEL.quantize_tensor((linear.weight if weight is None else weight).detach())
        new.weight_int8.copy_(codes.cpu())
        new.weight_scale.copy_(scale.cpu())
        if linear.bias is not None:
            new.bias.data.copy_(linear.bias.detach().float().cpu())
        return new

    @property
    def weight(self) -> Tensor:
        """The dequantized ``[out, in]`` weight."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def _prepacked(self) -> Any:
        if self._packed is None:
            zeros = torch.zeros(self.out_features, dtype=torch.long)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch's deprecation notice for qtensors
                qweight = torch._make_per_channel_quantized_tensor(
                    self.weight_int8.cpu(), self.weight_scale.double().cpu(), zeros, 0
                )
            self._packed = torch.ops.quantized.linear_prepack(qweight, None)
        return self._packed

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        x32 = x.float()
        reduce_range = int8_saturates() if self.reduce_range is None else self.reduce_range
        if self.per_token:
            row_max = x32.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
            y = torch.ops.quantized.linear_dynamic(x32 / row_max, self._prepacked(), reduce_range) * row_max
        else:
            y = torch.ops.quantized.linear_dynamic(x32, self._prepacked(), reduce_range)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def repack(self) -> None:
        """Drop the prepacked kernel weight after ``weight_int8``/``weight_scale`` were edited in place."""
        self._packed = None

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn: Any, recurse: bool = True) -> Int8DynamicLinear:
        self._packed = None
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        return {**state, "_packed": None}

    def logical_weights(self) -> list[Tensor]:
        """The dequantized weight, so `count_params` counts this layer."""
        return [self.weight]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, reduce_range={self.reduce_range}, per_token={self.per_token}"
        )
