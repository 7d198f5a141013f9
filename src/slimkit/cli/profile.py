"""``slimkit profile`` and ``slimkit demo``."""

from __future__ import annotations

from slimkit.cli import common as cli
from slimkit.cli.common import emit, parse_batch_sizes, progress
from slimkit.cli.shared import MEASURE, Run, command


def example_data(model: str, data: str | None) -> str | None:
    """``data``, or the bundled example's own dataset when the model is ``example:NAME``."""
    if data is None and model.startswith("example:"):
        from slimkit import models

        return "example:" + models.get_example(model.removeprefix("example:")).data
    return data


@command("profile", MEASURE)
def profile_cmd(model: cli.ModelSpec, *, run: Run) -> None:
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
    from slimkit.profiling import profile
    from slimkit.report import profile_table

    sizes = parse_batch_sizes(run.batch_sizes)
    chosen = run.chosen_metric()
    with progress(f"profiling {model}", run.silent):
        if Path(model).suffix.lower() in ARTIFACT_SUFFIXES:
            target = model
        else:
            target = load_model(model, weights=run.weights, trust_pickle=run.trust_pickle)
        data = example_data(model, run.data)
        result = profile(target, data=data, metric=chosen, batch_sizes=sizes, threads=run.threads)
    result.name = model
    emit(result, run.as_json, profile_table)
