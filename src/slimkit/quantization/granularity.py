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
SPELLINGS = "'tensor', 'channel', 'group:N' (e.g. 'group:128') or 'token'"


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
            raise ValueError(f"granularity must be {SPELLINGS}, got {self.kind!r}")
        if (self.kind == "group") != (self.size is not None):
            raise ValueError("a group granularity needs its size ('group:128'); tensor and channel take none")
        if self.size is not None and self.size < 1:
            raise ValueError(f"a group holds at least one column, got group:{self.size}")

    @classmethod
    def parse(cls, value: Any) -> Granularity:
        """Read ``"tensor"``, ``"channel"``, ``"group:N"``, ``{"group": N}``, ``N``, ``"token"`` or
        ``None`` (per channel)."""
        if isinstance(value, Granularity):
            return value
        if value is None:
            return cls("channel")
        if isinstance(value, int) and not isinstance(value, bool):
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
        raise ValueError(f"granularity must be {SPELLINGS}, got {value!r}")

    @property
    def group_size(self) -> int | None:
        """The group length, ``None`` unless grouped (what the packing kernels take)."""
        return self.size

    def __str__(self) -> str:
        return f"group:{self.size}" if self.kind == "group" else self.kind


def granularity_field(kinds: tuple[Kind, ...], what: str, legacy: dict[bool, Kind] | None = None) -> Any:
    """The annotated type of a config field holding a `Granularity` of one of ``kinds``
    (``legacy`` reads an old boolean switch: ``{True: "token", False: "tensor"}``)."""

    def check(value: Any) -> Granularity:
        if legacy is not None and isinstance(value, bool):
            return Granularity(legacy[value])
        granularity = Granularity.parse(value)
        if granularity.kind not in kinds:
            spelled = " or ".join("'group:N'" if k == "group" else repr(k) for k in kinds)
            raise ValueError(f"{what} take {spelled} granularity, not {str(granularity)!r}")
        return granularity

    spellings = ["group:\\d+" if k == "group" else k for k in kinds]
    return Annotated[
        Granularity,
        BeforeValidator(check),
        PlainSerializer(str, return_type=str),
        WithJsonSchema({"type": "string", "pattern": f"^({'|'.join(spellings)})$"}),
    ]


WeightGranularity = granularity_field(("channel", "group"), "packed weights")
"""A config field holding a weight granularity: ``"channel"`` or ``"group:N"``."""
ActivationGranularity = granularity_field(("token", "tensor"), "activations", {True: "token", False: "tensor"})
"""A config field holding an activation granularity: ``"token"`` or ``"tensor"`` (a bool is
the old ``per_token`` switch)."""


class GroupedWeights:
    """Mixin of the configs with a ``granularity`` field: ``group_size`` read from it (the old
    field's spelling, still accepted by those configs' ``renamed``)."""

    @property
    def group_size(self) -> int | None:
        """Input columns per scale, ``None`` for one scale per output channel."""
        return self.granularity.group_size  # type: ignore[attr-defined]
