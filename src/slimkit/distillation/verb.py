"""The ``distill`` verb: every distillation method registered with the core registry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError
from slimkit.core.registry import Context, apply, register
from slimkit.distillation.methods import CONFIGS
from slimkit.training.config import TrainConfig
from slimkit.training.trainer import Trainer


def _distill_handler(model: nn.Module, config: Config, ctx: Context) -> nn.Module:
    teacher = ctx.extras.get("teacher")
    if not isinstance(teacher, nn.Module):
        raise InvalidConfigError("distill needs a teacher model: sk.distill(student, teacher, ...)")
    train: TrainConfig = ctx.extras.get("train") or TrainConfig()
    trainer = Trainer(model, train, teacher=teacher, distill=config, device=ctx.device)
    result = trainer.fit(ctx.data, ctx.extras.get("eval_data"))
    ctx.state["history"] = trainer.history
    ctx.state["best_score"] = trainer.best_score
    return result


for _name, _config in CONFIGS.items():
    register("distill", _name, _config)(_distill_handler)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    method: str | Config = "kd",
    *,
    data: Iterable[Any] | None = None,
    epochs: int = 1,
    eval_data: Iterable[Any] | None = None,
    example_inputs: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    inplace: bool = False,
    device: str | torch.device = "auto",
    **options: Any,
) -> nn.Module:
    """Distill ``teacher`` into (a copy of) ``student``; returns the trained student.

    Args:
        student: the smaller model (copied unless ``inplace``).
        teacher: the model whose outputs are imitated (never changed).
        method: ``"kd"``, ``"hint"``/``"fitnets"``, ``"attention"``, ``"embedding"``,
            ``"combined"`` or a config object (`KD`, `Hints`, ...).
        data: training batches.
        epochs: passes over ``data``.
        eval_data: held-out batches; the best student by accuracy / fidelity is returned.
        **options: fields of the method's config (``temperature``, ``alpha``, ``layers``, ...)
            and of `TrainConfig` (``lr``, ``steps``, ``optimizer``, ``checkpoint_dir``, ...).

    Raises:
        InvalidConfigError: unknown method or option.
        DataError: unusable data.
    """
    if method == "shrink" or getattr(method, "method", None) == "shrink":
        raise InvalidConfigError(
            "'shrink' builds a student, it is not a loss: use sk.distillation.shrink(teacher, depth=...)"
        )
    if data is None:
        raise InvalidConfigError("distill needs training data: pass data=... (batches of inputs)")
    train_fields = set(TrainConfig.model_fields)
    train = TrainConfig.build(epochs=epochs, **{k: v for k, v in options.items() if k in train_fields})
    method_options = {k: v for k, v in options.items() if k not in train_fields}
    return apply(
        "distill",
        student,
        method,
        data=data,
        example_inputs=example_inputs,
        include=include,
        exclude=exclude,
        inplace=inplace,
        device=device,
        extras={"teacher": teacher, "train": train, "eval_data": eval_data},
        **method_options,
    )
