"""A deployed artifact seen as a model: `RuntimeModule` (for scoring) and its stored weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.runtime.base import Runtime


class RuntimeModule(nn.Module):
    """An ``nn.Module`` view of a runtime, so `slimkit.measure.evaluate` can score an artifact."""

    def __init__(self, runtime: Runtime):
        super().__init__()
        self.runtime = runtime

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> Any:
        return self.runtime.run(*args, **kwargs)


def stored_params(path: Path) -> int | None:
    """Elements of the weights stored in an ``.onnx`` file (initializers); None for other formats."""
    if path.suffix.lower() != ".onnx":
        return None
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(int(torch.Size(init.dims).numel()) for init in model.graph.initializer)
