"""Running one recipe stage on a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.registry import apply, resolve
from slimkit.pipeline.recipe import Finetune, Stage


@dataclass
class StageInputs:
    """What every stage may use: the data splits, example inputs, the original model."""

    splits: DataSplits
    example_inputs: Any
    original: nn.Module
    device: str
    seed: int


def run_stage(model: nn.Module, stage: Stage, inputs: StageInputs) -> nn.Module:
    """Apply ``stage`` to (a copy of) ``model`` and return the new model."""
    if stage.kind == "finetune":
        return _finetune(model, Finetune(**stage.options), inputs)
    data = inputs.splits.calibration if stage.kind == "quantize" else inputs.splits.train
    return apply(
        stage.kind,
        model,
        stage.method,
        data=data,
        example_inputs=inputs.example_inputs,
        include=stage.options.get("include"),
        exclude=stage.options.get("exclude"),
        device=inputs.device,
        **stage.method_options,
    )


def _finetune(model: nn.Module, config: Finetune, inputs: StageInputs) -> nn.Module:
    import copy

    from slimkit.distillation import finetune

    distill = None
    if config.distill is not None:
        options = dict(config.distill)
        _, distill = resolve("distill", options.pop("method", "kd"), options)
    return finetune(
        copy.deepcopy(model),
        inputs.splits.train,
        epochs=config.epochs,
        teacher=inputs.original if distill is not None else None,
        distill=distill,
        eval_data=inputs.splits.test,
        metric=inputs.splits.metric,
        lr=config.lr,
        device=inputs.device,
        seed=inputs.seed,
    )
