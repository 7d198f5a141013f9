"""``slimkit profile`` and ``slimkit demo``."""

from __future__ import annotations

from typing import Annotated

import typer

from slimkit.cli.common import (
    AsJson,
    BatchSizes,
    DataSpec,
    ModelSpec,
    Quiet,
    Threads,
    TrustPickle,
    Weights,
    app,
    emit,
    parse_batch_sizes,
    progress,
)


def example_data(model: str, data: str | None) -> str | None:
    """``data``, or the bundled example's own dataset when the model is ``example:NAME``."""
    if data is None and model.startswith("example:"):
        from slimkit import models

        return "example:" + models.get_example(model.removeprefix("example:")).data
    return data


@app.command("profile")
def profile_cmd(
    model: ModelSpec,
    data: DataSpec = None,
    metric: Annotated[str | None, typer.Option("--metric", help="accuracy or fidelity (default: the data's).")] = None,
    batch_sizes: BatchSizes = "1,32",
    threads: Threads = None,
    weights: Weights = None,
    trust_pickle: TrustPickle = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Measure params, size, MACs, latency, memory and the metric of a model.

    Examples:

        slimkit profile example:digits-cnn

        slimkit profile out/ --data example:digits --batch-sizes 1,8,32 --json
    """
    from slimkit.core.specs import load_model
    from slimkit.measure.profile import profile
    from slimkit.report import profile_table

    sizes = parse_batch_sizes(batch_sizes)
    with progress(f"profiling {model}", quiet or as_json):
        loaded = load_model(model, weights=weights, trust_pickle=trust_pickle)
        result = profile(loaded, data=example_data(model, data), metric=metric, batch_sizes=sizes, threads=threads)
    result.name = model
    emit(result, as_json, profile_table)
