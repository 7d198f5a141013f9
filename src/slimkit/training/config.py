"""`TrainConfig`: every option of the shared fine-tuning `Trainer`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, field_validator
from torch import nn

from slimkit.core.config import Config


class TrainConfig(Config):
    """Options of one training run.

    Attributes:
        epochs: passes over the data (ignored when ``steps`` is set).
        steps: total optimizer steps; the data is cycled epoch after epoch until reached.
        lr: peak learning rate.
        optimizer: ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        momentum: SGD momentum.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        schedule: ``"cosine"`` (to zero), ``"onecycle"`` (warm up from lr/25, anneal to
            lr/25e4) or ``"constant"``.
        warmup_steps: linear warm-up steps (``onecycle`` uses 30% of the run when 0).
        grad_clip: clip the global gradient norm to this value.
        patience: stop after this many evaluations without improvement.
        shuffle: shuffle the data each epoch (in-memory data only), seeded by seed + epoch.
        checkpoint_dir: folder for the last and best checkpoints (safetensors + JSON).
        resume: continue from the checkpoint in ``checkpoint_dir``.
        cache_teacher: keep the teacher's outputs for each batch of the first epoch and
            reuse them later (memory: one epoch of the outputs the loss uses). Pays when
            the data repeats its batches, in any order: a list of batches,
            `SentenceBatches`, `TensorData` with ``shuffle=False``; not with random
            augmentation. The cache is dropped after an epoch without a hit.
        amp: mixed precision on CUDA (bf16 when supported, else fp16 with loss scaling).
        seed: seeds torch, numpy and random; also the data order.
        quiet: no progress bar.
        metric: ``"accuracy"`` or ``"fidelity"`` (cosine to the teacher); by default
            accuracy when the evaluation data has targets, else fidelity.
        eval_limit: evaluate on at most this many batches.
        find_unused_parameters: passed to DistributedDataParallel.
    """

    epochs: int = Field(1, ge=1)
    steps: int | None = Field(None, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    patience: int | None = Field(None, ge=1)
    shuffle: bool = True
    checkpoint_dir: str | None = None
    resume: bool = False
    cache_teacher: bool = False
    amp: bool = False
    seed: int = 0
    quiet: bool = True
    metric: Literal["accuracy", "fidelity"] | None = None
    eval_limit: int | None = Field(None, ge=1)
    find_unused_parameters: bool = False


class Finetune(Config):
    """How fine-tuning runs, in the one shape every fine-tuning option takes: QAT's, separable's,
    gradual pruning's ``finetune:`` field and the recipe's ``finetune`` stage.

    Attributes:
        epochs: passes over the training data (0: no fine-tuning).
        lr: peak learning rate.
        distill: ``false``: the data's task loss; ``true``: distill from the model as it was
            before the method, with the default loss; a mapping: that distillation method's
            options, e.g. ``{method: kd, temperature: 4}``.
    """

    epochs: int = Field(1, ge=0, le=10_000)
    lr: float = Field(1e-3, gt=0, le=10)
    distill: bool | dict[str, Any] = False

    @field_validator("distill", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    @property
    def distills(self) -> bool:
        """Whether training distills from the model before the method."""
        return self.distill is not False

    def run(self, model: nn.Module, data: Iterable[Any], original: nn.Module | None, **options: Any) -> nn.Module:
        """Fine-tune ``model`` on ``data`` as configured (``original`` is the teacher when distilling).

        ``options`` are `finetune`'s (device, seed, eval_data, ...). Returns the model unchanged
        when ``epochs`` is 0.
        """
        from slimkit.training import finetune

        if not self.epochs:
            return model
        teacher = original if self.distills else None
        distill = self.distill if isinstance(self.distill, dict) and self.distill else None
        return finetune(model, data, epochs=self.epochs, lr=self.lr, teacher=teacher, distill=distill, **options)
