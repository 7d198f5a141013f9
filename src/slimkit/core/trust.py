"""Which modules a saved folder's ``source`` may import: the bundled ones, those this process
named or allowed (`allow_modules`, ``SLIMKIT_ALLOW_MODULES``), and nothing else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from slimkit.core.errors import InvalidConfigError, UnsafeFileError
from slimkit.core.hf import (
    HF_CONFIG,
)
from slimkit.core.index import INDEX, inside_folder

SAFE_MODULES = ("slimkit.models",)
"""Modules a saved ``source`` may always name (the bundled examples and test models)."""


MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


_trusted_modules: set[str] = set()


def allow_modules(*names: str) -> None:
    """Let saved folders in this process name factories from ``names`` (and their submodules).

    Loading a folder never imports a module you did not allow; pass the packages of your
    own model factories here (or ``sk.load(dir, allow_modules=[...])``, CLI
    ``--allow-module``, or the ``SLIMKIT_ALLOW_MODULES`` environment variable, comma-separated).
    """
    for name in names:
        if not isinstance(name, str) or not MODULE_NAME.fullmatch(name):
            raise InvalidConfigError(f"allow_modules: {name!r} is not a module name like 'mypkg.models'")
        _trusted_modules.add(name)


def _allowed(module: str, extra: tuple[str, ...]) -> bool:
    env = tuple(m.strip() for m in os.environ.get("SLIMKIT_ALLOW_MODULES", "").split(",") if m.strip())
    return any(module == m or module.startswith(m + ".") for m in (*SAFE_MODULES, *_trusted_modules, *extra, *env))


def check_source(source: str, directory: Path, allow: tuple[str, ...], hf_config: dict[str, Any] | None = None) -> None:
    """Refuse a saved ``source`` that would import or run something the user did not allow."""
    where = f"{directory / INDEX}: source {source!r}"
    if hf_config is not None and not source.startswith(f"{HF_CONFIG}:"):
        raise UnsafeFileError(f"{where}: field hf_config is only valid with an {HF_CONFIG}:Class source")
    if source.startswith("example:"):
        if not re.fullmatch(r"example:[A-Za-z0-9_.\-]{1,100}", source):
            raise UnsafeFileError(f"{where} is not a valid example name")
        return
    if source.startswith("hf:"):  # config.json is read as data; transformers never runs remote code here
        return
    if source.startswith(f"{HF_CONFIG}:"):  # the class is checked against transformers' own exports when built
        if hf_config is None:
            raise UnsafeFileError(f"{where} needs the field hf_config (the model's config), which is missing")
        return
    if source.lower().endswith(".pt2"):
        inside_folder(directory, source, "source")
        return
    if FACTORY.fullmatch(source):
        module = source.partition(":")[0]
        if not _allowed(module, allow):
            raise UnsafeFileError(
                f"{where} would import module {module!r}, which you have not allowed; loading a folder "
                f"never imports a module you did not name: if you trust it, pass allow_modules=['{module}'] "
                f"(CLI: --allow-module {module})"
            )
        return
    raise UnsafeFileError(
        f"{where} is not allowed: a saved source is example:NAME, hf:DIR, {HF_CONFIG}:Class, a .pt2 file inside "
        "the folder, or package.module:factory from an allowed module"
    )
