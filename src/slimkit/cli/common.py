"""What every ``slimkit`` command shares: the app, consoles, options, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from slimkit.core.errors import InvalidConfigError

app = typer.Typer(
    name="slimkit",
    help="Make trained PyTorch models small and fast, and measure them on their runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Tables are wide; when piped (no terminal to measure) rich would wrap them at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)

ModelSpec = Annotated[
    str, typer.Argument(help="Model spec: example:NAME, hf:DIR, pkg.mod:factory, file.pt2, file.pt, a slimkit folder.")
]
DataSpec = Annotated[str | None, typer.Option("--data", help="Data spec: example:NAME, pkg.mod:fn, file.npz (x, y).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.")]
Weights = Annotated[
    str | None, typer.Option("--weights", help="Weights (.safetensors/.pt state dict) for a pkg.mod:factory model.")
]
TrustPickle = Annotated[
    bool, typer.Option("--trust-pickle", help="Allow .pt files holding pickled objects (they can run code).")
]
Threads = Annotated[int | None, typer.Option("--threads", min=1, help="Intra-op threads while timing.")]
BatchSizes = Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes to time.")]
OutDir = Annotated[Path, typer.Option("--out", help="Folder to save the result into (written atomically).")]
Include = Annotated[list[str] | None, typer.Option("--include", help="Glob of module names to change (repeatable).")]
Exclude = Annotated[
    list[str] | None, typer.Option("--exclude", help="Glob of module names to leave alone (repeatable).")
]
FinetuneEpochs = Annotated[
    int, typer.Option("--finetune-epochs", min=0, help="Recovery epochs on the data's train split.")
]


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,32"`` -> ``(1, 32)``; raises `InvalidConfigError` for anything else."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise InvalidConfigError(
            f"--batch-sizes must be positive integers separated by commas, like 1,32 (got {text!r})"
        )
    return sizes


@contextmanager
def progress(message: str, quiet: bool) -> Iterator[None]:
    """A spinner on stderr while work runs, unless quiet."""
    if quiet:
        yield
        return
    with err.status(message):
        yield


def emit(result: Any, as_json: bool, table: Callable[[Any], Any]) -> None:
    """Print ``result`` as JSON (its ``to_dict()``) or as a rich table."""
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        out.print(table(result))
