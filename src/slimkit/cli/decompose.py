"""``slimkit decompose``: factorize a model's layers and print the before/after table."""

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

METHODS = "svd, spatial-svd, tucker, cp or tt"


def _finetune(model: Any, original: Any, splits: Any, epochs: int) -> Any:
    """Recover accuracy (task loss) or fidelity (embedding distillation from the original)."""
    from slimkit.distillation import finetune

    if splits.metric == "fidelity":
        return finetune(model, splits.train, epochs=epochs, teacher=original, distill="embedding", quiet=True)
    return finetune(model, splits.train, epochs=epochs, eval_data=splits.calibration, metric=splits.metric)


@app.command("decompose")
def decompose_cmd(
    model: ModelSpec,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to save the decomposed model into.")],
    method: Annotated[str, typer.Option("--method", help=f"Decomposition: {METHODS}.")] = "svd",
    rank: Annotated[
        str | None,
        typer.Option("--rank", help="16, 0.25, vbmf, energy:0.9, params:0.5 or macs:0.5 (default: the method's)."),
    ] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Glob of module names to decompose.")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Glob of module names to keep dense.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Decompose even where the rank saves nothing.")] = False,
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
    """Factorize Linear/Embedding/Conv2d layers, save the result and print before/after.

    Examples:

        slimkit decompose example:digits-cnn --method tucker --rank vbmf --finetune-epochs 3 --out out/

        slimkit decompose example:minilm --method svd --rank params:0.6 --include '*intermediate*' --out out/
    """
    import json
    import warnings

    from slimkit.core.errors import InvalidConfigError
    from slimkit.core.io import save
    from slimkit.core.record import get_record
    from slimkit.core.specs import load_data, load_model
    from slimkit.decomposition import decompose
    from slimkit.measure.profile import compare, profile
    from slimkit.report import comparison_table

    sizes = parse_batch_sizes(batch_sizes)
    options: dict[str, Any] = {} if rank is None else {"rank": rank}
    data_spec = example_data(model, data)
    if finetune_epochs and data_spec is None:
        raise InvalidConfigError("--finetune-epochs needs --data (a dataset with a train split)")
    with progress(f"decomposing {model} with {method}", quiet or as_json):
        original = load_model(model, weights=weights, trust_pickle=trust_pickle)
        splits = load_data(data_spec) if data_spec else None
        with warnings.catch_warnings():  # layers left dense are listed below
            warnings.simplefilter("ignore", UserWarning)
            result = decompose(original, method, include=include, exclude=exclude, force=force, **options)
        state = get_record(result).transforms[-1].state
        if finetune_epochs and splits is not None:
            result = _finetune(result, original, splits, finetune_epochs)
        before = profile(original, data=splits, reference=original, batch_sizes=sizes)
        after = profile(result, data=splits, reference=original, batch_sizes=sizes)
        save(result, out_dir)
    before.name, after.name = model, f"{method} -> {out_dir}"
    comparison = compare(before, after)
    if as_json:
        print(json.dumps({**comparison.to_dict(), **state, "out": str(out_dir)}, indent=2, default=str))
        return
    out.print(comparison_table(comparison))
    for name, entry in state["layers"].items():
        out.print(f"  {name}: rank {entry['rank']}, relative error {entry['error']:.4f}")
    for name, reason in state["skipped"].items():
        out.print(f"  {name}: left dense ({reason})")
    out.print(f"saved to {out_dir}")
