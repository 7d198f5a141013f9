"""Named tables: the one way a name in a config, recipe or CLI flag picks an object.

Pruning importances, int8-static observers, quantization layer methods and distillation
losses are each a `Table`: registering, looking up, listing and refusing an unknown name
work the same everywhere, and a value registered under several names has one canonical
name (the first) and aliases. The method registry (`slimkit.core.registry`) keys methods by
their config class the same way, names being aliases of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from slimkit.core.errors import InvalidConfigError

T = TypeVar("T")


class Table(dict[str, T]):
    """``name -> object`` with a clear refusal (a dict, so it reads and copies like one).

    Args:
        what: what an entry is, for messages (``"importance"``, ``"observer"``).
        entries: initial ``(name, value)`` pairs.
        hint: how to add one, appended to the refusal of an unknown name.
        plural: ``what`` in the plural (default: with an ``s``).
    """

    def __init__(
        self, what: str, entries: Iterable[tuple[str, T]] = (), hint: str = "", plural: str | None = None
    ) -> None:
        super().__init__()
        self.what, self.hint, self.plural = what, hint, plural or f"{what}s"
        for name, value in entries:
            self.register(name, value)

    def register(self, name: str, value: T, aliases: Iterable[str] = ()) -> T:
        """Add ``value`` under ``name`` (and ``aliases``); a later registration of a name replaces it.

        Raises:
            InvalidConfigError: an empty or non-string name.
        """
        for key in (name, *aliases):
            if not isinstance(key, str) or not key:
                raise InvalidConfigError(f"a registered {self.what} needs a non-empty name, got {key!r}")
            self[key] = value
        return value

    def refusal(self, name: Any) -> str:
        """The message for a name that is not registered: the valid names and how to add one."""
        valid = ", ".join(self) or "none registered"
        return f"unknown {self.what} {name!r}; valid {self.plural}: {valid}" + (f" ({self.hint})" if self.hint else "")

    def lookup(self, name: str) -> T:
        """The value registered under ``name``.

        Raises:
            InvalidConfigError: when nothing is (the message lists the valid names).
        """
        if name not in self:
            raise InvalidConfigError(self.refusal(name))
        return self[name]

    def check(self, name: str) -> str:
        """``name`` if registered, for pydantic validators.

        Raises:
            ValueError: naming the registered ones (pydantic reports it as a field error).
        """
        if name not in self:
            raise ValueError(self.refusal(name))
        return name

    def name_of(self, value: T) -> str | None:
        """The canonical (first registered) name of ``value``, or None."""
        return next((name for name, entry in self.items() if entry is value), None)

    def copy(self) -> Table[T]:
        """A table of the same entries (registering into it leaves this one alone)."""
        return Table(self.what, self.items(), self.hint, self.plural)

    def aliases(self) -> dict[str, str]:
        """``{alias: canonical name}`` for values registered under several names."""
        return {name: canonical for name, entry in self.items() if (canonical := self.name_of(entry)) != name}


__all__ = ["Table"]
