"""One config per distillation method, and `Combined` to weight several together."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError
from slimkit.core.tables import Table


class KD(Config):
    """Hinton logit distillation."""

    method = "kd"
    temperature: float = Field(4.0, gt=0)
    """softmax temperature T (the loss is scaled by T²)."""
    alpha: float = Field(0.9, ge=0, le=1)
    """weight of the soft (teacher) term; ``1 - alpha`` goes to the hard labels."""


class Hints(Config):
    """FitNets feature hints: ``student layer -> teacher layer``, through a learned adapter
    (1x1 conv for feature maps, linear otherwise) trained with the student.
    """

    method = "hint"
    layers: dict[str, str] = Field(min_length=1)
    """student module name -> teacher module name."""
    weight: float = Field(1.0, ge=0)
    """weight of the summed hint losses."""
    adapter: bool = True
    """learn the adapter; ``False`` compares the features directly (same shapes needed), e.g. a
    transformer student's hidden states with its teacher's."""


class Attention(Config):
    """Attention transfer between the spatial attention maps of named layers."""

    method = "attention"
    layers: dict[str, str] = Field(min_length=1)
    """student module name -> teacher module name."""
    weight: float = Field(500.0, ge=0)
    """weight of the summed losses (β/2 with the paper's β = 1000)."""
    p: float = Field(2.0, gt=0)
    """exponent of the attention map."""


class Embedding(Config):
    """Embedding distillation for representation models (outputs compared directly)."""

    method = "embedding"
    loss: Literal["cosine", "mse"] = "cosine"
    """``"cosine"`` (1 - cosine) or ``"mse"``."""
    weight: float = Field(1.0, ge=0)
    """weight of the term."""


class Combined(Config):
    """Several losses at once, e.g. ``Combined(kd=KD(), hint=Hints(layers={...}))``.

    The KD term (if any) mixes in the hard labels; without it, cross-entropy on the
    targets is added when batches have targets and no embedding term is used.
    """

    method = "combined"
    kd: KD | None = None
    hint: Hints | None = None
    attention: Attention | None = None
    embedding: Embedding | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Combined:
        if not any((self.kd, self.hint, self.attention, self.embedding)):
            raise ValueError("give at least one of kd, hint, attention, embedding")
        return self


DistillConfig = KD | Hints | Attention | Embedding | Combined
CONFIGS: Table[type[Config]] = Table(
    "distillation loss",
    [("kd", KD), ("hint", Hints), ("fitnets", Hints), ("attention", Attention), ("embedding", Embedding),
     ("combined", Combined)],
    plural="distillation losses",
)  # fmt: skip
"""Distillation losses by name (``fitnets`` is an alias of ``hint``)."""


def as_combined(config: Config) -> Combined:
    """Any distillation config as a `Combined` one."""
    if isinstance(config, Combined):
        return config
    fields = {KD: "kd", Hints: "hint", Attention: "attention", Embedding: "embedding"}
    if type(config) not in fields:
        raise InvalidConfigError(CONFIGS.refusal(config.method or type(config).__name__))
    return Combined(**{fields[type(config)]: config})
