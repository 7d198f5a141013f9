"""The training objective: the student plus whatever the loss learns (hint adapters).

`Objective` is the module the `Trainer` optimizes (and wraps in DDP), so the student's
parameters and the adapters are trained, synchronized and checkpointed together.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.data import Batch, primary_output, run_model
from slimkit.core.errors import DataError
from slimkit.distillation.features import FeatureTap
from slimkit.distillation.losses import (
    attention_loss,
    embedding_loss,
    hint_loss,
    hinton_loss,
    task_loss,
)
from slimkit.distillation.methods import Combined, as_combined
from slimkit.training.objective import register_teacher_objectives

TeacherOutput = tuple[torch.Tensor, dict[str, torch.Tensor]]
"""The teacher's primary output and its tapped layers' outputs for one batch."""


def _adapter(student: torch.Tensor, teacher: torch.Tensor) -> nn.Module:
    """1x1 conv for (N, C, H, W) maps, linear over the last dimension otherwise."""
    if student.dim() == 4 and teacher.dim() == 4:
        return nn.Conv2d(student.shape[1], teacher.shape[1], kernel_size=1, bias=False)
    return nn.Linear(student.shape[-1], teacher.shape[-1], bias=False)


def layer_names(config: Combined | None) -> tuple[list[str], list[str]]:
    """(student layers, teacher layers) whose outputs the loss needs."""
    parts = [p for p in ((config.hint, config.attention) if config else ()) if p is not None]
    return [s for p in parts for s in p.layers], [t for p in parts for t in p.layers.values()]


class Teacher:
    """Runs the frozen teacher (eval mode, no grad) and taps its named layers.

    Args:
        model: the teacher.
        layers: names of the layers whose outputs the loss needs.
    """

    def __init__(self, model: nn.Module, layers: list[str]):
        self.model = model
        self.tap = FeatureTap(model, layers, "teacher")
        self.cache_size = 0
        self._cache: dict[bytes, TeacherOutput] = {}
        self._misses = 0

    def cache(self, batches: int) -> None:
        """Keep the outputs of up to ``batches`` distinct batches and reuse them when the same
        inputs come again (recognized by content): data that repeats its batches runs the
        teacher once per batch, not once per epoch. When as many batches again bring no hit
        (the data never repeats), the cache is dropped."""
        self.cache_size = batches

    @torch.no_grad()
    def __call__(self, batch: Batch) -> TeacherOutput:
        key = batch.fingerprint() if self.cache_size else None
        if key is not None and key in self._cache:
            return self._cache[key]
        result = primary_output(run_model(self.model, batch)), self.tap.take()
        if key is not None:
            self._remember(key, result)
        return result

    def _remember(self, key: bytes, result: TeacherOutput) -> None:
        if len(self._cache) < self.cache_size:
            self._cache[key] = result
            return
        self._misses += 1
        if self._misses >= self.cache_size:  # a whole epoch without a hit: the batches differ each time
            self._cache.clear()
            self.cache_size = 0

    def close(self) -> None:
        """Remove the hooks and drop the cache."""
        self.tap.close()
        self._cache.clear()


class Objective(nn.Module):
    """``loss = task/KD term + Σ weight · feature terms`` for one batch.

    Args:
        student: the model being trained (kept as the same object).
        config: the distillation config (``None``: cross-entropy on the targets only).
    """

    def __init__(self, student: nn.Module, config: Combined | None):
        super().__init__()
        self.student = student
        self.config = config
        self.adapters = nn.ModuleDict()
        self.tap = FeatureTap(student, layer_names(config)[0], "student")

    def prepare(self, batch: Batch, teacher: Teacher | None) -> None:
        """Check the loss can be computed on ``batch`` and build the hint adapters.

        Raises:
            DataError: without targets and without a teacher.
            UnsupportedModelError: when student and teacher outputs do not match.
        """
        if teacher is None and batch.target is None:
            raise DataError(
                "the training data has no targets and no teacher was given: give (inputs, targets) "
                "batches, or a teacher to distill from"
            )
        flags = [(m, m.training) for m in self.student.modules()]
        self.student.eval()  # no batch-norm statistics updated by this probe
        try:
            self._probe(batch, teacher)
        finally:
            for module, training in flags:
                module.training = training

    def _probe(self, batch: Batch, teacher: Teacher | None) -> None:
        with torch.no_grad():
            out = primary_output(run_model(self.student, batch))
            feats = self.tap.take()
            if teacher is None:
                return
            t_out, t_feats = teacher(batch)
            if self.config and self.config.hint:
                for s_name, t_name in self.config.hint.layers.items():
                    adapter = _adapter(feats[s_name], t_feats[t_name]) if self.config.hint.adapter else nn.Identity()
                    self.adapters[s_name.replace(".", "__")] = adapter.to(feats[s_name].device)
            self._loss(out, feats, t_out, t_feats, batch.target)

    def forward(self, batch: Batch, teacher_out: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, student output)`` for ``batch``; ``teacher_out`` is `Teacher`'s result."""
        out = primary_output(run_model(self.student, batch))
        feats = self.tap.take()
        t_out, t_feats = teacher_out if teacher_out is not None else (None, {})
        return self._loss(out, feats, t_out, t_feats, batch.target), out

    def _loss(
        self,
        out: torch.Tensor,
        feats: dict[str, torch.Tensor],
        t_out: torch.Tensor | None,
        t_feats: dict[str, torch.Tensor],
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        c = self.config if t_out is not None else None
        loss = out.new_zeros(())
        if c and c.kd:
            loss = hinton_loss(out.float(), t_out.float(), target, c.kd.temperature, c.kd.alpha)
        elif target is not None and not (c and c.embedding):
            loss = task_loss(out.float(), target)
        if c and c.embedding:
            loss = loss + c.embedding.weight * embedding_loss(out.float(), t_out.float(), c.embedding.loss)
        if c and c.hint:
            terms = [
                hint_loss(self.adapters[s.replace(".", "__")](feats[s]).float(), t_feats[t].float())
                for s, t in c.hint.layers.items()
            ]
            loss = loss + c.hint.weight * torch.stack(terms).sum()
        if c and c.attention:
            terms = [
                attention_loss(feats[s].float(), t_feats[t].float(), c.attention.p)
                for s, t in c.attention.layers.items()
            ]
            loss = loss + c.attention.weight * torch.stack(terms).sum()
        return loss

    def close(self) -> None:
        """Remove the feature hooks."""
        self.tap.close()


class _Provider:
    """The distillation objectives `slimkit.training` trains with when given a teacher."""

    def config(self, distill: str | Config | dict[str, Any] | None) -> Combined:
        """The `Combined` config of a method name, config object or ``{"method": ..., ...}`` (default ``kd``)."""
        from slimkit.core.registry import resolve

        if distill is None:
            distill = "kd"
        if isinstance(distill, dict):
            options = dict(distill)
            _, config = resolve("distill", options.pop("method", "kd"), options)
        else:
            _, config = resolve("distill", distill, {})
        return as_combined(config)

    def build(self, student: nn.Module, teacher: nn.Module, config: Combined) -> tuple[Objective, Teacher]:
        """The objective the trainer optimizes and the runner of the frozen teacher."""
        return Objective(student, config), Teacher(teacher, layer_names(config)[1])


register_teacher_objectives(_Provider())
