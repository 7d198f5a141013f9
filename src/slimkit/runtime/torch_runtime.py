"""PyTorch runtime: eager, or compiled with ``torch.compile``."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from slimkit.core.data import Batch, run_model
from slimkit.core.device import model_device
from slimkit.core.errors import InvalidConfigError
from slimkit.runtime.base import Runtime

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes accepted by `TorchRuntime`."""


class TorchRuntime(Runtime):
    """Runs an ``nn.Module`` in eval mode under ``torch.inference_mode``.

    Args:
        model: the module (put in eval mode).
        example: default inputs for `bench`.
        compile: a ``torch.compile`` mode (see `COMPILE_MODES`), or None for eager.
    """

    name = "torch"

    def __init__(self, model: nn.Module, example: Batch | None = None, compile: str | None = None):
        super().__init__(example)
        if compile is not None and compile not in COMPILE_MODES:
            raise InvalidConfigError(f"unknown torch.compile mode {compile!r}; valid modes: {', '.join(COMPILE_MODES)}")
        with contextlib.suppress(NotImplementedError):  # torch.export modules have no eval()
            model.eval()
        self.model = model
        self.device = model_device(model)
        self.compile_mode = compile
        self._call = torch.compile(self.model, mode=compile) if compile else self.model
        if compile:
            self.name = f"torch.compile({compile})"

    def run_batch(self, batch: Batch) -> Any:
        with torch.inference_mode():
            return run_model(self._call, batch.to(self.device))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
