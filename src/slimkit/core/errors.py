"""Error types. Every message is written for the user: what was wrong and what to do."""

from __future__ import annotations

import importlib
from types import ModuleType


class SlimkitError(Exception):
    """Base class of every error slimkit raises on purpose (bad input, not a bug)."""


class InvalidConfigError(SlimkitError, ValueError):
    """A method name, option, spec or config value is not valid."""


class UnsupportedModelError(SlimkitError):
    """The model (or one of its layers) cannot be handled by the requested operation."""


class DataError(SlimkitError, ValueError):
    """Data is empty, malformed, non-finite or does not fit the model."""


class UnsafeFileError(SlimkitError):
    """A file would execute code when loaded, or is corrupt/truncated."""


class MissingExtraError(SlimkitError, ImportError):
    """An optional dependency is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or raise `MissingExtraError` naming the extra.

    Args:
        module: importable module name, e.g. ``"onnxruntime"``.
        extra: the slimkit extra that installs it, e.g. ``"onnx"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is not installed; install it with: pip install 'slimkit[{extra}]'"
        ) from exc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
