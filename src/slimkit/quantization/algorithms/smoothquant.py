"""The ``smoothquant`` method: migrate activation outliers into the weights, then W8A8.

Per input channel ``j`` of each Linear, ``s_j = max|X_j|^α / max|W_:,j|^(1-α)`` (Xiao et al.,
2023). The layer computes ``(x / s) (W diag(s))ᵀ``, which is the same function, but ``x / s``
has tame channels, so per-tensor int8 activations lose far less. Here the ``1 / s`` input
scale is an explicit element-wise op in front of the layer (`SmoothedLinear`), which is
always exact, also when the predecessor (a post-LN residual, an attention output) cannot
absorb it. The smoothed weight is then quantized per channel to int8 and run with dynamic
int8 activations on PyTorch's int8 kernel (`Int8DynamicLinear`); ``quantize=False`` keeps
the smoothed float layer. It is a layer-wise method of the PTQ driver: it declares each
Linear's per-channel ``max |x|`` (filled in the driver's one calibration pass) and converts
one layer at a time; ``overrides`` mix it with the other layer-wise methods.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from slimkit.core.registry import register
from slimkit.core.statistics import ChannelAbsMax, Statistic
from slimkit.quantization.configs import DynamicActivations
from slimkit.quantization.dynamic import Int8DynamicLinear
from slimkit.quantization.layers import LAYER_METHODS, LayerMethod
from slimkit.quantization.ptq import quantize_model, rebuild_model


class SmoothQuant(DynamicActivations):
    """W8A8 with activation outliers migrated into the weights, per input channel (needs
    calibration data); the smoothed layers quantize their activations at run time, as
    ``int8-dynamic``'s do, with the same options."""

    method = "smoothquant"
    alpha: float = Field(0.5, ge=0, le=1)
    """migration strength: 0 keeps activations as they are, 1 moves all range into the weights."""
    quantize: bool = True
    """quantize the smoothed layers to W8A8 (else keep them float)."""
    calibration_batches: int | None = Field(None, ge=1)
    """use at most this many batches of ``data``."""


def smoothing_factors(act_max: Tensor, weight: Tensor, alpha: float) -> Tensor:
    """``s_j = max|X_j|^α / max|W_:,j|^(1-α)``; 1 where a channel is all zero."""
    w_max = weight.detach().abs().amax(0).float()
    act_max = act_max.to(w_max.device)
    s = act_max.float().clamp_min(1e-5).pow(alpha) / w_max.clamp_min(1e-5).pow(1 - alpha)
    return torch.where((act_max > 0) & (w_max > 0), s, torch.ones_like(s))


class SmoothedLinear(nn.Module):
    """``inner(x * inv_scale)``: a Linear whose weight was scaled by ``1 / inv_scale`` per input.

    Args:
        inner: the layer holding the smoothed weight (`nn.Linear` or `Int8DynamicLinear`).
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.register_buffer("inv_scale", torch.ones(inner.in_features))

    @classmethod
    def from_float(cls, linear: nn.Linear, factors: Tensor, config: SmoothQuant) -> SmoothedLinear:
        """Smooth ``linear`` with ``factors`` ``s`` (and quantize it to W8A8 when ``config`` asks)."""
        weight = linear.weight.detach() * factors[None, :].to(linear.weight)
        if config.quantize:
            inner: nn.Module = Int8DynamicLinear.from_float(linear, weight=weight, **config.layer_options())
        else:
            inner = nn.Linear(linear.in_features, linear.out_features, linear.bias is not None).to(weight)
            inner.weight.data.copy_(weight)
            if linear.bias is not None:
                inner.bias.data.copy_(linear.bias.detach())
        new = cls(inner)
        new.inv_scale.copy_((1.0 / factors).to(new.inv_scale))
        return new

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x * self.inv_scale.to(x.dtype))


def _needs(_layer: nn.Module, _config: SmoothQuant) -> dict[str, Statistic]:
    return {"input": ChannelAbsMax()}


def _smooth(layer: nn.Linear, config: SmoothQuant, stats: dict[str, Any]) -> nn.Module:
    """Smooth ``layer`` by its inputs' maxima (factors of 1 where the data never reached it)."""
    act_max = stats["input"].value
    if act_max is None:
        factors = torch.ones(layer.in_features)
    else:
        factors = smoothing_factors(act_max, layer.weight, config.alpha)
    return SmoothedLinear.from_float(layer, factors, config)


def _shell(layer: nn.Linear, config: SmoothQuant, _entry: dict[str, Any]) -> nn.Module:
    has_bias = layer.bias is not None
    inner = (
        Int8DynamicLinear(layer.in_features, layer.out_features, has_bias, **config.layer_options())
        if config.quantize
        else layer
    )
    return SmoothedLinear(inner)


def rebuild_smoothquant(model: nn.Module, config: SmoothQuant, state: dict[str, Any]) -> nn.Module:
    """Recreate the `SmoothedLinear` shells of ``state`` (also as slimkit 0.1 recorded them:
    a plain ``linear`` list)."""
    if "layers" not in state:
        entry = {"method": config.method, "config": config.model_dump(mode="json")}
        state = {"layers": dict.fromkeys(state.get("linear", []), entry)}
    return rebuild_model(model, config, state)


LAYER_METHODS.register(
    "smoothquant", LayerMethod(lambda c: (nn.Linear,), _smooth, _shell, needs=_needs, observed_only=False)
)
register("quantize", "smoothquant", SmoothQuant, rebuild=rebuild_smoothquant)(quantize_model)
