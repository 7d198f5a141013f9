"""How many values share one quantization scale: one value object for every config.

``Granularity`` is per tensor (one scale), per channel (one per output channel / row), per
group of ``n`` consecutive input columns, or, for activations, per token (one per row of the
layer's input). Configs spell it ``"tensor"``, ``"channel"``, ``"group:128"`` (also
``{"group": 128}``, or a bare group size; ``None`` means per channel, the meaning
``group_size=None`` had) or ``"token"``, and record it in that string form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

Kind = Literal["tensor", "channel", "group", "token"]


@dataclass(frozen=True)
class Granularity:
    """One scale per tensor, per output channel, per group of ``size`` input columns, or per token.

    Attributes:
        kind: ``"tensor"``, ``"channel"``, ``"group"`` or ``"token"``.
        size: the group's length (``"group"`` only).
    """

    kind: Kind
    size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("tensor", "channel", "group", "token"):
            raise ValueError(f"granularity must be 'tensor', 'channel', 'group:N' or 'token', got {self.kind!r}")
        if (self.kind == "group") != (self.size is not None):
            raise ValueError("a group granularity needs its size ('group:128'); tensor and channel take none")
        if self.size is not None and self.size < 1:
            raise ValueError(f"a group holds at least one column, got group:{self.size}")

    @classmethod
    def parse(cls, value: Any) -> Granularity:
        """Read ``"tensor"``, ``"channel"``, ``"group:N"``, ``{"group": N}``, ``N`` or ``None``."""
        if isinstance(value, Granularity):
            return value
        if value is None:
            return cls("channel")
        if isinstance(value, bool):
            raise ValueError(f"granularity must be 'tensor', 'channel' or 'group:N', got {value!r}")
        if isinstance(value, int):
            if value < 1:
                raise ValueError(f"a group size (group_size, 'group:N') is at least 1, got {value}")
            return cls("group", value)
        if isinstance(value, dict) and list(value) == ["group"]:
            return cls("group", int(value["group"]))
        if isinstance(value, str):
            kind, _, size = value.strip().partition(":")
            if kind == "group" and size.strip().isdigit():
                return cls("group", int(size))
            if not size:
                return cls(kind)  # type: ignore[arg-type]
        raise ValueError(f"granularity must be 'tensor', 'channel' or 'group:N' (e.g. 'group:128'), got {value!r}")

    @property
    def group_size(self) -> int | None:
        """The group length, ``None`` unless grouped (what the packing kernels take)."""
        return self.size

    def __str__(self) -> str:
        return f"group:{self.size}" if self.kind == "group" else self.kind


def _weight_granularity(value: Any) -> Granularity:
    granularity = Granularity.parse(value)
    if granularity.kind not in ("channel", "group"):
        raise ValueError(f"packed weights take 'channel' or 'group:N' granularity, not {str(granularity)!r}")
    return granularity


WeightGranularity = Annotated[
    Granularity,
    BeforeValidator(_weight_granularity),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(channel|group:\d+)$"}),
]
"""A config field holding a weight granularity: ``"channel"`` or ``"group:N"``."""


def _activation_granularity(value: Any) -> Granularity:
    if isinstance(value, bool):  # the old ``per_token`` switch
        return Granularity("token" if value else "tensor")
    granularity = Granularity.parse(value)
    if granularity.kind not in ("tensor", "token"):
        raise ValueError(f"activations take 'token' or 'tensor' granularity, not {str(granularity)!r}")
    return granularity


ActivationGranularity = Annotated[
    Granularity,
    BeforeValidator(_activation_granularity),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "enum": ["token", "tensor"]}),
]
"""A config field holding an activation granularity: ``"token"`` or ``"tensor"``."""


class GroupedWeights:
    """Mixin of the configs with a ``granularity`` field: ``group_size`` read from it (the old
    field's spelling, still accepted by those configs' ``renamed``)."""

    @property
    def group_size(self) -> int | None:
        """Input columns per scale, ``None`` for one scale per output channel."""
        return self.granularity.group_size  # type: ignore[attr-defined]
