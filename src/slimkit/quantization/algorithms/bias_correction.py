"""The ``bias-correction`` method: weight-only rounding plus empirical bias correction.

Rounding a weight shifts the mean of each output channel by ``(W - Ŵ) E[x]``. The expected
input ``E[x]`` of every selected Linear is measured on calibration data and the shift is
added back to the bias (Nagel et al., 2019), so the quantized layer's outputs are unbiased
on that data. The result is the same packed model as ``weight-only`` (a bias is added to
layers that had none, and recorded).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from slimkit.core.config import Config
from slimkit.core.device import model_device
from slimkit.core.registry import Context, register
from slimkit.core.walk import replace_module
from slimkit.quantization.algorithms.capture import flat_inputs, run_until
from slimkit.quantization.algorithms.gptq import pack_layers, rebuild_packed, require_data, selected_layers
from slimkit.quantization.modules import WeightOnlyLinear


class BiasCorrection(Config):
    """Options of ``bias-correction``."""

    method = "bias-correction"
    bits: int = Field(4, ge=2, le=8)
    """weight bits, 2..8."""
    group_size: int | None = Field(128, ge=1)
    """input columns per scale (``None``: per output channel)."""
    symmetric: bool = False
    """symmetric grid instead of min-max."""
    embeddings: bool = True
    """also quantize Embedding tables (no bias to correct there)."""
    calibration_batches: int | None = Field(None, ge=1)
    """use at most this many batches of ``data``."""


def input_means(
    model: nn.Module, layers: dict[str, nn.Linear], ctx: Context, limit: int | None
) -> dict[str, torch.Tensor]:
    """Mean input vector of each layer over the calibration data (float64 sums)."""
    sums = {n: torch.zeros(m.in_features, dtype=torch.float64, device=ctx.device) for n, m in layers.items()}
    rows = dict.fromkeys(layers, 0)

    def hook(name: str):  # noqa: ANN202 - a forward hook factory
        def record(_m: nn.Module, inputs: tuple[Any, ...], _o: Any) -> None:
            x = flat_inputs(inputs, layers[name].in_features)
            sums[name] += x.double().sum(0)
            rows[name] += x.shape[0]

        return record

    run_until(model, ctx.data, model, {m: hook(n) for n, m in layers.items()}, ctx.device, limit)  # type: ignore[arg-type]
    return {n: (sums[n] / rows[n]).float() for n in layers if rows[n]}


@register("quantize", "bias-correction", BiasCorrection, rebuild=rebuild_packed)
def quantize_bias_corrected(model: nn.Module, config: BiasCorrection, ctx: Context) -> nn.Module:
    """Round the selected layers to the packed grid and correct each Linear's output bias."""
    require_data(ctx, "bias-correction")
    linears, tables = selected_layers(model, ctx, config.embeddings)
    home = model_device(model)
    model.eval()
    means = input_means(model, linears, ctx, config.calibration_batches)
    added = []
    for name, layer in linears.items():
        new = WeightOnlyLinear.from_float(layer, config.bits, config.group_size, config.symmetric)
        if name in means:
            shift = (layer.weight.detach().float() - new.weight) @ means[name]
            if new.bias is None:
                new = WeightOnlyLinear.from_codes(
                    new.packed.codes(), new.packed.scales, new.packed.zero_points, config.bits, config.group_size, shift
                )
                added.append(name)
            else:
                new.bias.data += shift
        replace_module(model, name, new)
    pack_layers(model, {}, tables, config.bits, config.group_size, config.symmetric)
    ctx.state.update(
        linear=list(linears), embedding=list(tables), added_bias=added, uncorrected=sorted(set(linears) - set(means))
    )
    return model.to(home)
