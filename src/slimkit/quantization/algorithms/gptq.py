"""The ``gptq`` method: weight-only quantization with Hessian-aware (GPTQ) rounding.

The result is the same deployable packed model as ``weight-only`` (`WeightOnlyLinear`,
`WeightOnlyEmbedding`, identical buffers), so saving, loading and export need nothing
new; only the rounding differs. Layers are processed one transformer block at a time:
the calibration data runs up to the block (earlier blocks already quantized), the input
Hessians of its Linears are gathered, they are quantized, and the next block follows.
Embeddings have no useful Hessian (one-hot inputs) and get round-to-nearest.
"""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import Field
from torch import nn

from slimkit.core.calibration import Point, calibrate
from slimkit.core.config import Config
from slimkit.core.device import model_device
from slimkit.core.errors import DataError, UnsupportedModelError
from slimkit.core.heap import trim
from slimkit.core.registry import Context, register
from slimkit.core.statistics import InputHessian
from slimkit.core.walk import replace_module, select_modules
from slimkit.quantization.algorithms.capture import block_units
from slimkit.quantization.algorithms.gptq_core import gptq_quantize
from slimkit.quantization.configs import PackedWeights
from slimkit.quantization.modules import WeightOnlyEmbedding, WeightOnlyLinear, weight_spec


class GPTQ(PackedWeights):
    """Packed low-bit weights rounded by GPTQ: each column's rounding error is spread over the
    columns not yet rounded, weighted by the inputs' Hessian (needs calibration data)."""

    method = "gptq"
    damp: float = Field(0.01, gt=0, le=1)
    """Hessian dampening as a fraction of its mean diagonal."""
    block_size: int = Field(128, ge=1)
    """columns per lazy-update block."""
    act_order: bool = False
    """quantize columns by decreasing Hessian diagonal (often more accurate)."""
    calibration_batches: int | None = Field(None, ge=1)
    """use at most this many batches of ``data`` (``None``: all)."""


def pack_layers(
    model: nn.Module,
    linears: dict[str, nn.Linear],
    embeddings: dict[str, nn.Embedding],
    bits: int,
    group_size: int | None,
    symmetric: bool,
) -> None:
    """Replace Linears / Embeddings by round-to-nearest packed weight-only modules."""
    for name, layer in linears.items():
        replace_module(model, name, WeightOnlyLinear.from_float(layer, bits, group_size, symmetric))
    for name, layer in embeddings.items():
        replace_module(model, name, WeightOnlyEmbedding.from_float(layer, bits, group_size, symmetric))


def rebuild_packed(model: nn.Module, config: Config, state: dict[str, Any]) -> nn.Module:
    """Recreate the packed modules listed in ``state`` (shapes only; weights load after)."""
    bits, group = config.bits, config.group_size  # type: ignore[attr-defined]
    for name in state.get("linear", []):
        old = model.get_submodule(name)
        bias = old.bias is not None or name in state.get("added_bias", [])
        new = WeightOnlyLinear(old.in_features, old.out_features, bits, group, bias)
        replace_module(model, name, new)
    for name in state.get("embedding", []):
        old = model.get_submodule(name)
        replace_module(
            model, name, WeightOnlyEmbedding(old.num_embeddings, old.embedding_dim, bits, group, old.padding_idx)
        )
    return model


def selected_layers(
    model: nn.Module, ctx: Context, embeddings: bool
) -> tuple[dict[str, nn.Linear], dict[str, nn.Embedding]]:
    """The Linears (and Embeddings when asked) the selector picks; refuses a model with none."""
    linears = dict(select_modules(model, ctx.selector, nn.Linear))
    tables = dict(select_modules(model, ctx.selector, nn.Embedding)) if embeddings else {}
    if not linears and not tables:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no Linear or Embedding layer to quantize (check include/exclude)"
        )
    return linears, tables  # type: ignore[return-value]


def require_data(ctx: Context, method: str) -> None:
    """Refuse to run a calibration-based method without data."""
    if ctx.data is None:
        raise DataError(f"{method} needs calibration data: pass data=... (a few batches of real inputs)")


@register("quantize", "gptq", GPTQ, rebuild=rebuild_packed)
def quantize_gptq(model: nn.Module, config: GPTQ, ctx: Context) -> nn.Module:
    """Quantize the selected Linears with GPTQ, block by block, on ``ctx.device``."""
    require_data(ctx, "gptq")
    linears, tables = selected_layers(model, ctx, config.embeddings)
    home = model_device(model)
    model.eval()
    pack_layers(model, {}, tables, config.bits, config.group_size, config.symmetric)
    names_done = {"linear": list(linears), "embedding": list(tables)}
    del tables  # drop references to the float layers as they are replaced, so memory is freed
    fallback: list[str] = []
    for unit, names in block_units(model, list(linears)):  # the declared blockwise mode (module doc)
        accs = {n: InputHessian(linears[n].in_features, ctx.device) for n in names}
        calibrate(
            model,
            ctx.data,  # type: ignore[arg-type]
            {Point(n, "input"): accs[n] for n in names},
            device=ctx.device,
            limit=config.calibration_batches,
            require_all=False,
            stop_at=model.get_submodule(unit),
        )
        trim()  # the forward's work copies (dequantized weights of earlier blocks) are free
        for name in names:
            layer, acc = linears.pop(name), accs.pop(name)
            spec = weight_spec(config.bits, config.group_size or layer.in_features, config.symmetric)
            if acc.rows == 0:  # never called on the calibration data
                fallback.append(name)
                replace_module(
                    model, name, WeightOnlyLinear.from_float(layer, config.bits, config.group_size, config.symmetric)
                )
                continue
            codes, scale, zero = gptq_quantize(
                layer.weight,
                acc.hessian,
                spec,
                block_size=config.block_size,
                damp=config.damp,
                act_order=config.act_order,
            )
            del acc
            new = WeightOnlyLinear.from_codes(codes, scale, zero, config.bits, config.group_size, layer.bias)
            replace_module(model, name, new)
            del layer, codes
        trim()  # the block's float weights and work copies are free: give their pages back
    if fallback:
        warnings.warn(
            f"gptq: {len(fallback)} Linear layer(s) never ran on the calibration data and were rounded "
            f"to nearest instead: {', '.join(fallback[:5])}{', ...' if len(fallback) > 5 else ''}",
            stacklevel=2,
        )
    ctx.state.update(**names_done, round_to_nearest=fallback)
    return model.to(home)
