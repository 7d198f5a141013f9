"""``slimkit prune``: prune a model, optionally fine-tune, save, print before/after."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from slimkit.cli import common as cli
from slimkit.cli.common import app, merge_options, metric_option, parse_options
from slimkit.cli.technique import Technique, run_technique, show_technique

METHODS = "channels, neurons, heads, depth, unstructured, nm or gradual"
SPARSITY_METHODS = ("unstructured", "gradual")


def _options(method: str, ratio: float | None, round_to: int | None, importance: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if ratio is not None:
        options["sparsity" if method in SPARSITY_METHODS else "ratio"] = ratio
    if round_to is not None:
        options["round_to"] = round_to
    if importance is not None:
        options["importance"] = importance
    return options


@app.command("prune")
def prune_cmd(
    model: cli.ModelSpec,
    out_dir: cli.OutDir,
    method: Annotated[str, typer.Option("--method", help=f"Pruning method: {METHODS}.")] = "channels",
    ratio: Annotated[
        float | None, typer.Option("--ratio", help="Fraction removed in [0, 1) (sparsity for unstructured/gradual).")
    ] = None,
    round_to: Annotated[int | None, typer.Option("--round-to", min=1, help="Keep multiples of this.")] = None,
    importance: Annotated[str | None, typer.Option("--importance", help="l1, l2, random, bn-scale or taylor.")] = None,
    include: cli.Include = None,
    exclude: cli.Exclude = None,
    data: cli.DataSpec = None,
    finetune_epochs: cli.FinetuneEpochs = 0,
    batch_sizes: cli.BatchSizes = "1",
    weights: cli.Weights = None,
    trust_pickle: cli.TrustPickle = False,
    as_json: cli.AsJson = False,
    quiet: cli.Quiet = False,
    overwrite: cli.Overwrite = False,
    threads: cli.Threads = 1,
    metric: cli.MetricSpec = None,
    lower_is_better: cli.LowerIsBetter = False,
    option: cli.ConfigOptions = None,
) -> None:
    """Prune channels, neurons, heads, whole blocks or weights; save the result and print before/after.

    Examples:

        slimkit prune example:digits-cnn --method channels --ratio 0.5 --finetune-epochs 5 --out out/

        slimkit prune example:minilm --method heads --ratio 0.25 --out out/
    """
    options = merge_options(_options(method, ratio, round_to, importance), parse_options(option))
    technique = Technique("prune", method, options, split="train", needs_data=method == "gradual")
    comparison, state, outcome = run_technique(
        technique, model=model, out_dir=out_dir, data=data, include=include, exclude=exclude,
        finetune_epochs=finetune_epochs, batch_sizes=batch_sizes, weights=weights, trust_pickle=trust_pickle,
        quiet=quiet or as_json,
        overwrite=overwrite, threads=threads, metric=metric_option(metric, lower_is_better),
    )  # fmt: skip
    pruned = state.get("pruned", {})
    lines = [f"  {name}: kept {kept} of {size}" for name, (size, kept) in pruned.items()]
    show_technique(comparison, outcome, {"pruned": pruned}, lines, out_dir, as_json)
