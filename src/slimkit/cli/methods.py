"""``slimkit methods``: the registered methods and their options, from the configs' own docs."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from slimkit.cli.common import AsJson, app, out


@app.command("methods")
def methods_cmd(
    verb: Annotated[str | None, typer.Argument(help="quantize, prune, decompose, accelerate or distill.")] = None,
    method: Annotated[str | None, typer.Argument(help="A method of VERB: show its options.")] = None,
    as_json: AsJson = False,
) -> None:
    """List every verb's methods, or show one method's options (each settable with -o key=value).

    Examples:

        slimkit methods

        slimkit methods quantize gptq
    """
    from slimkit.core.config import field_docs
    from slimkit.core.errors import InvalidConfigError
    from slimkit.core.registry import get_method, methods, verbs

    if verb is not None and verb not in verbs():
        raise InvalidConfigError(f"unknown verb {verb!r}; valid verbs: {', '.join(verbs())}")
    if method is None:
        listed = {v: {n: _summary(m.config) for n, m in sorted(methods(v).items())} for v in (verb,) if v} or {
            v: {n: _summary(m.config) for n, m in sorted(methods(v).items())} for v in verbs()
        }
        if as_json:
            print(json.dumps(listed, indent=2))
            return
        for name, registered in listed.items():
            out.print(f"[bold]{name}[/]")
            for method_name, summary in registered.items():
                out.print(f"  {method_name:<18} {summary}")
        return
    config = get_method(verb, method).config
    fields = field_docs(config)
    if as_json:
        print(json.dumps([asdict(f) for f in fields], indent=2))
        return
    table = Table(title=f"{verb} {method}: {_summary(config)} (set with -o key=value)")
    for column in ("option", "type", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for field in fields:
        table.add_row(field.name, field.type, field.default, field.meaning)
    out.print(table)


def _summary(config: type) -> str:
    doc = (config.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""
