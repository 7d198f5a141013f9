"""``slimkit search``: search recipes for the Pareto front on the target runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from slimkit.cli import common as cli
from slimkit.cli.common import app, check_out, err, out, parse_options, progress, staged_out
from slimkit.core.errors import InvalidConfigError

if TYPE_CHECKING:
    from slimkit.search import Measured, SearchResult


@app.command("search")
def search_cmd(
    model: cli.ModelSpec,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for front.json, front/*.yaml and pareto.png.")],
    data: Annotated[
        str | None, typer.Option("--data", help="Data spec with calibration and test splits, e.g. example:digits.")
    ] = None,
    target: Annotated[str, typer.Option("--target", help="Runtime trials are measured on.")] = "onnxruntime",
    max_drop: Annotated[
        float | None, typer.Option("--max-drop", min=0, help="Largest allowed metric drop, e.g. 0.01 (1 point).")
    ] = None,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Recipes to try.")] = 20,
    objectives: Annotated[
        str, typer.Option("--objectives", help="Comma-separated figures to minimise: latency, size, drop.")
    ] = "latency,size",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Sampler seed.")] = 0,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="The study's database: a file (SQLite) or an Optuna storage URL. Default: OUT.study.db beside "
            "--out, so running the same command again resumes an interrupted search or extends a finished one.",
        ),
    ] = None,
    study_name: Annotated[str, typer.Option("--study-name", help="The study's name in --storage.")] = "slimkit-search",
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Run trials as Ray tasks on this cluster ('auto', 'ray://host:10001')."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Trials at once; more than 1 runs them on Ray (local by default).")
    ] = 1,
    finetune_top: Annotated[
        int,
        typer.Option(
            "--finetune-top",
            min=0,
            help="Fine-tune this many pruned/decomposed structures, then try each quantization on them.",
        ),
    ] = 0,
    finetune_epochs: Annotated[
        int, typer.Option("--finetune-epochs", min=1, help="Epochs of that fine-tuning (distilling from the model).")
    ] = 2,
    latency_table: Annotated[
        Path | None,
        typer.Option(
            "--latency-table",
            help="A latency table (slimkit bench --lut) measured on the device for --target: trials' latency is "
            "its prediction for that device instead of a timing here.",
        ),
    ] = None,
    space: Annotated[
        list[str] | None,
        typer.Option(
            "--space",
            help="A search-space field as key=value (repeatable), a JSON list or one value: "
            "--space 'quantize=[\"int8-static\",\"mixed\"]' --space 'prune_ratios=[0,0.5]'; docs/search.md lists them.",
        ),
    ] = None,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish/--no-publish",
            help="Run the chosen front point's recipe (least first objective) with compress into OUT/model.",
        ),
    ] = True,
    weights: cli.Weights = None,
    trust_pickle: cli.TrustPickle = False,
    overwrite: cli.Overwrite = False,
    as_json: cli.AsJson = False,
    quiet: cli.Quiet = False,
) -> None:
    """Try recipes (pruning, SVD, quantization, their order), measure each on --target, keep the Pareto front.

    Trials are scored on the data's calibration split; the front is measured again on the
    test split. Each front point is written as a recipe that `slimkit compress` runs.

    Examples:

        slimkit search example:digits-cnn --data example:digits --max-drop 0.01 --trials 20 --out found/

        slimkit compress found/front/00-trial1.yaml --out out/

        slimkit search example:digits-cnn --data example:digits --latency-table phone-lut.json --out found/

        slimkit search example:minilm --data example:sentences --space 'quantize=["mixed","int8-dynamic"]' --out found/
    """
    from slimkit.core.specs import load_model
    from slimkit.report.search import write_search_reports
    from slimkit.search import SearchSpace, search
    from slimkit.search.output import write_results

    if data is None:
        raise InvalidConfigError("search needs --data with calibration and test splits, e.g. --data example:digits")
    check_out(out_dir, overwrite, model, data)
    goals = tuple(part.strip() for part in objectives.split(",") if part.strip())
    constraints = {} if max_drop is None else {"max_metric_drop": max_drop}
    chosen = {k: v if isinstance(v, list) else [v] for k, v in parse_options(space, "--space").items()}
    search_space = SearchSpace.build(**chosen)
    loaded = load_model(model, weights=weights, trust_pickle=trust_pickle)
    ray = ray_address is not None or workers > 1
    with progress(f"searching {trials} recipes on {target}", quiet or as_json):
        result = search(
            loaded, data, target=target, objectives=goals, constraints=constraints, trials=trials, seed=seed,
            model_spec=model, storage=storage or f"{out_dir}.study.db", study_name=study_name,
            backend="ray" if ray else "local", workers=workers, ray_address=ray_address,
            finetune_top=finetune_top, finetune={"epochs": finetune_epochs, "distill": True},
            latency_table=latency_table, space=search_space,
        )  # fmt: skip
    with staged_out(out_dir, overwrite) as folder:
        write_results(result, folder)
        write_search_reports(result, folder)
    published = _publish(result, loaded, out_dir, data, goals[0], quiet or as_json) if publish else None
    if as_json:
        print(json.dumps({**result.to_dict(), "published": published and str(published)}, indent=2, default=str))
        return
    failed = [t for t in result.trials if t.error]
    for trial in failed:
        err.print(f"trial {trial.number} failed: {trial.error}", markup=False)
    out.print(f"latency: {result.latency}", markup=False)
    out.print(f"original: {_figures(result.original)}", markup=False)
    for i, point in enumerate(result.front):
        stages = " -> ".join(f"{verb}:{o['method']}" for stage in point.recipe["stages"] for verb, o in stage.items())
        out.print(f"{i:02d} trial {point.trial}: {_figures(point.test)} (test)  {stages or 'none'}", markup=False)
    if not result.front:
        err.print("no trial met the constraints: allow a larger --max-drop or more --trials", style="yellow")
    out.print(f"wrote {out_dir}/front.json, front/*.yaml, pareto.png, report.html", markup=False)
    if published:
        out.print(f"published the chosen point (least {goals[0]}) with compress in {published}", markup=False)


def _publish(result: SearchResult, model: Any, out_dir: Path, data: str, objective: str, quiet: bool) -> Path | None:
    """Run the front point with the least ``objective`` through `compress` into ``OUT/model``
    (its report, checkpoint and artifacts, as `slimkit compress` publishes them)."""
    from slimkit.pipeline import compress
    from slimkit.search.output import recipe_name

    if not result.front:
        return None
    index, point = min(enumerate(result.front), key=lambda item: item[1].selection.value(objective))
    recipe = out_dir / "front" / recipe_name(index, point)
    with progress(f"publishing trial {point.trial} with compress", quiet):
        compress(model, recipe, data=data, out=out_dir / "model")
    return out_dir / "model"


def _figures(measured: Measured) -> str:
    """``0.342 ms, 279035 B, metric 0.9978 (drop +0.0000)``."""
    return (
        f"{measured.latency_ms:.3f} ms, {measured.size_bytes} B, "
        f"metric {measured.metric:.4f} (drop {measured.drop:+.4f})"
    )
