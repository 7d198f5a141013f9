"""Module walking with include/exclude glob patterns over module names."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from slimkit.core.errors import InvalidConfigError


def _patterns(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    patterns = tuple(value)
    if not all(isinstance(p, str) for p in patterns):
        raise InvalidConfigError("include/exclude must be glob patterns (strings)")
    return patterns


@dataclass(frozen=True)
class Selector:
    """Which module names a verb may touch: matching any ``include`` (all when empty) and no
    ``exclude`` pattern. Patterns are shell globs over dotted names, e.g. ``"encoder.*.attention.*"``.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None) -> Selector:
        """Build from a pattern, a list of patterns or ``None``."""
        return cls(_patterns(include), _patterns(exclude))

    def __call__(self, name: str) -> bool:
        included = not self.include or any(fnmatchcase(name, p) for p in self.include)
        return included and not any(fnmatchcase(name, p) for p in self.exclude)


def select_modules(
    model: nn.Module,
    selector: Selector | None = None,
    types: type[nn.Module] | tuple[type[nn.Module], ...] | None = None,
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(name, module)`` for submodules that match ``selector`` and ``types``."""
    selector = selector or Selector()
    for name, module in model.named_modules():
        if name and selector(name) and (types is None or isinstance(module, types)):
            yield name, module


def check_matches(model: nn.Module, selector: Selector) -> None:
    """Raise `InvalidConfigError` when an include or exclude pattern matches no module (likely a typo)."""
    names = [n for n, _ in model.named_modules() if n]
    for kind, patterns in (("include", selector.include), ("exclude", selector.exclude)):
        for pattern in patterns:
            if not any(fnmatchcase(n, pattern) for n in names):
                sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                raise InvalidConfigError(
                    f"{kind} pattern {pattern!r} matches no module; module names look like: {sample}"
                )


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` with ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
