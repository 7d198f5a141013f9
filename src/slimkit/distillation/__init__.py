"""Knowledge distillation: the ``sk.distill`` verb, its losses and students.

``distill`` is the verb; ``shrink`` builds a student from a teacher. The trainer and
``finetune`` live in `slimkit.training` (re-exported here); importing this package plugs the
distillation objectives into that trainer, so ``finetune(teacher=...)`` distills.
"""

from __future__ import annotations

from slimkit.distillation import objective as _objectives  # noqa: F401 (plugs distillation into the trainer)
from slimkit.distillation.methods import KD, Attention, Combined, Embedding, Hints
from slimkit.distillation.students import Shrink, layer_hints, layer_pairs, shrink
from slimkit.distillation.verb import distill
from slimkit.training import NonFiniteLossError, StopTraining, TrainConfig, Trainer, TrainEvent, finetune

__all__ = [
    "KD",
    "Attention",
    "Combined",
    "Embedding",
    "Hints",
    "NonFiniteLossError",
    "Shrink",
    "StopTraining",
    "TrainConfig",
    "TrainEvent",
    "Trainer",
    "distill",
    "finetune",
    "layer_hints",
    "layer_pairs",
    "shrink",
]
