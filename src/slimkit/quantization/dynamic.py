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
PAIR_BOUND = 128
"""Largest ``|q[2j]| + |q[2j+1]|`` of pair-bounded weight codes: a uint8 activation pair times
such codes sums to at most ``255 * 128 = 32640``, inside the int16 of ``vpmaddubsw``."""
UINT8_MAX = 255


def pair_bounded_codes(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 codes of ``weight`` (``[out, in]``) whose adjacent input columns ``(2j, 2j+1)``
    satisfy ``|q[2j]| + |q[2j+1]| <= PAIR_BOUND``, and the ``[out]`` scales: each row's scale is
    its largest ``|w[2j]| + |w[2j+1]|`` over 127 (an odd last column pairs with zero), so the
    pair sum before rounding is at most 127 and after rounding at most 128. x86 int8 kernels
    without VNNI (fbgemm, onnxruntime's MLAS) add uint8 x int8 products in adjacent pairs in 16
    bits; with these codes 8-bit activations never saturate there. The price: a scale up to
    about 1.4x coarser than ``max |w| / 127`` (the pair of a row's largest weight also counts)."""
    w = weight.detach().float()
    pairs = F.pad(w.abs(), (0, w.shape[1] % 2)).reshape(w.shape[0], -1, 2).sum(-1)
    scale = (pairs.amax(1) / (PAIR_BOUND - 1)).clamp_min(torch.finfo(torch.float32).tiny)
    codes = torch.clamp(torch.round(w / scale[:, None]), -(PAIR_BOUND - 1), PAIR_BOUND - 1)
    return codes.to(torch.int8), scale


def onnx_qparams(x: Tensor) -> tuple[Tensor, Tensor]:
    """``DynamicQuantizeLinear``'s uint8 scale and zero point of ``x``, in its float32 arithmetic:
    range widened to include 0, ``scale = (max - min) / 255`` (1 for an all-zero tensor, whose
    codes are 0 whatever the scale), ``zero_point = round(-min / scale)`` half to even. fbgemm's
    own choice computes the scale in float64, which differs in the last bit for some tensors and
    then moves the zero point or codes by one; slimkit's 8-bit layers use these parameters in
    PyTorch too, so the ONNX graph computes the same codes."""
    lo, hi = x.min().clamp_max(0), x.max().clamp_min(0)
    scale = (hi - lo) / UINT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, torch.clamp(torch.round(-lo / scale), 0, UINT8_MAX)


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
    it. ``pair_bounded`` weights (`pair_bounded_codes`) cannot saturate, so their activations
    always take 8 bits. 8-bit activations are quantized with `onnx_qparams` (what
    ``DynamicQuantizeLinear`` computes), fbgemm then running the integer product. A
    ``smoothed`` layer multiplies its input by ``input_scale`` first (per input channel; the
    weight holds the inverse, see `Int8Dynamic.smoothing`). On CUDA the forward falls back to
    a dequantized-weight float matmul (same weights, float activations).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        reduce_range: 7-bit activations; None: only where the CPU kernel would saturate.
        per_token: one activation scale per row instead of one per call.
        pair_bounded: the weight codes are pair-bounded (8-bit activations everywhere).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        reduce_range: bool | None = None,
        per_token: bool = True,
        pair_bounded: bool = False,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.reduce_range = in_features, out_features, reduce_range
        self.per_token, self.pair_bounded = per_token, pair_bounded
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._packed: Any = None

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        reduce_range: bool | None = None,
        weight: Tensor | None = None,
        per_token: bool = True,
        pair_bounded: bool = False,
    ) -> Int8DynamicLinear:
        """Quantize ``linear`` (or ``weight`` in its place, e.g. after smoothing) per channel."""
        args = (linear.in_features, linear.out_features, linear.bias is not None, reduce_range, per_token)
        new = cls(*args, pair_bounded=pair_bounded)
        weight = (linear.weight if weight is None else weight).detach()
        if pair_bounded:
            codes, scale = pair_bounded_codes(weight)
        else:
            codes, scale, _ = INT8_PER_CHANNEL.quantize_tensor(weight)
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
        if self.per_token:
            row_max = x32.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
            y = self._matmul(x32 / row_max) * row_max
        else:
            y = self._matmul(x32)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    @property
    def act_reduce_range(self) -> bool:
        """Whether this machine runs the activations at 7 bits (never for pair-bounded codes)."""
        if self.pair_bounded:
            return False
        return int8_saturates() if self.reduce_range is None else self.reduce_range

    def _matmul(self, x: Tensor) -> Tensor:
        """``x @ W.T`` on fbgemm, ``x`` quantized per call (7 bits: fbgemm's parameters; 8 bits:
        `onnx_qparams`)."""
        if self.act_reduce_range:
            return torch.ops.quantized.linear_dynamic(x, self._prepacked(), True)
        scale, zero_point = onnx_qparams(x)
        flat = x.reshape(-1, self.in_features).contiguous()
        y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            flat, float(scale), int(zero_point), self._prepacked()
        )
        return y.reshape(*x.shape[:-1], self.out_features)

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
            f"bias={self.bias is not None}, reduce_range={self.reduce_range}, per_token={self.per_token}, "
            f"pair_bounded={self.pair_bounded}"
        )
