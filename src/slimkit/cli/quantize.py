"""``slimkit quantize``: quantize a model, save it, print before/after."""

from __future__ import annotations

from typing import Annotated

import typer

from slimkit.cli import common as cli
from slimkit.cli.shared import TECHNIQUE, Run, command
from slimkit.cli.technique import Technique, run_technique, show_technique

METHODS = "int8-dynamic, int8-static, weight-only, fp16, bf16 (and any other registered quantize method)"


@command("quantize", TECHNIQUE)
def quantize_cmd(
    model: cli.ModelSpec,
    out_dir: cli.OutDir,
    method: Annotated[str, typer.Option("--method", help=f"Quantization method: {METHODS}.")] = "int8-dynamic",
    bits: Annotated[int | None, typer.Option("--bits", help="Weight bits, 2..8 (weight-only).")] = None,
    group_size: Annotated[
        int | None, typer.Option("--group-size", help="Columns per scale (granularity group:N); 0 = per channel.")
    ] = None,
    observer: Annotated[
        str | None,
        typer.Option("--observer", help="minmax, moving-average, percentile, mse, entropy or registered (int8-static)"),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(
            "--max-drop",
            help="Keep in float the fewest layers that hold the metric drop on the calibration split to this "
            "(accuracy as a fraction, cosine for fidelity); the float layers are listed.",
        ),
    ] = None,
    *,
    run: Run,
) -> None:
    """Quantize a model; calibrate on the data's calibration split, measure on its test split.

    Examples:

        slimkit quantize example:minilm --method int8-dynamic --out out/

        slimkit quantize example:digits-cnn --method int8-static --observer percentile --out out/

        slimkit quantize example:minilm --method weight-only --bits 4 --group-size 128 --out out/

        slimkit quantize example:minilm --method int8-static --max-drop 0.01 --out out/
    """
    granularity = None if group_size is None else f"group:{group_size}" if group_size > 0 else "channel"
    options = run.options({"bits": bits, "granularity": granularity, "observer": observer})
    technique = Technique("quantize", method, options, split="calibration", max_drop=max_drop)
    comparison, outcome = run_technique(technique, model, out_dir, run)
    lines = [f"  {len(outcome.details.get('layers', {}))} layer(s) quantized"]
    show_technique(comparison, outcome, lines, out_dir, run.as_json)
