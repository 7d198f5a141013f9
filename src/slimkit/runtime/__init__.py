"""Runtimes: run and time a model or a deployed artifact on its own runtime."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from slimkit.core.data import batch_from_inputs
from slimkit.core.specs import load_model
from slimkit.runtime.base import Runtime
from slimkit.runtime.torch_runtime import TorchRuntime


def load(model_or_path: nn.Module | str | os.PathLike[str], example_inputs: Any = None, **load_options: Any) -> Runtime:
    """The runtime of a model or artifact: PyTorch for modules, slimkit folders and ``.pt2``.

    Args:
        model_or_path: a module or any model spec accepted by `slimkit.core.specs.load_model`.
        example_inputs: default inputs for `Runtime.bench`.
        **load_options: passed to `load_model` (``weights``, ``trust_pickle``).
    """
    model = load_model(model_or_path, **load_options)
    example = batch_from_inputs(example_inputs) if example_inputs is not None else None
    return TorchRuntime(model, example)


__all__ = ["Runtime", "TorchRuntime", "load"]
