"""Measuring a model where it will run: the recipe's target runtime."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.data import DataSplits
from slimkit.measure.profile import Profile, profile
from slimkit.pipeline.recipe import Target

SUFFIX = {"onnxruntime": ".onnx", "executorch": ".pte", "tflite": ".tflite"}


def measure_on_target(
    model: nn.Module, target: Target, splits: DataSplits, *, reference: nn.Module, example_inputs: Any = None
) -> tuple[Profile, Profile]:
    """Profile ``model`` on the target and in eager PyTorch, returned in that order (the same
    profile twice for a torch target). On another target, latency, size and the metric come
    from the exported artifact running in that runtime; params, MACs and memory from PyTorch."""
    options = dict(
        data=splits.test,
        metric=splits.metric,
        reference=reference if splits.metric == "fidelity" else None,
        batch_sizes=target.batch_sizes,
        threads=target.threads,
    )
    torch_profile = profile(model, example_inputs=example_inputs, **options)
    if target.runtime == "torch":
        return torch_profile, torch_profile
    from slimkit.runtime import export

    with tempfile.TemporaryDirectory(prefix="slimkit-target-") as tmp:
        path = export(model, Path(tmp) / f"model{SUFFIX[target.runtime]}", example_inputs=example_inputs)
        deployed = profile(path, **options)
    on_target = dataclasses.replace(
        torch_profile,
        runtime=deployed.runtime,
        size_bytes=deployed.size_bytes,
        latency=deployed.latency,
        metrics=deployed.metrics,
    )
    return on_target, torch_profile
