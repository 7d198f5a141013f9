"""``slimkit quantize``: quantize a model, save it, print before/after."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from slimkit.cli import common as cli
from slimkit.cli.common import app, merge_options, metric_option, parse_options
from slimkit.cli.technique import Technique, run_technique, show_technique

METHODS = "int8-dynamic, int8-static, weight-only, fp16, bf16 (and any other registered quantize method)"


def _options(bits: int | None, group_size: int | None, observer: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if bits is not None:
        options["bits"] = bits
    if group_size is not None:
        options["group_size"] = group_size if group_size > 0 else None
    if observer is not None:
        options["observer"] = observer
    return options


@app.command("quantize")
def quantize_cmd(
    model: cli.ModelSpec,
    out_dir: cli.OutDir,
    method: Annotated[str, typer.Option("--method", help=f"Quantization method: {METHODS}.")] = "int8-dynamic",
    bits: Annotated[int | None, typer.Option("--bits", help="Weight bits, 2..8 (weight-only).")] = None,
    group_size: Annotated[
        int | None, typer.Option("--group-size", help="Columns per scale (weight-only); 0 = per channel.")
    ] = None,
    observer: Annotated[
        str | None, typer.Option("--observer", help="minmax, moving-average, percentile, mse or entropy (int8-static).")
    ] = None,
    include: cli.Include = None,
    exclude: cli.Exclude = None,
    data: cli.DataSpec = None,
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
    """Quantize a model; calibrate on the data's calibration split, measure on its test split.

    Examples:

        slimkit quantize example:minilm --method int8-dynamic --out out/

        slimkit quantize example:digits-cnn --method int8-static --observer percentile --out out/

        slimkit quantize example:minilm --method weight-only --bits 4 --group-size 128 --out out/
    """
    options = merge_options(_options(bits, group_size, observer), parse_options(option))
    technique = Technique("quantize", method, options, split="calibration")
    comparison, state, outcome = run_technique(
        technique, model=model, out_dir=out_dir, data=data, include=include, exclude=exclude,
        batch_sizes=batch_sizes, weights=weights, trust_pickle=trust_pickle, quiet=quiet or as_json,
        overwrite=overwrite, threads=threads, metric=metric_option(metric, lower_is_better),
    )  # fmt: skip
    quantized = sorted(state.get("layers", {}))
    lines = [f"  {len(quantized)} layer(s) quantized"]
    show_technique(comparison, outcome, {"quantized": quantized}, lines, out_dir, as_json)
