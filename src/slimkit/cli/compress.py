"""``slimkit compress``, ``slimkit recipes`` and ``slimkit demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slimkit.cli.common import AsJson, LowerIsBetter, MetricSpec, Quiet, app, err, out, progress

recipes_app = typer.Typer(help="List and show the bundled recipes.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")

Recipe = Annotated[
    str, typer.Argument(help="A recipe YAML file or a bundled recipe name (see `slimkit recipes list`).")
]


EXIT_BUDGET = 3
"""Exit code of a run the budget stopped (0: success, 2: bad input)."""


def run_compress(
    recipe: str,
    out_dir: Path,
    model: str | None,
    data: str | None,
    resume: bool,
    overwrite: bool,
    as_json: bool,
    quiet: bool,
    metric: str | None = None,
    lower_is_better: bool = False,
    threads: int | None = None,
) -> None:
    """Run a recipe, print the stage table (or JSON) and what was published; exit 3 when the
    budget stopped the run."""
    import json

    from slimkit.pipeline import compress
    from slimkit.pipeline.recipe import load_recipe
    from slimkit.report.files import stage_table

    def announce(stage) -> None:  # noqa: ANN001 (StageResult)
        if not (quiet or as_json):
            note = f": {stage.status}, {stage.reason}" if stage.reason else ""
            err.print(f"finished {stage.title} in {stage.seconds:.1f} s{note}", markup=False)

    chosen: object = recipe
    if metric is not None or lower_is_better or threads is not None:
        if lower_is_better and metric is None:
            from slimkit.core.errors import InvalidConfigError

            raise InvalidConfigError("--lower-is-better goes with --metric package.module:function")
        loaded = load_recipe(recipe)
        update: dict[str, object] = {}
        if metric is not None:
            update["metric"] = metric
        if lower_is_better:
            update["higher_is_better"] = False
        if threads is not None:
            update["threads"] = threads
        chosen = loaded.model_copy(update={"target": loaded.target.model_copy(update=update)})
    with progress(f"compressing with {recipe}", quiet or as_json):
        result = compress(model, chosen, data=data, out=out_dir, resume=resume, overwrite=overwrite, on_stage=announce)
    for note in result.notes:
        err.print(note, markup=False)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        out.print(stage_table(result))
        for note in ([result.stopped] if result.stopped else []) + [f"target missed: {m}" for m in result.unmet]:
            err.print(note, style="yellow", markup=False)
        final, original = result.final, result.original
        out.print(
            f"published {result.published}: artifact {final.size_bytes / max(original.size_bytes, 1):.3f}x "
            f"the original, in {out_dir}",
            markup=False,
        )
    if result.stopped:
        raise typer.Exit(EXIT_BUDGET)


@app.command("compress")
def compress_cmd(
    recipe: Recipe,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (model, exports, reports).")],
    model: Annotated[str | None, typer.Option("--model", help="Model spec overriding the recipe's.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Data spec overriding the recipe's.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run after its last finished stage.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")] = False,
    metric: MetricSpec = None,
    lower_is_better: LowerIsBetter = False,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Intra-op threads while timing (default: the recipe's, 1).")
    ] = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Run a multi-stage compression recipe and report every stage.

    Each stage is measured on the recipe's target runtime. A stage that breaks
    target.max_metric_drop stops the run: the last stage that met the budget (or the
    original model) is published. A stage followed by a finetune is excused from the
    check but does not count as meeting it.

    Exit codes: 0 success; 2 bad input (recipe, model, data, --out); 3 the budget stopped
    the run (the output is written, with the last stage that met the budget).

    Crash safety: finished stages are kept beside --out; rerun with --resume to continue
    after a crash. A run killed while publishing is completed by the next run. A second
    run on the same --out is refused while the first runs (lock file .OUT.slimkit-lock).

    Examples:

        slimkit compress prune-distill-int8 --out out/

        slimkit compress my-recipe.yaml --model hf:./bert --data mypkg.data:load --out out/
    """
    run_compress(recipe, out_dir, model, data, resume, overwrite, as_json, quiet, metric, lower_is_better, threads)


@app.command("demo")
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("slimkit-demo"),
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Compress the bundled digits CNN: prune, distill, int8, ONNX; print every stage."""
    run_compress("prune-distill-int8", out_dir, None, None, False, True, as_json, quiet)


@recipes_app.command("list")
def recipes_list(as_json: AsJson = False) -> None:
    """Names of the bundled recipes, with their first comment line."""
    from slimkit.pipeline import list_recipes, show_recipe

    described = {name: show_recipe(name).splitlines()[0].lstrip("# ") for name in list_recipes()}
    if as_json:
        print(json.dumps([{"name": n, "description": d} for n, d in described.items()], indent=2))
        return
    for name, first in described.items():
        out.print(f"[bold]{name}[/]  {first}")


@recipes_app.command("show")
def recipes_show(name: Annotated[str, typer.Argument(help="Bundled recipe name.")], as_json: AsJson = False) -> None:
    """Print a bundled recipe's YAML (copy it to start your own), or with --json the parsed recipe."""
    from slimkit.pipeline import load_recipe, show_recipe

    if as_json:
        print(json.dumps(load_recipe(name).model_dump(mode="json"), indent=2))
        return
    print(show_recipe(name), end="")
