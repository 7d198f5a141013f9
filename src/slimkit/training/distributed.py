"""`torch.distributed` support: process group from the ``torchrun`` environment, rank sharding."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a distributed run (``world == 1`` when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True when more than one process trains together."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints (rank 0)."""
        return self.rank == 0


def from_env(device: torch.device) -> DistInfo:
    """Join the process group described by ``RANK``/``WORLD_SIZE`` (set by ``torchrun``).

    Initializes the group (gloo on CPU, nccl on CUDA) unless already initialized.
    Returns a single-process `DistInfo` when the variables are absent or the world is 1.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ or not dist.is_available():
        return DistInfo()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """On CUDA, each process uses GPU ``LOCAL_RANK``."""
    if info.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", info.local_rank)
    return device


def wrap(module: nn.Module, device: torch.device, info: DistInfo, find_unused: bool) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when distributed, else unchanged."""
    if not info.active:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def shard_count(batches: int, info: DistInfo) -> int:
    """Batches each rank runs per epoch: ranks take batches r, r+W, ...; the remainder that
    not every rank could take is dropped so all ranks step together."""
    return batches // info.world if info.active else batches


def any_flag(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if not info.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
