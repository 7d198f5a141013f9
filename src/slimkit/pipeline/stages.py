"""Running one recipe stage on a model."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.core.data import DataSplits, iter_batches
from slimkit.core.record import TRAINING, Transform, append_transform, get_record
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


def selection_split(splits: DataSplits) -> Iterable[Any] | None:
    """The split a finetune picks its best epoch on: the calibration split, never the test
    split. When the data has no calibration split of its own (it is the test split), no
    epoch is picked: the last one is kept."""
    return None if splits.calibration is splits.test else splits.calibration


def _finetune(model: nn.Module, config: Finetune, inputs: StageInputs) -> nn.Module:
    from slimkit.training import finetune

    distill = None
    if config.distills:
        options = dict(config.distill) if isinstance(config.distill, dict) else {}
        _, distill = resolve("distill", options.pop("method", "kd"), options)
    selection = selection_split(inputs.splits)
    trained = finetune(
        copy.deepcopy(model),
        inputs.splits.train,
        epochs=config.epochs,
        teacher=inputs.original if distill is not None else None,
        distill=distill,
        eval_data=selection,
        metric=inputs.splits.metric,
        lr=config.lr,
        device=inputs.device,
        seed=inputs.seed,
    )
    values = {
        "epochs": config.epochs,
        "lr": config.lr,
        "loss": distill.method if distill is not None else "cross-entropy",
        "distill": config.distill,
        "teacher": get_record(inputs.original).source if distill is not None else None,
        "data": data_fingerprint(inputs.splits.train),
        "selected_on": "calibration" if selection is not None else None,
        "seed": inputs.seed,
    }
    return append_transform(trained, Transform(TRAINING, "finetune", values))


def data_fingerprint(data: Iterable[Any]) -> str:
    """A short digest of every batch's inputs and targets (which data a model was trained on)."""
    digest = hashlib.sha256()
    for batch in iter_batches(data):
        digest.update(batch.fingerprint())
        if batch.target is not None:
            target = batch.target.detach().cpu().contiguous().flatten()
            digest.update(f"{target.dtype}:{tuple(target.shape)};".encode())
            digest.update(target.view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()[:32]}"
