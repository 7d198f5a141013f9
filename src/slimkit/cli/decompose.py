"""``slimkit decompose``: factorize a model's layers and print the before/after table."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from slimkit.cli import common as cli
from slimkit.cli.common import app, merge_options, metric_option, parse_options
from slimkit.cli.technique import Technique, run_technique, show_technique

METHODS = "svd, spatial-svd, tucker, cp or tt"


@app.command("decompose")
def decompose_cmd(
    model: cli.ModelSpec,
    out_dir: cli.OutDir,
    method: Annotated[str, typer.Option("--method", help=f"Decomposition: {METHODS}.")] = "svd",
    rank: Annotated[
        str | None,
        typer.Option("--rank", help="16, 0.25, vbmf, energy:0.9, params:0.5 or macs:0.5 (default: the method's)."),
    ] = None,
    include: cli.Include = None,
    exclude: cli.Exclude = None,
    force: Annotated[bool, typer.Option("--force", help="Decompose even where the rank saves nothing.")] = False,
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
    """Factorize Linear/Embedding/Conv2d layers, save the result and print before/after.

    Examples:

        slimkit decompose example:digits-cnn --method tucker --rank vbmf --finetune-epochs 3 --out out/

        slimkit decompose example:minilm --method svd --rank params:0.6 --include '*intermediate*' --out out/
    """
    flags: dict[str, Any] = {"force": force} | ({} if rank is None else {"rank": rank})
    options = merge_options(flags, parse_options(option))
    comparison, state, outcome = run_technique(
        Technique("decompose", method, options, split=None), model=model, out_dir=out_dir, data=data,
        include=include, exclude=exclude, finetune_epochs=finetune_epochs, batch_sizes=batch_sizes,
        weights=weights, trust_pickle=trust_pickle, quiet=quiet or as_json,
        overwrite=overwrite, threads=threads, metric=metric_option(metric, lower_is_better),
    )  # fmt: skip
    lines = [f"  {name}: rank {e['rank']}, relative error {e['error']:.4f}" for name, e in state["layers"].items()]
    show_technique(comparison, outcome, {"layers": state["layers"]}, lines, out_dir, as_json)
