"""Unlabelled English sentences from the docstrings of Python's standard library.

A transfer set for distilling the ``minilm`` example: several thousand real prose sentences,
built in about a second from the running interpreter, with no download. They are disjoint
from the shipped ``sentences`` data (different source; exact duplicates are removed), so the
held-out test sentences stay held out.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType

from slimkit.models.minilm import build_sentences, read_sentences

_SKIP = frozenset(
    {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "ensurepip", "venv", "webbrowser"}
)
"""Modules with side effects on import (a browser, a window, printed text) or none of interest."""


def _quiet_import(name: str) -> ModuleType | None:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception:  # noqa: BLE001 -- platform-specific modules fail to import; skip them
        return None


def _public(namespace: dict) -> Iterator[object]:
    return (namespace[key] for key in sorted(namespace) if not key.startswith("_"))


def _docstrings(module: ModuleType) -> Iterator[str]:
    """The module's docstring, then its own public functions', classes' and methods'."""
    yield inspect.getdoc(module) or ""
    for obj in _public(vars(module)):
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        yield inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            yield from (inspect.getdoc(m) or "" for m in _public(vars(obj)) if callable(m))


def docstring_sentences() -> list[str]:
    """Clean prose sentences of the standard library's docstrings, minus the shipped sentences.

    The list is deterministic for a given Python version (modules in sorted order).
    """
    modules = (_quiet_import(n) for n in sorted(sys.stdlib_module_names) if n not in _SKIP and n[0] != "_")
    texts = (doc for module in modules if module is not None for doc in _docstrings(module))
    shipped = set(read_sentences())
    return [s for s in build_sentences(texts) if s not in shipped]
