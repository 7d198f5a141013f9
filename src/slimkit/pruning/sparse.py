"""Sparse weight storage: what makes a sparse model's saved artifact really smaller.

`SparseWeight` is a parametrization whose ``original`` is empty: the weight lives in its
buffers as the non-zero ``values`` plus either a packed ``bitmask`` (1 bit per weight) or
CSR indices (``crow`` int32, ``col`` int16 when the rows are short), whichever is smaller,
and is rebuilt dense in forward. ``sk.save`` writes those buffers, so the artifact holds
about ``nnz * itemsize + min(numel / 8, nnz * 2 + rows * 4)`` bytes per layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.pruning.masks import MaskedWeight, masked_layers

_BITS = torch.arange(8, dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor into uint8, 8 entries per byte (little-endian bit order)."""
    flat = mask.flatten().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)])
    return (flat.view(-1, 8) << _BITS.to(flat.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of `pack_bits`: the first ``numel`` entries as a flat bool tensor."""
    return ((packed[:, None] >> _BITS.to(packed.device)) & 1).bool().flatten()[:numel]


def storage_bytes(shape: tuple[int, ...], nnz: int, itemsize: int) -> dict[str, int]:
    """Bytes of each storage format for a weight of ``shape`` with ``nnz`` non-zeros."""
    numel, rows = int(torch.Size(shape).numel()), shape[0]
    col_bytes = 2 if numel // rows < 2**15 else 4
    return {
        "bitmask": nnz * itemsize + -(-numel // 8),
        "csr": nnz * (itemsize + col_bytes) + (rows + 1) * 4,
    }


class SparseWeight(nn.Module):
    """Parametrization rebuilding a dense weight from sparse buffers (the original is empty).

    Args:
        shape: the dense weight's shape.
        nnz: number of stored values.
        fmt: ``"bitmask"`` or ``"csr"``.
        dtype: dtype of the values.
    """

    def __init__(self, shape: tuple[int, ...], nnz: int, fmt: str, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.shape, self.format = tuple(shape), fmt
        numel, rows = int(torch.Size(shape).numel()), shape[0]
        self.register_buffer("values", torch.zeros(nnz, dtype=dtype))
        if fmt == "bitmask":
            self.register_buffer("bitmask", torch.zeros(-(-numel // 8), dtype=torch.uint8))
        else:
            col_dtype = torch.int16 if numel // rows < 2**15 else torch.int32
            self.register_buffer("crow", torch.zeros(rows + 1, dtype=torch.int32))
            self.register_buffer("col", torch.zeros(nnz, dtype=col_dtype))

    @classmethod
    def from_dense(cls, weight: torch.Tensor, fmt: str | None = None) -> SparseWeight:
        """Store ``weight``'s non-zeros (in ``fmt``, by default the smaller format)."""
        weight = weight.detach()
        mask = weight != 0
        nnz = int(mask.sum())
        sizes = storage_bytes(tuple(weight.shape), nnz, weight.element_size())
        fmt = fmt or min(sizes, key=sizes.get)
        new = cls(tuple(weight.shape), nnz, fmt, weight.dtype).to(weight.device)
        new.values.copy_(weight[mask])
        if fmt == "bitmask":
            new.bitmask.copy_(pack_bits(mask))
        else:
            rows = mask.reshape(weight.shape[0], -1)
            new.crow[1:] = rows.sum(1).cumsum(0).to(torch.int32)
            new.col.copy_(rows.nonzero()[:, 1].to(new.col.dtype))
        return new

    def dense(self) -> torch.Tensor:
        """The dense weight."""
        numel = int(torch.Size(self.shape).numel())
        if self.format == "bitmask":
            mask = unpack_bits(self.bitmask, numel)
            return (
                torch.zeros(numel, dtype=self.values.dtype, device=self.values.device)
                .masked_scatter(mask, self.values)
                .view(self.shape)
            )
        rows, cols = self.shape[0], numel // self.shape[0]
        row = torch.repeat_interleave(torch.arange(rows, device=self.crow.device), self.crow.diff().long())
        out = torch.zeros(rows, cols, dtype=self.values.dtype, device=self.values.device)
        out[row, self.col.long()] = self.values
        return out.view(self.shape)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return self.dense()

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.new_empty(0)

    def logical_weights(self) -> list[torch.Tensor]:
        """The dense weight this storage represents (for parameter counts)."""
        return [self.dense()]

    def info(self) -> dict[str, Any]:
        """What `rebuild` needs to recreate this storage (JSON-ready)."""
        return {"shape": list(self.shape), "nnz": self.values.numel(), "format": self.format}


def to_sparse_storage(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Replace every `MaskedWeight` layer's weight by `SparseWeight`; returns their infos."""
    infos = {}
    for name, module in masked_layers(model).items():
        weight = module.weight.detach().clone()
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        storage = SparseWeight.from_dense(weight)
        parametrize.register_parametrization(module, "weight", storage, unsafe=True)
        module.parametrizations.weight.original.requires_grad_(False)
        infos[name] = storage.info()
    return infos


def rebuild_storage(model: nn.Module, infos: dict[str, dict[str, Any]]) -> None:
    """Recreate empty `SparseWeight` storages of the recorded sizes (weights load after)."""
    for name, info in infos.items():
        module = model.get_submodule(name)
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        storage = SparseWeight(tuple(info["shape"]), info["nnz"], info["format"], module.weight.dtype)
        parametrize.register_parametrization(module, "weight", storage.to(module.weight.device), unsafe=True)
        module.parametrizations.weight.original.requires_grad_(False)


def rebuild_masks(model: nn.Module, names: list[str]) -> None:
    """Register all-ones `MaskedWeight` parametrizations (the saved masks load after)."""
    for name in names:
        module = model.get_submodule(name)
        mask = MaskedWeight(torch.ones_like(module.weight, dtype=torch.bool))
        parametrize.register_parametrization(module, "weight", mask)
