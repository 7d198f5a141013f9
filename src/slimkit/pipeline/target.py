"""Measuring a model where it will run: the recipe's target runtime."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from slimkit.core.data import DataSplits
from slimkit.core.formats import artifact_of
from slimkit.measure.profile import Profile
from slimkit.pipeline.recipe import Target
from slimkit.profiling import profile

if TYPE_CHECKING:
    from slimkit.measure.metrics import Metric


def target_metric(target: Target, splits: DataSplits) -> Metric:
    """The metric the budget reads: the recipe's ``target.metric`` when set, else the data's own."""
    from slimkit.measure.metrics import resolve_metric

    if target.metric is None:
        return resolve_metric(splits.metric)
    return resolve_metric(target.metric, target.higher_is_better)


def measure_on_target(
    model: nn.Module,
    target: Target,
    splits: DataSplits,
    *,
    reference: nn.Module,
    example_inputs: Any = None,
    folder: Path | None = None,
    export_options: dict[str, dict[str, Any]] | None = None,
) -> tuple[Profile, Profile, Path | None]:
    """Profile ``model`` on the target and in eager PyTorch.

    On another target than torch the model is exported into ``folder`` (``model.onnx``,
    ``model.pte``, ...) and latency, size and the metric come from that artifact running in
    its runtime; params, MACs and memory from PyTorch. The artifact is kept: it is the
    file a run publishes, so what is shipped is exactly what was measured; it gets its
    format's entry of ``export_options`` (a recipe's, by format name).

    Returns:
        (profile on the target, eager profile, the measured artifact or None for torch).
    """
    metric = target_metric(target, splits)
    options = dict(
        data=splits.test,
        metric=metric,
        reference=reference if metric.name == "fidelity" else None,
        batch_sizes=target.batch_sizes,
        threads=target.threads,
    )
    torch_profile = profile(model, example_inputs=example_inputs, **options)
    if target.runtime == "torch":
        return torch_profile, torch_profile, None
    if folder is None:
        raise ValueError("measure_on_target needs a folder to export into for a non-torch target")
    from slimkit.runtime import export

    fmt = artifact_of(target.runtime)
    path = Path(
        export(
            model,
            folder / f"model{fmt.suffix}",
            example_inputs=example_inputs,
            data=splits.test,
            overwrite=True,
            **(export_options or {}).get(fmt.name, {}),
        )
    )
    deployed = profile(path, **options)
    on_target = dataclasses.replace(
        torch_profile,
        runtime=deployed.runtime,
        size_bytes=deployed.size_bytes,
        latency=deployed.latency,
        metrics=deployed.metrics,
    )
    return on_target, torch_profile, path
