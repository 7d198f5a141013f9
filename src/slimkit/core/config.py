"""The config base class every method's options derive from."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slimkit.core.errors import InvalidConfigError

Bits = Annotated[int, Field(ge=2, le=8)]
"""A bit width, 2..8 (config fields and tuples of choices)."""
Fraction = Annotated[float, Field(ge=0, lt=1)]
"""A fraction in [0, 1) (0: the stage is skipped)."""
OpenFraction = Annotated[float, Field(gt=0, lt=1)]
"""A fraction in (0, 1)."""


def sorted_unique(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``values`` sorted, each once (a set of choices given as a tuple)."""
    return tuple(sorted(set(values)))


class Config(BaseModel):
    """Base of all method configs: validated, immutable, unknown fields rejected.

    Subclasses set ``method`` to their registered name and declare fields with
    defaults, so ``Cfg()`` is always a sensible starting point. A field's meaning is the
    docstring under it (pydantic's attribute docstrings, shown by ``model_json_schema()`` and
    the recipe reference); a subclass that only changes a default keeps its base's text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, use_attribute_docstrings=True)
    method: ClassVar[str] = ""
    renamed: ClassVar[dict[str, str]] = {}
    """Old field name -> new one: the old spelling still works for one release, with a warning."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        inherited: dict[str, str] = {}
        for base in cls.__mro__[1:]:
            for name, field in getattr(base, "model_fields", {}).items():
                if field.description:
                    inherited.setdefault(name, field.description)
        undocumented = [name for name, field in cls.model_fields.items() if not field.description and name in inherited]
        for name in undocumented:
            cls.model_fields[name].description = inherited[name]
        if undocumented:
            cls.model_rebuild(force=True)

    @model_validator(mode="before")
    @classmethod
    def _renamed_fields(cls, raw: Any) -> Any:
        """Accept a renamed field's old spelling (a `DeprecationWarning` says the new one; a
        dotted new name, ``"finetune.epochs"``, moves it into a nested config), and complete a
        nested config given as a mapping from the field's own default (so ``finetune={"epochs":
        5}`` keeps the method's default learning rate)."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        for old, new in cls.renamed.items():
            if old in raw:
                warnings.warn(
                    f"{cls.method or cls.__name__}: option {old!r} is now {new!r}; "
                    "the old name goes in the next release",
                    DeprecationWarning,
                    stacklevel=2,
                )
                head, _, tail = new.partition(".")
                if tail:
                    nested = raw.get(head)
                    raw[head] = {**(nested if isinstance(nested, dict) else {}), tail: raw.pop(old)}
                else:
                    raw.setdefault(new, raw.pop(old))
        for name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel) and isinstance(raw.get(name), dict):
                raw[name] = {**default.model_dump(exclude_defaults=True), **raw[name]}
        return raw

    @classmethod
    def build(cls, **options: Any) -> Config:
        """Validate ``options`` into a config, raising `InvalidConfigError` on bad values."""
        try:
            return cls(**options)
        except ValidationError as exc:
            raise InvalidConfigError(describe_validation_error(cls, exc)) from None

    def with_options(self, **options: Any) -> Config:
        """A copy with some fields replaced, validated like `build`."""
        return type(self).build(**{**self.model_dump(), **options})


def describe_validation_error(cls: type[BaseModel], exc: ValidationError) -> str:
    """One readable line per problem, naming the field and the valid fields when unknown."""
    name = getattr(cls, "method", "") or cls.__name__
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            valid = ", ".join(cls.model_fields) or "none"
            problems.append(f"unknown option {field!r} (valid options: {valid})")
        else:
            problems.append(f"{field}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid options for {name!r}: " + "; ".join(problems)


@dataclass(frozen=True)
class FieldDoc:
    """One option of a config, as the recipe reference and ``slimkit methods`` show it.

    Attributes:
        name: the field.
        type: its annotation, readable (``int | None``).
        default: its default as JSON, or ``required``.
        meaning: the docstring under the field, on one line.
    """

    name: str
    type: str
    default: str
    meaning: str


def field_docs(cls: type[BaseModel]) -> list[FieldDoc]:
    """Every field of ``cls`` with its type, default and the docstring written under it."""
    docs = []
    for name, info in cls.model_fields.items():
        annotation = info.annotation
        kind = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
        default = (
            "required" if info.is_required() else json.dumps(info.get_default(call_default_factory=True), default=str)
        )
        docs.append(FieldDoc(name, kind, default, " ".join((info.description or "").split())))
    return docs
