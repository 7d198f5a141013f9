"""The record a model carries: where it came from and which transforms it went through."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

_ATTR = "_slimkit_record"
TRAINING = "train"
"""The verb of training transforms (fine-tuning, distillation inside `compress`): they change
values only, so loading a saved model skips them (the weights already hold their effect)."""


@dataclass(frozen=True)
class Transform:
    """One applied transform: verb, registered method name, its config and rebuild state."""

    verb: str
    method: str
    config: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    changed: tuple[str, ...] = ()
    """Modules the transform changed (measured by `core.registry.apply`)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Modules it left alone, with the reason for each."""

    @property
    def structural(self) -> bool:
        """False for a values-only record (training): `core.registry.replay` skips it."""
        return self.verb != TRAINING

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        raw = asdict(self)
        raw["changed"] = list(self.changed)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Transform:
        """Inverse of `to_dict`."""
        return cls(
            raw["verb"],
            raw["method"],
            dict(raw.get("config", {})),
            dict(raw.get("state", {})),
            tuple(raw.get("changed", ())),
            dict(raw.get("skipped", {})),
        )


@dataclass
class Record:
    """A model's provenance.

    Attributes:
        source: the model spec that rebuilds its original architecture
            (``example:digits-cnn``, ``pkg.mod:factory``, ``hf:DIR``), if known.
        transforms: the transforms applied since, in order.
    """

    source: str | None = None
    transforms: list[Transform] = field(default_factory=list)


def get_record(model: nn.Module) -> Record:
    """The model's record (an empty one if it has none yet)."""
    return getattr(model, _ATTR, None) or Record()


def set_source(model: nn.Module, source: str) -> nn.Module:
    """Mark ``model`` as built from spec ``source``; returns the model."""
    object.__setattr__(model, _ATTR, Record(source, list(get_record(model).transforms)))
    return model


def append_transform(model: nn.Module, transform: Transform) -> nn.Module:
    """Add ``transform`` to the model's record (a new record object, so copies don't share it)."""
    old = get_record(model)
    object.__setattr__(model, _ATTR, Record(old.source, [*old.transforms, transform]))
    return model
