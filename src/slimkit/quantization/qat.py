"""The ``qat`` method: quantization-aware training with learned step sizes (LSQ).

Every selected Linear/Conv gets LSQ fake-quant on its weight (signed symmetric, per output
channel or per group) and on its input (per tensor, signed or unsigned from calibration).
The model is then fine-tuned with the shared trainer (`slimkit.distillation.finetune`),
by default distilling from the original float model, and converted to `LowBitLayer`s:
packed low-bit weights and static input quantization with the learned steps.
``epochs=0`` skips training: plain post-training quantization on the same grid.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from pydantic import Field
from torch import nn

from slimkit.core.calibration import Point, calibrate
from slimkit.core.config import Bits, Config
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError
from slimkit.core.registry import Context, register
from slimkit.core.statistics import AbsMaxSign
from slimkit.core.walk import replace_module, select_modules
from slimkit.quantization.algorithms.gptq import require_data
from slimkit.quantization.algorithms.lowbit import LowBitLayer
from slimkit.quantization.algorithms.lsq import QATWrapper
from slimkit.quantization.granularity import GroupedWeights, WeightGranularity
from slimkit.training.config import Finetune

QAT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


class QAT(Config, GroupedWeights):
    """Low-bit weights (and activations) learned by fine-tuning fake-quantized layers (LSQ),
    distilled from the float model, then packed (needs training data)."""

    method = "qat"
    renamed = {
        "weight_bits": "bits",
        "group_size": "granularity",
        "epochs": "finetune.epochs",
        "lr": "finetune.lr",
        "distill": "finetune.distill",
    }
    bits: Bits = 4
    """weight bits, 2..8 (``weight_bits`` before 0.2)."""
    act_bits: int | None = Field(8, ge=2, le=8)
    """input activation bits, 2..8 (``None``: weights only)."""
    granularity: WeightGranularity = Field("channel", validate_default=True)
    """``"channel"``: one weight step per output channel; ``"group:N"``: per group of N input
    columns, for Linears (N must divide ``in_features``) (``group_size`` before 0.2)."""
    finetune: Finetune = Finetune(epochs=3, lr=1e-4, distill=True)
    """fine-tuning with the fake-quantized layers: ``epochs`` over ``data`` (0: no training,
    plain PTQ), peak ``lr``, ``distill`` from the float model (default) or not (the targets'
    loss). ``epochs``/``lr``/``distill`` before 0.2."""
    calibration_batches: int = Field(4, ge=1)
    """batches used to initialize the activation steps."""
    seed: int = 0
    """training seed."""


def _input_ranges(model: nn.Module, layers: dict[str, nn.Module], ctx: Context, batches: int) -> dict[str, AbsMaxSign]:
    """Per layer: max |input| and whether the input goes negative, over calibration batches."""
    stats = {name: AbsMaxSign() for name in layers}
    calibrate(model, ctx.data, {Point(n, "input"): s for n, s in stats.items()}, device=ctx.device, limit=batches,
              require_all=False)  # fmt: skip
    return stats


def _wrap(model: nn.Module, config: QAT, ctx: Context) -> dict[str, QATWrapper]:
    """Replace the selected layers by `QATWrapper`s initialized from calibration data."""
    layers = dict(select_modules(model, ctx.selector, QAT_TYPES))
    if config.group_size is not None:
        bad = [n for n, m in layers.items() if isinstance(m, nn.Linear) and m.in_features % config.group_size]
        if bad:
            raise InvalidConfigError(
                f"qat granularity group:{config.group_size} does not divide the input features of {bad[:3]}: "
                "choose a divisor or granularity='channel'"
            )
    if not layers:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no Linear/Conv layer to quantize (check include/exclude)"
        )
    stats = _input_ranges(model, layers, ctx, config.calibration_batches)
    wrappers = {}
    for name, layer in layers.items():
        group = config.group_size if isinstance(layer, nn.Linear) else None
        wrapper = QATWrapper(layer, config.bits, config.act_bits, stats[name].negative, group)
        if wrapper.act_quant is not None:
            amax = torch.tensor(stats[name].peak)
            wrapper.act_quant.init_from(amax if wrapper.act_quant.signed else amax.clamp_min(0))
        replace_module(model, name, wrapper.to(ctx.device))
        wrappers[name] = wrapper
    return wrappers


def rebuild_qat(model: nn.Module, config: QAT, state: dict[str, Any]) -> nn.Module:
    """Recreate the `LowBitLayer`s listed in ``state`` (shapes only; weights load after)."""
    for name, signed in state["layers"].items():
        layer = model.get_submodule(name)
        group = config.group_size if isinstance(layer, nn.Linear) else None
        shape = tuple(layer.weight.shape)
        replace_module(model, name, LowBitLayer(layer, shape, config.bits, group, config.act_bits, signed))
    return model


@register("quantize", "qat", QAT, rebuild=rebuild_qat)
def quantize_qat(model: nn.Module, config: QAT, ctx: Context) -> nn.Module:
    """Fake-quantize, fine-tune with `finetune` (distilling from the float model), convert."""
    require_data(ctx, "qat")
    model.eval()
    teacher = copy.deepcopy(model).eval() if config.finetune.distills and config.finetune.epochs else None
    wrappers = _wrap(model, config, ctx)
    config.finetune.run(model, ctx.data, teacher, device=ctx.device, seed=config.seed)
    model.eval()
    skipped = {n: "qat leaves embeddings in float" for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    if skipped:
        warnings.warn(f"qat leaves {len(skipped)} embedding(s) in float: {', '.join(list(skipped)[:5])}", stacklevel=2)
    with torch.no_grad():
        for name, wrapper in wrappers.items():
            replace_module(model, name, LowBitLayer.from_qat(wrapper))
    ctx.state.update(
        layers={n: bool(w.act_quant is not None and w.act_quant.signed) for n, w in wrappers.items()},
        skipped=skipped,
    )
    return model
