"""The ``slimkit`` command line: one module per command group, all on one typer app."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence

from rich.text import Text

from slimkit.cli.common import app, err
from slimkit.cli.logs import VERBOSE, configure_logging, native_stderr_hidden, verbosity_from_argv
from slimkit.core.errors import SlimkitError

# Every module of this package registers its commands on `app` when imported.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("common", "logs"):
        importlib.import_module(f"{__name__}.{_module.name}")


def take_allow_modules(args: list[str]) -> tuple[list[str], list[str]]:
    """Take every ``--allow-module NAME`` (or ``--allow-module=NAME``) out of ``args``, wherever it is."""
    kept, names, i = [], [], 0
    cut = args.index("--") if "--" in args else len(args)
    while i < len(args):
        arg = args[i]
        if i < cut and arg == "--allow-module" and i + 1 < len(args):
            names.append(args[i + 1])
            i += 2
            continue
        if i < cut and arg.startswith("--allow-module="):
            names.append(arg.partition("=")[2])
        else:
            kept.append(arg)
        i += 1
    return kept, names


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: user errors print one line and exit with code 2, never a traceback.

    ``-v``/``--verbose`` may appear anywhere on the line; it shows slimkit's debug log and
    the third-party output that is otherwise hidden. So may ``--allow-module PKG``: saved
    folders may then name model factories from ``PKG`` (`slimkit.core.io.allow_modules`).
    """
    args, verbosity = verbosity_from_argv(list(argv) if argv is not None else sys.argv[1:])
    configure_logging(verbosity)
    hidden: list[str] = []
    try:
        with native_stderr_hidden(verbosity != VERBOSE) as hidden:
            try:
                args, allowed = take_allow_modules(args)
                if allowed:
                    from slimkit.core.trust import allow_modules

                    allow_modules(*allowed)
                app(args=args, prog_name="slimkit")
            except SlimkitError as exc:
                err.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
                sys.exit(2)
            except KeyboardInterrupt:
                err.print("interrupted")
                sys.exit(130)
    except SystemExit:
        raise
    except BaseException:  # an unexpected error: show what the libraries said before it
        if hidden and hidden[0].strip():
            sys.stderr.write(hidden[0])
        raise


__all__ = ["app", "main"]
