"""Run by ``torchrun --nproc-per-node 2`` in test_ddp.py: the same recipe as the test's
single-process run, with half the batch per rank; rank 0 saves the final weights."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from slimkit.core.data import TensorData
from slimkit.distillation import finetune


def problem(batch_size: int) -> tuple[torch.nn.Module, TensorData, TensorData]:
    """Seeded model and data shared by the distributed and single-process runs."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(256, 8, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return model, TensorData(x, y, batch_size), TensorData(x[:64], y[:64], 64)


def recipe(model: torch.nn.Module, data: TensorData, eval_data: TensorData) -> torch.nn.Module:
    """The training run both sides execute."""
    return finetune(model, data, epochs=2, eval_data=eval_data, lr=0.1, optimizer="sgd", schedule="constant")


if __name__ == "__main__":
    model, data, eval_data = problem(batch_size=16)
    trained = recipe(model, data, eval_data)
    if dist.get_rank() == 0:
        save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, sys.argv[1])
    dist.barrier()
    dist.destroy_process_group()
