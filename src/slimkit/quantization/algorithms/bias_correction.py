"""The ``bias-correction`` method: weight-only rounding plus empirical bias correction.

Rounding a weight shifts the mean of each output channel by ``(W - Ŵ) E[x]``. The expected
input ``E[x]`` of every selected Linear is measured on calibration data and the shift is
added back to the bias (Nagel et al., 2019), so the quantized layer's outputs are unbiased
on that data. The result is the same packed model as ``weight-only`` (a bias is added to
layers that had none, and listed as ``added_bias``). A layer-wise method of the PTQ driver:
it declares each Linear's mean input (filled in the driver's one calibration pass); a Linear
the data never reached is rounded uncorrected and listed as ``uncorrected``.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from slimkit.core.registry import register
from slimkit.core.statistics import ChannelMean, Statistic
from slimkit.quantization.configs import PackedWeights, QuantConfig
from slimkit.quantization.layers import LAYER_METHODS, LayerMethod, weight_only, weight_only_shell
from slimkit.quantization.modules import WeightOnlyLinear
from slimkit.quantization.ptq import quantize_model, rebuild_model


class BiasCorrection(QuantConfig, PackedWeights):
    """Packed low-bit weights with each Linear's rounding shift of its output mean added back to
    its bias (needs calibration data; Embedding tables, which have no bias, are only rounded)."""

    method = "bias-correction"
    calibration_batches: int | None = Field(None, ge=1)
    """use at most this many batches of ``data``."""


def _types(config: BiasCorrection) -> tuple[type[nn.Module], ...]:
    return (nn.Linear, nn.Embedding) if config.embeddings else (nn.Linear,)


def _needs(layer: nn.Module, _config: BiasCorrection) -> dict[str, Statistic]:
    return {"input": ChannelMean()} if isinstance(layer, nn.Linear) else {}


def _corrected(layer: nn.Module, config: BiasCorrection, stats: dict[str, Any]) -> nn.Module:
    """Round ``layer``; a Linear gets ``(W - Ŵ) E[x]`` added to its bias (which it always has after)."""
    new = weight_only(layer, config, stats)
    if not isinstance(layer, nn.Linear):
        return new
    mean = stats.get("input")  # empty when the data never reached the layer: nothing to correct
    shift = torch.zeros(layer.out_features, device=layer.weight.device)
    if mean is not None and mean.count:
        shift = (layer.weight.detach().float() - new.weight) @ mean.value.to(shift.device)
    if new.bias is None:
        packed = new.packed
        return WeightOnlyLinear.from_codes(
            packed.codes(), packed.scales, packed.zero_points, config.bits, config.group_size, shift
        )
    new.bias.data += shift
    return new


def _shell(layer: nn.Module, config: BiasCorrection, entry: dict[str, Any]) -> nn.Module:
    if not isinstance(layer, nn.Linear):
        return weight_only_shell(layer, config, entry)
    bias = layer.bias is not None or entry.get("bias", True)
    return WeightOnlyLinear(layer.in_features, layer.out_features, config.bits, config.group_size, bias)


def _notes(layer: nn.Module, stats: dict[str, Any]) -> tuple[str, ...]:
    if not isinstance(layer, nn.Linear):
        return ()
    return ("added_bias",) * (layer.bias is None) + ("uncorrected",) * bool(stats.get("silent"))


def rebuild_corrected(model: nn.Module, config: BiasCorrection, state: dict[str, Any]) -> nn.Module:
    """Recreate the packed layers of ``state`` (also as slimkit 0.1 recorded them: ``linear`` and
    ``embedding`` lists, biases added only to the ``added_bias`` ones)."""
    if "layers" not in state:
        entry = {"method": config.method, "config": config.model_dump(mode="json")}
        added = set(state.get("added_bias", []))
        layers = {name: {**entry, "bias": name in added} for name in state.get("linear", [])}
        state = {"layers": {**layers, **dict.fromkeys(state.get("embedding", []), entry)}}
    return rebuild_model(model, config, state)


LAYER_METHODS.register(
    "bias-correction",
    LayerMethod(_types, _corrected, _shell, needs=_needs, observed_only=False, notes=_notes),
)
register("quantize", "bias-correction", BiasCorrection, rebuild=rebuild_corrected)(quantize_model)
