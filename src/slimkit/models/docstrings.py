"""Unlabelled English sentences from the docstrings of Python's standard library and packages.

A transfer set for distilling the ``minilm`` example: thousands of real prose sentences,
built from the running interpreter and the installed packages' sources, with no download.
They are disjoint from the shipped ``sentences`` data (different source; exact duplicates
are removed), so the held-out test sentences stay held out.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import io
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

from slimkit.core.errors import DataError
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


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _package_root(name: str) -> Path:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise DataError(f"package {name!r} is not installed: install it or leave it out of packages=")
    return Path(spec.origin).parent


def _source_docstrings(root: Path) -> Iterator[str]:
    """Docstrings of the modules, classes and functions of the package in ``root``.

    The sources are parsed, not imported (no side effects, no import cost); test files and
    folders are skipped, so are files that do not parse.
    """
    for path in sorted(root.rglob("*.py")):
        if any(part.startswith("test") for part in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        documented = (node for node in ast.walk(tree) if isinstance(node, _DOCUMENTED))
        yield from filter(None, (ast.get_docstring(node) for node in documented))


def docstring_sentences(packages: Iterable[str] = ()) -> list[str]:
    """Clean prose sentences of the standard library's docstrings, minus the shipped sentences.

    Args:
        packages: installed packages whose docstrings are added after the standard
            library's, read from their sources (``("numpy", "torch")`` adds ~16,000).

    The list is deterministic for given Python and package versions (modules in sorted order).

    Raises:
        DataError: when one of ``packages`` is not installed.
    """
    roots = [_source_docstrings(_package_root(name)) for name in packages]
    modules = (_quiet_import(n) for n in sorted(sys.stdlib_module_names) if n not in _SKIP and n[0] != "_")
    stdlib = (doc for module in modules if module is not None for doc in _docstrings(module))
    texts = (doc for source in (stdlib, *roots) for doc in source)
    shipped = set(read_sentences())
    return [s for s in build_sentences(texts) if s not in shipped]
