"""What every ``slimkit`` command shares: the app, consoles, options, output helpers."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from slimkit.core.errors import InvalidConfigError

ConfigOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="Any config field of the method as key=value (repeatable), e.g. -o round_to=8; "
        "`slimkit methods VERB METHOD` lists them.",
    ),
]

if TYPE_CHECKING:
    from slimkit.measure.metrics import Metric

app = typer.Typer(
    name="slimkit",
    help="Make trained PyTorch models small and fast, and measure them on their runtime. "
    "Timing uses 1 intra-op thread unless --threads says otherwise.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Every table fits 80 columns, so piped output (no terminal to measure) uses 80 too.
out = Console(width=None if sys.stdout.isatty() else 80)
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from slimkit import __version__

        print(f"slimkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Debug log, and the exporters' and runtimes' own output (anywhere on the line)."
        ),
    ] = False,
    allow_module: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-module",
            help="Let saved folders name model factories from this package, e.g. mypkg (repeatable; anywhere).",
        ),
    ] = None,
) -> None:
    """Options that apply to every command."""
    if allow_module:
        from slimkit.core.trust import allow_modules

        allow_modules(*allow_module)


ModelSpec = Annotated[
    str, typer.Argument(help="Model spec: example:NAME, hf:DIR, pkg.mod:factory, file.pt2, file.pt, a slimkit folder.")
]
DataSpec = Annotated[
    str | None,
    typer.Option(
        "--data", help="Data spec: example:NAME, pkg.mod:fn, file.npz (x, y). Its first batch is the example input."
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output; only errors are logged.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.")]
Weights = Annotated[
    str | None, typer.Option("--weights", help="Weights (.safetensors/.pt state dict) for a pkg.mod:factory model.")
]
TrustPickle = Annotated[
    bool, typer.Option("--trust-pickle", help="Allow .pt files holding pickled objects (they can run code).")
]
Threads = Annotated[int, typer.Option("--threads", min=1, help="Intra-op threads while timing (default 1).")]
Device = Annotated[
    str, typer.Option("--device", help="Where the work runs: auto (a GPU when there is one), cpu, cuda, cuda:1.")
]
MetricSpec = Annotated[
    str | None,
    typer.Option(
        "--metric",
        help="accuracy, fidelity, or package.module:function computing fn(outputs, targets) -> float "
        "(default: the data's).",
    ),
]
LowerIsBetter = Annotated[
    bool,
    typer.Option(
        "--lower-is-better",
        help="The --metric function is an error/loss (lower is better); default: its higher_is_better "
        "attribute, else higher is better.",
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")]
BatchSizes = Annotated[
    str, typer.Option("--batch-sizes", help="Comma-separated batch sizes to time, e.g. 1,32 (default 1 everywhere).")
]
OutDir = Annotated[Path, typer.Option("--out", help="Folder to save the result into (written atomically).")]
Include = Annotated[list[str] | None, typer.Option("--include", help="Glob of module names to change (repeatable).")]
Exclude = Annotated[
    list[str] | None, typer.Option("--exclude", help="Glob of module names to leave alone (repeatable).")
]
FinetuneEpochs = Annotated[
    int, typer.Option("--finetune-epochs", min=0, help="Recovery epochs on the data's train split.")
]


def metric_option(metric: str | None, lower_is_better: bool) -> Metric | None:
    """The `Metric` of ``--metric``/``--lower-is-better`` (None: the data's own metric)."""
    from slimkit.measure.metrics import resolve_metric

    if metric is None and not lower_is_better:
        return None
    if metric is None:
        raise InvalidConfigError("--lower-is-better goes with --metric package.module:function")
    return resolve_metric(metric, higher_is_better=False if lower_is_better else None)


def check_out(out_dir: Path, overwrite: bool, *inputs: str | None) -> None:
    """Refuse an existing ``--out`` unless ``overwrite``, and an ``--out`` that would swallow an input.

    Raises:
        InvalidConfigError: with what to do instead.
    """
    target = out_dir.resolve()
    if target == Path.cwd().resolve() or target in Path.cwd().resolve().parents:
        raise InvalidConfigError(f"--out {out_dir} is the current folder or above it: give a new folder, like out/")
    for spec in inputs:
        if spec and Path(spec).exists():
            given = Path(spec).resolve()
            if given == target or target in given.parents:
                raise InvalidConfigError(f"--out {out_dir} holds the input {spec}: choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidConfigError(f"--out {out_dir} is a file: give a folder path")
    if out_dir.exists() and not overwrite:
        raise InvalidConfigError(f"{out_dir} already exists: choose another --out or pass --overwrite")
    existing = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidConfigError(f"cannot write {out_dir}: {existing} is not a writable folder -- choose another --out")


@contextmanager
def staged_out(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A fresh folder beside ``out_dir`` to write into; renamed onto ``out_dir`` when the block succeeds.

    An existing ``out_dir`` (allowed only with ``overwrite``) is replaced whole: it is moved
    aside, the new folder renamed in, then the old one deleted (put back if the rename fails).
    A failed block leaves ``out_dir`` as it was and nothing beside it.
    """
    target = out_dir.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".slimkit-new", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield stage
        if target.exists() and not overwrite:
            raise InvalidConfigError(f"{out_dir} appeared while working: choose another --out or pass --overwrite")
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".slimkit-old", dir=target.parent))
            os.replace(target, old / "previous")
        try:
            os.replace(stage, target)
        except OSError:
            if old is not None:
                os.replace(old / "previous", target)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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


def parse_pairs(text: str | None, what: str) -> dict[str, object]:
    """``"depth=0.5,width=0.5"`` -> ``{"depth": 0.5, "width": 0.5}`` (values read as JSON when they parse)."""
    result: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        result.update(parse_options([part], what))
    return result


def parse_options(items: list[str] | None, what: str = "-o") -> dict[str, object]:
    """``["ratio=0.5", "round_to=8"]`` -> ``{"ratio": 0.5, "round_to": 8}`` (values read as JSON
    when they parse: numbers, true/false, null, lists, mappings; anything else is a string). A
    dotted key sets a field of a nested config: ``finetune.epochs=3`` -> ``{"finetune": {"epochs": 3}}``."""
    result: dict[str, object] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(part.isidentifier() for part in path):
            raise InvalidConfigError(f"{what} takes key=value, like ratio=0.5 or finetune.epochs=3 (got {item!r})")
        try:
            parsed: object = json.loads(value)
        except json.JSONDecodeError:
            parsed = value.strip()
        target = result
        for part in path[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise InvalidConfigError(f"{what}: {part} is given both as a value and with {key.strip()}")
            target = nested
        target[path[-1]] = parsed
    return result


def merge_options(flags: dict[str, Any], extra: dict[str, object]) -> dict[str, Any]:
    """The options of the dedicated flags plus ``-o key=value`` ones, nested configs merged field by
    field; a field given both ways must agree."""
    merged = dict(flags)
    for key, value in extra.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = merge_options(merged[key], value)
        elif key in merged and merged[key] != value:
            raise InvalidConfigError(f"{key} given both as a flag and with -o, differently: give it once")
        else:
            merged[key] = value
    return merged
