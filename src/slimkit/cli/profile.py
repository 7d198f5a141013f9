"""``slimkit profile`` and ``slimkit demo``."""

from __future__ import annotations

from slimkit.cli import common as cli
from slimkit.cli.common import app, emit, metric_option, parse_batch_sizes, progress


def example_data(model: str, data: str | None) -> str | None:
    """``data``, or the bundled example's own dataset when the model is ``example:NAME``."""
    if data is None and model.startswith("example:"):
        from slimkit import models

        return "example:" + models.get_example(model.removeprefix("example:")).data
    return data


@app.command("profile")
def profile_cmd(
    model: cli.ModelSpec,
    data: cli.DataSpec = None,
    metric: cli.MetricSpec = None,
    lower_is_better: cli.LowerIsBetter = False,
    batch_sizes: cli.BatchSizes = "1,32",
    threads: cli.Threads = 1,
    weights: cli.Weights = None,
    trust_pickle: cli.TrustPickle = False,
    as_json: cli.AsJson = False,
    quiet: cli.Quiet = False,
) -> None:
    """Measure params, size, MACs, latency, memory and the metric of a model or a deployed file.

    MODEL may be a .onnx / .pte / .tflite file: it is profiled on its own runtime. Sample
    inputs come from --data's first batch (else the model's example_inputs()). Timing
    uses 1 thread unless --threads.

    Examples:

        slimkit profile example:digits-cnn

        slimkit profile mypkg.models:trained_net --data mypkg.data:splits --metric mypkg.metrics:mse --lower-is-better

        slimkit profile deploy/model.onnx --data example:digits --batch-sizes 1,8,32 --json
    """
    from pathlib import Path

    from slimkit.core.specs import ARTIFACT_SUFFIXES, load_model
    from slimkit.measure.profile import profile
    from slimkit.report import profile_table

    sizes = parse_batch_sizes(batch_sizes)
    chosen = metric_option(metric, lower_is_better)
    with progress(f"profiling {model}", quiet or as_json):
        if Path(model).suffix.lower() in ARTIFACT_SUFFIXES:
            target = model
        else:
            target = load_model(model, weights=weights, trust_pickle=trust_pickle)
        result = profile(target, data=example_data(model, data), metric=chosen, batch_sizes=sizes, threads=threads)
    result.name = model
    emit(result, as_json, profile_table)
