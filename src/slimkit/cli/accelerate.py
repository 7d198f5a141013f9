"""``slimkit accelerate``: fuse, Winograd or separable convolutions, with the before/after table."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from slimkit.cli import common as cli
from slimkit.cli.shared import TECHNIQUE, Run, command
from slimkit.cli.technique import Technique, run_technique, show_technique

METHODS = ("fuse", "winograd", "separable")


def _options(method: str, tile: str | None, rank: int | None, finetune_epochs: int) -> dict[str, Any]:
    """The config options the command line sets for ``method``."""
    from slimkit.core.errors import InvalidConfigError

    if method not in METHODS:
        raise InvalidConfigError(f"unknown --method {method!r}; valid methods: {', '.join(METHODS)}")
    if tile is not None and method != "winograd":
        raise InvalidConfigError("--tile only applies to --method winograd")
    if (rank is not None or finetune_epochs) and method != "separable":
        raise InvalidConfigError("--rank and --finetune-epochs only apply to --method separable")
    if method == "winograd" and tile is not None:
        if tile not in ("auto", "2", "4"):
            raise InvalidConfigError(f"--tile must be auto, 2 or 4 (got {tile!r})")
        return {"tile": tile if tile == "auto" else int(tile)}
    if method == "separable":
        return {"finetune": {"epochs": finetune_epochs}} | ({"rank": rank} if rank is not None else {})
    return {}


@command("accelerate", TECHNIQUE)
def accelerate_cmd(
    model: cli.ModelSpec,
    out_dir: cli.OutDir,
    method: Annotated[str, typer.Option("--method", help="fuse, winograd or separable.")] = "fuse",
    tile: Annotated[str | None, typer.Option("--tile", help="Winograd tile: auto (measured), 2 or 4.")] = None,
    rank: Annotated[int | None, typer.Option("--rank", help="Separable: depthwise filters per channel.")] = None,
    finetune_epochs: Annotated[
        int, typer.Option("--finetune-epochs", min=0, help="Separable: distillation epochs on the train split.")
    ] = 0,
    *,
    run: Run,
) -> None:
    """Make convolutions cheaper, save the result and print before/after.

    Examples:

        slimkit accelerate example:digits-cnn --method fuse --out out/

        slimkit accelerate example:digits-cnn --method winograd --tile 4 --out out/

        slimkit accelerate example:digits-cnn --method separable --finetune-epochs 3 --out out/
    """
    # separable fine-tunes inside the method (distilling per layer), so it gets the train split itself
    options = run.options(_options(method, tile, rank, finetune_epochs))
    split = "train" if finetune_epochs else None
    technique = Technique("accelerate", method, options, split=split, needs_data=bool(finetune_epochs))
    comparison, outcome = run_technique(technique, model, out_dir, run)
    show_technique(comparison, outcome, _summary(method, outcome.details), out_dir, run.as_json)


def _summary(method: str, state: dict[str, Any]) -> list[str]:
    """One line per converted layer."""
    if method == "fuse":
        lines = [f"  folded {bn} into {layer}" for layer, bn in state["folded"]]
        lines += [f"  fused {layer} + {relu}" for layer, relu in state["fused_relu"]]
        return lines + [f"  channels_last: {state['channels_last']} ({state['channels_last_why']['reason']})"]
    if method == "winograd":
        lines = [
            f"  {name}: tile {info['tile'] or 'none'} ({info['reason']})" for name, info in state["layers"].items()
        ]
    else:
        lines = [f"  {name}: MACs x{ratio:.3f}" for name, ratio in state["mac_ratio"].items()]
    return lines
