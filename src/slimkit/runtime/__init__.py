"""Runtimes: run and time a model or a deployed artifact on its own runtime; `export` writes artifacts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.data import batch_from_inputs
from slimkit.core.errors import InvalidConfigError
from slimkit.core.formats import ARTIFACT_SUFFIXES, RUNTIMES, by_suffix, load_attribute
from slimkit.core.specs import load_model
from slimkit.runtime.base import Runtime, SessionRuntime
from slimkit.runtime.export import export  # the function; the submodule stays importable by path
from slimkit.runtime.torch_runtime import TorchRuntime


def _artifact_runtime(path: Path, example: Any, options: dict[str, Any]) -> Runtime:
    runner = by_suffix(path.suffix).runner
    if not path.is_file():
        raise InvalidConfigError(f"{path} does not exist: check the path")
    return load_attribute(runner)(path, example, **options)


def load(
    model_or_path: nn.Module | str | os.PathLike[str],
    example_inputs: Any = None,
    *,
    compile: str | None = None,
    **options: Any,
) -> Runtime:
    """The runtime of a model or artifact, picked by what it is.

    ``.onnx`` -> onnxruntime, ``.pte`` -> ExecuTorch, ``.tflite`` -> LiteRT; modules,
    model specs, slimkit folders and ``.pt2`` files -> PyTorch.

    Args:
        model_or_path: a module, an artifact path, or any spec `slimkit.core.specs.load_model` accepts.
        example_inputs: default inputs for `Runtime.bench` (artifacts synthesize them from
            their input signature when omitted).
        compile: for PyTorch, a ``torch.compile`` mode (None: eager).
        **options: for artifacts, runtime options (``threads``; ``providers`` for onnxruntime);
            otherwise passed to `load_model` (``weights``, ``trust_pickle``).
    """
    example = batch_from_inputs(example_inputs) if example_inputs is not None else None
    if not isinstance(model_or_path, nn.Module) and Path(str(model_or_path)).suffix.lower() in ARTIFACT_SUFFIXES:
        return _artifact_runtime(Path(str(model_or_path)), example, options)
    return TorchRuntime(load_model(model_or_path, **options), example, compile=compile)


__all__ = ["RUNTIMES", "Runtime", "SessionRuntime", "TorchRuntime", "export", "load"]
