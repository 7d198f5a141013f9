"""``slimkit prune``: prune a model, optionally fine-tune, save, print before/after."""

from __future__ import annotations

from typing import Annotated

import typer

from slimkit.cli import common as cli
from slimkit.cli.shared import TECHNIQUE, Run, command
from slimkit.cli.technique import Technique, run_technique, show_technique

METHODS = "channels, neurons, heads, depth, unstructured, nm or gradual"


@command("prune", ("finetune_epochs", *TECHNIQUE))
def prune_cmd(
    model: cli.ModelSpec,
    out_dir: cli.OutDir,
    method: Annotated[str, typer.Option("--method", help=f"Pruning method: {METHODS}.")] = "channels",
    ratio: Annotated[
        float | None,
        typer.Option("--ratio", help="Fraction removed in [0, 1): channels, heads, neurons, blocks or weights."),
    ] = None,
    round_to: Annotated[int | None, typer.Option("--round-to", min=1, help="Keep multiples of this.")] = None,
    importance: Annotated[
        str | None,
        typer.Option("--importance", help="l1, l2, random, bn-scale, taylor, activation or a registered name."),
    ] = None,
    *,
    run: Run,
) -> None:
    """Prune channels, neurons, heads, whole blocks or weights; save the result and print before/after.

    Examples:

        slimkit prune example:digits-cnn --method channels --ratio 0.5 --finetune-epochs 5 --out out/

        slimkit prune example:minilm --method heads --ratio 0.25 --out out/
    """
    options = run.options({"ratio": ratio, "round_to": round_to, "importance": importance})
    technique = Technique("prune", method, options, split="train", needs_data=method == "gradual")
    comparison, outcome = run_technique(technique, model, out_dir, run)
    pruned = outcome.details.get("pruned", {})
    lines = [f"  {name}: kept {kept} of {size}" for name, (size, kept) in pruned.items()]
    show_technique(comparison, outcome, lines, out_dir, run.as_json)
