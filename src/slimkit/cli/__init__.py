"""The ``slimkit`` command line: one module per command group, all on one typer app."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence

from rich.text import Text

from slimkit.cli.common import app, err
from slimkit.core.errors import SlimkitError

# Every module of this package registers its commands on `app` when imported.
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "common":
        importlib.import_module(f"{__name__}.{_module.name}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: user errors print one line and exit with code 2, never a traceback."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="slimkit")
    except SlimkitError as exc:
        err.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main"]
