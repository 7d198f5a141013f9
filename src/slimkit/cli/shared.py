"""The options many commands share, declared once: ``@command("prune", "data", "threads", ...)``.

A command lists the shared options it takes by name; they are appended to its own
parameters (so ``--help`` and parsing come from the one declaration in `OPTIONS`) and handed
to it as one `Run` value, its last parameter ``run``.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from slimkit.cli import common as cli


@dataclass(frozen=True)
class Run:
    """The shared options of one command invocation (defaults where the command takes none)."""

    data: str | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None
    finetune_epochs: int = 0
    batch_sizes: str = "1"
    weights: str | None = None
    trust_pickle: bool = False
    device: str = "auto"
    threads: int = 1
    metric: str | None = None
    lower_is_better: bool = False
    option: list[str] | None = None
    overwrite: bool = False
    as_json: bool = False
    quiet: bool = False

    @property
    def silent(self) -> bool:
        """No progress output: ``--quiet``, or ``--json`` (stdout is the document)."""
        return self.quiet or self.as_json

    def chosen_metric(self) -> Any:
        """The `Metric` of ``--metric``/``--lower-is-better`` (None: the data's own)."""
        return cli.metric_option(self.metric, self.lower_is_better)

    def options(self, flags: dict[str, Any] | None = None) -> dict[str, Any]:
        """The dedicated flags' config options (those given: ``None`` is a flag left out) merged
        with ``-o key=value`` ones."""
        given = {key: value for key, value in (flags or {}).items() if value is not None}
        return cli.merge_options(given, cli.parse_options(self.option))


OPTIONS: dict[str, Any] = {
    "data": cli.DataSpec,
    "include": cli.Include,
    "exclude": cli.Exclude,
    "finetune_epochs": cli.FinetuneEpochs,
    "batch_sizes": cli.BatchSizes,
    "weights": cli.Weights,
    "trust_pickle": cli.TrustPickle,
    "device": cli.Device,
    "threads": cli.Threads,
    "metric": cli.MetricSpec,
    "lower_is_better": cli.LowerIsBetter,
    "option": cli.ConfigOptions,
    "overwrite": cli.Overwrite,
    "as_json": cli.AsJson,
    "quiet": cli.Quiet,
}
"""Every shared option's ``Annotated`` type (its flag and help), by `Run` field."""

TECHNIQUE = (
    "include", "exclude", "data", "batch_sizes", "weights", "trust_pickle", "device", "threads",
    "metric", "lower_is_better", "option", "overwrite", "as_json", "quiet",
)  # fmt: skip
"""What every technique command (prune, quantize, decompose, accelerate) takes."""

MEASURE = ("data", "metric", "lower_is_better", "batch_sizes", "threads", "weights", "trust_pickle", "as_json", "quiet")
"""What every command that measures a model (profile, bench) takes."""


Command = Callable[..., None]


def command(name: str, shared: tuple[str, ...], **defaults: Any) -> Callable[[Command], Command]:
    """Register a CLI command taking its own parameters plus the ``shared`` options.

    Args:
        name: the command's name.
        shared: `Run` fields the command takes, in ``--help`` order.
        defaults: a different default for a shared option (e.g. ``batch_sizes="1,32"``).
    """
    defaults_of = {f.name: f.default for f in fields(Run)}

    def register(func: Command) -> Command:
        hints = typing.get_type_hints(func, include_extras=True)
        own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(func).parameters.values()]
        keyword = inspect.Parameter.KEYWORD_ONLY
        added = [
            inspect.Parameter(key, keyword, annotation=OPTIONS[key], default=defaults.get(key, defaults_of[key]))
            for key in shared
        ]
        params = [p for p in own if p.name != "run"] + added

        @functools.wraps(func)
        def invoke(**values: Any) -> None:
            given = {key: values.pop(key) for key in shared}
            run = Run(**{**defaults, **given})
            func(**values, run=run)

        invoke.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        invoke.__annotations__ = {p.name: p.annotation for p in params}
        return cli.app.command(name)(invoke)

    return register
