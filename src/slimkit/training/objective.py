"""What the `Trainer` optimizes: the task objective, and the seam distillation plugs into.

`TaskObjective` is cross-entropy on the batch targets. Training with a teacher needs a
distillation objective, which the distillation package provides by registering a
`TeacherObjectives` here when it is imported; the trainer asks the core registry to import
it on first use, so this package never imports a technique.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.data import Batch, primary_output, run_model
from slimkit.core.errors import DataError, UnsupportedModelError


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``(..., C)`` scores as rows ``(N, C)`` over their last axis."""
    return x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x


def task_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against class indices ``(...)`` or class probabilities ``(..., C)``."""
    if target.shape == logits.shape:
        return F.cross_entropy(as_rows(logits), as_rows(target.to(logits.dtype)))
    return F.cross_entropy(as_rows(logits), target.reshape(-1).long())


class TaskObjective(nn.Module):
    """``loss = cross-entropy(student(batch), targets)``: fine-tuning without a teacher.

    Args:
        student: the model being trained (kept as the same object).
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def prepare(self, batch: Batch, teacher: Any = None) -> None:
        """Check the loss can be computed on ``batch``.

        Raises:
            DataError: the batch has no targets (and no teacher was given).
        """
        if batch.target is None:
            raise DataError(
                "the training data has no targets and no teacher was given: give (inputs, targets) "
                "batches, or a teacher to distill from"
            )

    def forward(self, batch: Batch, teacher_out: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, student output)`` for ``batch``."""
        out = primary_output(run_model(self.student, batch))
        return task_loss(out.float(), batch.target), out

    def close(self) -> None:
        """Nothing to release."""


class TeacherObjectives(Protocol):
    """What the distillation package provides to train with a teacher."""

    def config(self, distill: Any) -> Any:
        """The validated distillation config of a method name, config object or dict."""

    def build(self, student: nn.Module, teacher: nn.Module, config: Any) -> tuple[nn.Module, Any]:
        """``(objective, teacher runner)``: the objective module the trainer optimizes, and a
        callable ``runner(batch)`` with ``.model``, ``.cache(n)`` and ``.close()``."""


_PROVIDERS: list[TeacherObjectives] = []


def register_teacher_objectives(provider: TeacherObjectives) -> None:
    """Plug the distillation objectives in (called by `slimkit.distillation` on import)."""
    _PROVIDERS[:] = [provider]


def teacher_objectives() -> TeacherObjectives:
    """The registered distillation objectives, importing the package that provides them."""
    if not _PROVIDERS:
        from slimkit.core.registry import methods

        methods("distill")  # the core registry imports the package that registers the distill verb
    if not _PROVIDERS:
        raise UnsupportedModelError("training with a teacher needs slimkit's distillation package, which did not load")
    return _PROVIDERS[0]
