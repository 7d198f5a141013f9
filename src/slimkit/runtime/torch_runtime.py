"""PyTorch eager runtime."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.core.data import Batch, run_model
from slimkit.core.device import model_device
from slimkit.runtime.base import Runtime


class TorchRuntime(Runtime):
    """Runs an ``nn.Module`` in eval mode under ``torch.inference_mode``."""

    name = "torch"

    def __init__(self, model: nn.Module, example: Batch | None = None):
        super().__init__(example)
        self.model = model.eval()
        self.device = model_device(model)

    def run_batch(self, batch: Batch) -> Any:
        with torch.inference_mode():
            return run_model(self.model, batch.to(self.device))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
