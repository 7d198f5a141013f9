"""``slimkit prune``: prune a model, optionally fine-tune, save, print before/after."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from slimkit.cli.common import (
    AsJson,
    BatchSizes,
    DataSpec,
    ModelSpec,
    Quiet,
    TrustPickle,
    Weights,
    app,
    out,
    parse_batch_sizes,
    progress,
)
from slimkit.cli.profile import example_data

METHODS = "channels, neurons, heads, unstructured, nm or gradual"
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


def _finetune(model: Any, original: Any, splits: Any, epochs: int) -> Any:
    """Recover accuracy (task loss) or fidelity (embedding distillation from the original)."""
    from slimkit.distillation import finetune

    if splits.metric == "fidelity":
        return finetune(model, splits.train, epochs=epochs, teacher=original, distill="embedding")
    return finetune(model, splits.train, epochs=epochs, eval_data=splits.calibration, metric=splits.metric)


@app.command("prune")
def prune_cmd(
    model: ModelSpec,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to save the pruned model into.")],
    method: Annotated[str, typer.Option("--method", help=f"Pruning method: {METHODS}.")] = "channels",
    ratio: Annotated[
        float | None, typer.Option("--ratio", help="Fraction removed in [0, 1) (sparsity for unstructured/gradual).")
    ] = None,
    round_to: Annotated[int | None, typer.Option("--round-to", min=1, help="Keep multiples of this.")] = None,
    importance: Annotated[str | None, typer.Option("--importance", help="l1, l2, random, bn-scale or taylor.")] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Glob of module names to prune.")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Glob of module names to keep.")] = None,
    data: DataSpec = None,
    finetune_epochs: Annotated[
        int, typer.Option("--finetune-epochs", min=0, help="Recovery epochs on the data's train split.")
    ] = 0,
    batch_sizes: BatchSizes = "1",
    weights: Weights = None,
    trust_pickle: TrustPickle = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Prune channels, neurons, heads or weights; save the result and print before/after.

    Examples:

        slimkit prune example:digits-cnn --method channels --ratio 0.5 --finetune-epochs 5 --out out/

        slimkit prune example:minilm --method heads --ratio 0.25 --out out/
    """
    import json
    import warnings

    from slimkit.core.errors import InvalidConfigError
    from slimkit.core.io import save
    from slimkit.core.record import get_record
    from slimkit.core.specs import load_data, load_model
    from slimkit.measure.profile import compare, profile
    from slimkit.pruning import prune
    from slimkit.report import comparison_table

    sizes = parse_batch_sizes(batch_sizes)
    data_spec = example_data(model, data)
    if (finetune_epochs or method == "gradual") and data_spec is None:
        raise InvalidConfigError(f"--finetune-epochs and --method gradual need --data (got method {method!r})")
    with progress(f"pruning {model} with {method}", quiet or as_json):
        original = load_model(model, weights=weights, trust_pickle=trust_pickle)
        splits = load_data(data_spec) if data_spec else None
        train = splits.train if splits is not None else None
        with warnings.catch_warnings():  # skipped layers are listed below
            warnings.simplefilter("ignore", UserWarning)
            result = prune(
                original, method, data=train, include=include, exclude=exclude,
                **_options(method, ratio, round_to, importance),
            )  # fmt: skip
        state = get_record(result).transforms[-1].state
        if finetune_epochs and splits is not None:
            result = _finetune(result, original, splits, finetune_epochs)
        before = profile(original, data=splits, reference=original, batch_sizes=sizes)
        after = profile(result, data=splits, reference=original, batch_sizes=sizes)
        save(result, out_dir)
    before.name, after.name = model, f"{method} -> {out_dir}"
    comparison = compare(before, after)
    summary = {"pruned": state.get("pruned", {}), "skipped": state.get("skipped", {})}
    if as_json:
        print(json.dumps({**comparison.to_dict(), **summary, "out": str(out_dir)}, indent=2, default=str))
        return
    out.print(comparison_table(comparison))
    for name, (size, kept) in summary["pruned"].items():
        out.print(f"  {name}: kept {kept} of {size}")
    for name, reason in summary["skipped"].items():
        out.print(f"  {name}: not pruned ({reason})")
    out.print(f"saved to {out_dir}")
