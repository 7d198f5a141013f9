"""Peak memory of one inference forward: the weights plus the activations alive at once.

On CUDA the allocator's own peak counter is used. On CPU the forward runs under
``torch.profiler`` with ``profile_memory=True``: every allocation and free made through
PyTorch's allocator is a ``[memory]`` event with a signed size, and the peak is the
maximum of their running sum in time order. Memory taken outside PyTorch's allocator
(scratch space inside oneDNN/BLAS kernels) is not seen, and the batch's own input tensors
are not counted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from slimkit.core.data import Batch, run_model
from slimkit.measure.size import tensor_bytes


def _device(batch: Batch) -> torch.device:
    first = next(iter((*batch.args, *batch.kwargs.values())), None)
    return first.device if isinstance(first, torch.Tensor) else torch.device("cpu")


def _cuda_forward_peak(model: nn.Module, batch: Batch, device: torch.device) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        run_model(model, batch)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send C-level stderr to /dev/null (the profiler prints start/stop lines there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_forward_peak(model: nn.Module, batch: Batch) -> int:
    with (
        torch.no_grad(),
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        run_model(model, batch)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type().name == "CPU"),
        key=lambda e: e.start_ns(),
    )
    if not events:
        return 0
    running = torch.tensor([e.nbytes() for e in events], dtype=torch.int64).cumsum(0)
    return max(int(running.max()), 0)


def peak_memory(model: nn.Module, batch: Batch) -> int:
    """Peak bytes of one no-grad forward on ``batch``: the model's parameters and buffers
    plus the peak of the tensors allocated during the forward.

    The device is the one the batch's tensors are on (the model must be there too).
    """
    device = _device(batch)
    forward = _cuda_forward_peak(model, batch, device) if device.type == "cuda" else _cpu_forward_peak(model, batch)
    return tensor_bytes(model) + forward
