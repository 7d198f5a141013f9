"""``slimkit compress``, ``slimkit recipes`` and ``slimkit demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from slimkit.cli.common import AsJson, Quiet, app, err, out, progress

recipes_app = typer.Typer(help="List and show the bundled recipes.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")

Recipe = Annotated[
    str, typer.Argument(help="A recipe YAML file or a bundled recipe name (see `slimkit recipes list`).")
]


def stage_table(result) -> Table:  # noqa: ANN001 (CompressResult, imported lazily)
    """The stage-by-stage table of a compress result."""
    from slimkit.report.files import COLUMNS, stage_rows

    table = Table(title="slimkit compress")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "stage" else "right")
    for row in stage_rows(result):
        table.add_row(*row)
    return table


def run_compress(
    recipe: str,
    out_dir: Path,
    model: str | None,
    data: str | None,
    resume: bool,
    overwrite: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Run a recipe and print the stage table (or JSON)."""
    import json

    from slimkit.pipeline import compress

    def announce(stage) -> None:  # noqa: ANN001
        if not (quiet or as_json):
            err.print(f"finished stage {stage.name} in {stage.seconds:.1f} s")

    with progress(f"compressing with {recipe}", quiet or as_json):
        result = compress(model, recipe, data=data, out=out_dir, resume=resume, overwrite=overwrite, on_stage=announce)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    out.print(stage_table(result))
    final, original = result.final, result.original
    out.print(f"artifact {final.size_bytes / original.size_bytes:.3f}x the original; written to {out_dir}")
    for note in ([result.stopped] if result.stopped else []) + [f"target missed: {m}" for m in result.unmet]:
        err.print(note, style="yellow", markup=False)


@app.command("compress")
def compress_cmd(
    recipe: Recipe,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (model, exports, reports).")],
    model: Annotated[str | None, typer.Option("--model", help="Model spec overriding the recipe's.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Data spec overriding the recipe's.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run after its last stage.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Run a multi-stage compression recipe and report every stage.

    Examples:

        slimkit compress prune-distill-int8 --out out/

        slimkit compress my-recipe.yaml --model hf:./bert --data mypkg.data:load --out out/
    """
    run_compress(recipe, out_dir, model, data, resume, overwrite, as_json, quiet)


@app.command("demo")
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("slimkit-demo"),
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Compress the bundled digits CNN: prune, distill, int8, ONNX; print every stage."""
    run_compress("prune-distill-int8", out_dir, None, None, False, True, as_json, quiet)


@recipes_app.command("list")
def recipes_list() -> None:
    """Names of the bundled recipes, with their first comment line."""
    from slimkit.pipeline import list_recipes, show_recipe

    for name in list_recipes():
        first = show_recipe(name).splitlines()[0].lstrip("# ")
        out.print(f"[bold]{name}[/]  {first}")


@recipes_app.command("show")
def recipes_show(name: Annotated[str, typer.Argument(help="Bundled recipe name.")]) -> None:
    """Print a bundled recipe's YAML (copy it to start your own)."""
    from slimkit.pipeline import show_recipe

    print(show_recipe(name), end="")
