"""The ``smoothquant`` method: migrate activation outliers into the weights, then W8A8.

Per input channel ``j`` of each Linear, ``s_j = max|X_j|^α / max|W_:,j|^(1-α)`` (Xiao et al.,
2023). The layer computes ``(x / s) (W diag(s))ᵀ``, which is the same function, but ``x / s``
has tame channels, so per-tensor int8 activations lose far less. Here the ``1 / s`` input
scale is an explicit element-wise op in front of the layer (`SmoothedLinear`), which is
always exact, also when the predecessor (a post-LN residual, an attention output) cannot
absorb it. The smoothed weight is then quantized per channel to int8 and run with dynamic
int8 activations on PyTorch's int8 kernel (`Int8DynamicLinear`); ``quantize=False`` keeps
the smoothed float layer.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from slimkit.core.config import Config
from slimkit.core.device import model_device
from slimkit.core.registry import Context, register
from slimkit.core.walk import replace_module
from slimkit.quantization.algorithms.capture import flat_inputs, run_until
from slimkit.quantization.algorithms.gptq import require_data, selected_layers
from slimkit.quantization.dynamic import Int8DynamicLinear


class SmoothQuant(Config):
    """Options of ``smoothquant``."""

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
    def from_float(cls, linear: nn.Linear, factors: Tensor, quantize: bool) -> SmoothedLinear:
        """Smooth ``linear`` with ``factors`` ``s`` (and quantize it to W8A8 when asked)."""
        weight = linear.weight.detach() * factors[None, :].to(linear.weight)
        if quantize:
            inner: nn.Module = Int8DynamicLinear.from_float(linear, weight=weight)
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


def activation_max(
    model: nn.Module, layers: dict[str, nn.Linear], ctx: Context, limit: int | None
) -> dict[str, Tensor]:
    """Per input channel max |x| of each layer over the calibration data."""
    maxima = {n: torch.zeros(m.in_features, device=ctx.device) for n, m in layers.items()}

    def hook(name: str):  # noqa: ANN202 - a forward hook factory
        def record(_m: nn.Module, inputs: tuple[Any, ...], _o: Any) -> None:
            x = flat_inputs(inputs, layers[name].in_features)
            torch.maximum(maxima[name], x.abs().amax(0), out=maxima[name])

        return record

    run_until(model, ctx.data, model, {m: hook(n) for n, m in layers.items()}, ctx.device, limit)  # type: ignore[arg-type]
    return maxima


def rebuild_smoothquant(model: nn.Module, config: SmoothQuant, state: dict[str, Any]) -> nn.Module:
    """Recreate the `SmoothedLinear` shells listed in ``state``."""
    for name in state["linear"]:
        old = model.get_submodule(name)
        has_bias = old.bias is not None
        inner = Int8DynamicLinear(old.in_features, old.out_features, has_bias) if config.quantize else old
        replace_module(model, name, SmoothedLinear(inner))
    return model


@register("quantize", "smoothquant", SmoothQuant, rebuild=rebuild_smoothquant)
def quantize_smoothquant(model: nn.Module, config: SmoothQuant, ctx: Context) -> nn.Module:
    """Smooth every selected Linear with calibration activation ranges, then W8A8."""
    require_data(ctx, "smoothquant")
    linears, _ = selected_layers(model, ctx, embeddings=False)
    home = model_device(model)
    model.eval()
    maxima = activation_max(model, linears, ctx, config.calibration_batches)
    for name, layer in linears.items():
        factors = smoothing_factors(maxima[name], layer.weight, config.alpha)
        replace_module(model, name, SmoothedLinear.from_float(layer, factors, config.quantize))
    ctx.state.update(linear=list(linears))
    # Int8DynamicLinear runs on the CPU int8 kernel; its own forward handles other devices.
    return model.to(home)
