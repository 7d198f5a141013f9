"""The config base class every method's options derive from."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from slimkit.core.errors import InvalidConfigError


class Config(BaseModel):
    """Base of all method configs: validated, immutable, unknown fields rejected.

    Subclasses set ``method`` to their registered name and declare fields with
    defaults, so ``Cfg()`` is always a sensible starting point.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, use_attribute_docstrings=True)
    method: ClassVar[str] = ""

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
