"""`TrainConfig`: every option of the shared fine-tuning `Trainer`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field, field_validator
from torch import nn

from slimkit.core.config import Config


class TrainConfig(Config):
    """Options of one training run."""

    epochs: int = Field(1, ge=1)
    """passes over the data (ignored when ``steps`` is set)."""
    steps: int | None = Field(None, ge=1)
    """total optimizer steps; the data is cycled epoch after epoch until reached."""
    lr: float = Field(1e-3, gt=0)
    """peak learning rate."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """``"adamw"`` or ``"sgd"`` (with ``momentum``)."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum."""
    weight_decay: float = Field(0.0, ge=0)
    """decoupled (AdamW) or L2 (SGD) weight decay."""
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    """``"cosine"`` (to zero), ``"onecycle"`` (warm up from lr/25, anneal to lr/25e4) or
    ``"constant"``."""
    warmup_steps: int = Field(0, ge=0)
    """linear warm-up steps (``onecycle`` uses 30% of the run when 0)."""
    grad_clip: float | None = Field(None, gt=0)
    """clip the global gradient norm to this value."""
    patience: int | None = Field(None, ge=1)
    """stop after this many evaluations without improvement."""
    shuffle: bool = True
    """shuffle the data each epoch (in-memory data only), seeded by seed + epoch."""
    checkpoint_dir: str | None = None
    """folder for the last and best checkpoints (safetensors + JSON)."""
    resume: bool = False
    """continue from the checkpoint in ``checkpoint_dir``."""
    cache_teacher: bool = False
    """keep the teacher's outputs for each batch of the first epoch and reuse them later (memory:
    one epoch of the outputs the loss uses). Pays when the data repeats its batches, in any
    order: a list of batches, `SentenceBatches`, `TensorData` with ``shuffle=False``; not with
    random augmentation. The cache is dropped after an epoch without a hit."""
    amp: bool = False
    """mixed precision on CUDA (bf16 when supported, else fp16 with loss scaling)."""
    seed: int = 0
    """seeds torch, numpy and random; also the data order."""
    quiet: bool = True
    """no progress bar."""
    metric: Literal["accuracy", "fidelity"] | None = None
    """``"accuracy"`` or ``"fidelity"`` (cosine to the teacher); by default accuracy when the
    evaluation data has targets, else fidelity."""
    eval_limit: int | None = Field(None, ge=1)
    """evaluate on at most this many batches."""
    find_unused_parameters: bool = False
    """passed to DistributedDataParallel."""


class Finetune(Config):
    """How fine-tuning runs, in the one shape every fine-tuning option takes: QAT's, separable's,
    gradual pruning's ``finetune:`` field and the recipe's ``finetune`` stage.
    """

    epochs: int = Field(1, ge=0, le=10_000)
    """passes over the training data (0: no fine-tuning)."""
    lr: float = Field(1e-3, gt=0, le=10)
    """peak learning rate."""
    distill: bool | dict[str, Any] = False
    """``false``: the data's task loss; ``true``: distill from the model as it was before the
    method, with the default loss; a mapping: that distillation method's options, e.g.
    ``{method: kd, temperature: 4}``."""

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
