"""``slimkit decompose``: factorize a model's layers and print the before/after table."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from slimkit.cli import common as cli
from slimkit.cli.shared import TECHNIQUE, Run, command
from slimkit.cli.technique import Technique, run_technique, show_technique

METHODS = "svd, spatial-svd, tucker, cp or tt"


@command("decompose", ("finetune_epochs", *TECHNIQUE))
def decompose_cmd(
    model: cli.ModelSpec,
    out_dir: cli.OutDir,
    method: Annotated[str, typer.Option("--method", help=f"Decomposition: {METHODS}.")] = "svd",
    rank: Annotated[
        str | None,
        typer.Option("--rank", help="16, 0.25, vbmf, energy:0.9, params:0.5 or macs:0.5 (default: the method's)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Decompose even where the rank saves nothing.")] = False,
    *,
    run: Run,
) -> None:
    """Factorize Linear/Embedding/Conv2d layers, save the result and print before/after.

    Examples:

        slimkit decompose example:digits-cnn --method tucker --rank vbmf --finetune-epochs 3 --out out/

        slimkit decompose example:minilm --method svd --rank params:0.6 --include '*intermediate*' --out out/
    """
    flags: dict[str, Any] = {"force": force} | ({} if rank is None else {"rank": rank})
    technique = Technique("decompose", method, run.options(flags), split=None)
    comparison, outcome = run_technique(technique, model, out_dir, run)
    layers = outcome.details["layers"]
    lines = [f"  {name}: rank {e['rank']}, relative error {e['error']:.4f}" for name, e in layers.items()]
    show_technique(comparison, outcome, lines, out_dir, run.as_json)
