"""Training shared by every technique: the `Trainer`, `finetune`, checkpoints, schedules.

It sits below the techniques: quantization (QAT), pruning (gradual), conv (separable) and
the pipeline fine-tune through it. Training with a teacher uses the distillation
objectives, which `slimkit.distillation` plugs in (`objective.register_teacher_objectives`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.training.config import TrainConfig
from slimkit.training.trainer import NonFiniteLossError, StopTraining, Trainer, TrainEvent, seed_everything


def finetune(
    model: nn.Module,
    data: Iterable[Any],
    *,
    epochs: int = 1,
    teacher: nn.Module | None = None,
    distill: str | Config | dict[str, Any] | None = None,
    eval_data: Iterable[Any] | None = None,
    metric: str | None = None,
    lr: float = 1e-3,
    device: str | torch.device = "auto",
    seed: int = 0,
    quiet: bool = True,
    **options: Any,
) -> nn.Module:
    """Train ``model`` in place and return it (the same object) in eval mode.

    Without a teacher the loss is cross-entropy on the batch targets; with one it is the
    ``distill`` loss (default ``"kd"``), mixed with the targets when batches have them.

    Args:
        model: the model to train (custom modules, parametrizations and fake-quant state kept).
        data: training batches (anything `slimkit.core.data.iter_batches` reads).
        epochs: passes over ``data`` (``steps=N`` counts optimizer steps instead).
        teacher: a model to distill from (frozen).
        distill: distillation method name, config (`KD`, `Hints`, ...) or dict with ``method``.
        eval_data: held-out batches evaluated after each epoch; the best weights are kept.
        metric: ``"accuracy"`` or ``"fidelity"``; by default accuracy when ``eval_data`` has
            targets, else cosine fidelity to the teacher.
        lr: peak learning rate.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        seed: seeds the run and the data order.
        quiet: no progress bar.
        **options: any other `TrainConfig` field (steps, optimizer, schedule, grad_clip, ...).

    Raises:
        DataError: unusable data, e.g. no targets and no teacher.
        NonFiniteLossError: the loss became NaN/Inf (the model then holds the best weights).
    """
    config = TrainConfig.build(epochs=epochs, metric=metric, lr=lr, seed=seed, quiet=quiet, **options)
    trainer = Trainer(model, config, teacher=teacher, distill=distill, device=device)
    return trainer.fit(data, eval_data)


__all__ = [
    "NonFiniteLossError",
    "StopTraining",
    "TrainConfig",
    "TrainEvent",
    "Trainer",
    "finetune",
    "seed_everything",
]
