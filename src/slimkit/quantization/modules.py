"""Weight-only packed modules: `WeightOnlyLinear` and `WeightOnlyEmbedding` (2..8 bits, grouped).

Packed buffer layout (what ``sk.save`` writes; the same for both modules, weight ``[rows, cols]``
with ``rows = out_features`` / ``num_embeddings`` and ``cols = in_features`` / ``embedding_dim``):

- ``qweight``: ``uint8 [rows, n_groups * group_size * bits / 8]``. Unsigned codes in
  ``[0, 2**bits)`` of each row, the row zero-padded to ``n_groups * group_size`` columns, packed
  with `slimkit.quantization.packing.pack` (little-endian bit stream; for 4 bits byte ``k`` holds
  column ``2k`` in its low nibble and ``2k+1`` in its high nibble). Rows are contiguous, so row
  ``r`` / group ``g`` starts at byte ``(r * n_groups + g) * group_size * bits / 8`` — with 4 bits
  this is exactly ONNX ``MatMulNBits``' ``B`` reshaped to ``[N, n_blocks, blob_size]``.
- ``scales``: ``float32 [rows, n_groups]``.
- ``zero_points``: ``uint8 [rows, n_groups]`` unpacked codes (``2**(bits-1)`` when symmetric).

The weight is ``W[r, c] = (code[r, c] - zero_points[r, c // group_size]) * scales[r, c // group_size]``.
Per-channel quantization is the case ``group_size = cols`` (one group per row).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slimkit.core.errors import InvalidConfigError
from slimkit.quantization.packing import pack, packed_length, unpack
from slimkit.quantization.primitives import QuantSpec, check_bits

CHUNK_VALUES = 1 << 18
"""Weights quantized and packed per step (their int64 packing copies take ~2 MB each)."""


def weight_spec(bits: int, group_size: int, symmetric: bool) -> QuantSpec:
    """The spec of packed weights: unsigned codes, grouped along the last dim."""
    return QuantSpec(bits=bits, symmetric=symmetric, signed=False, group_size=group_size)


class PackedWeight(nn.Module):
    """Holds a ``[rows, cols]`` weight as packed codes + per-group scales and zero points.

    Args:
        rows, cols: logical weight shape.
        bits: 2..8.
        group_size: columns per group (``None``: one group per row, i.e. per channel).
    """

    def __init__(self, rows: int, cols: int, bits: int, group_size: int | None = None) -> None:
        super().__init__()
        check_bits(bits)
        self.rows, self.cols, self.bits = rows, cols, bits
        self.group_size = group_size or cols
        if self.group_size < 1:
            raise InvalidConfigError(f"group_size must be positive, got {group_size}")
        self.n_groups = -(-cols // self.group_size)
        padded = self.n_groups * self.group_size
        self.register_buffer("qweight", torch.zeros(rows, packed_length(padded, bits), dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(rows, self.n_groups))
        self.register_buffer("zero_points", torch.zeros(rows, self.n_groups, dtype=torch.uint8))

    def set_codes(self, codes: Tensor, scales: Tensor, zero_points: Tensor) -> None:
        """Store unsigned codes ``[rows, cols]`` with their ``[rows, n_groups]`` qparams."""
        scales = scales.reshape(self.rows, self.n_groups)
        zero_points = zero_points.reshape(self.rows, self.n_groups)
        for rows in self._row_chunks():
            self._store(rows, codes[rows], scales[rows], zero_points[rows])

    def quantize_(self, weight: Tensor, symmetric: bool = False) -> None:
        """Round-to-nearest min-max quantization of a float ``weight`` into this storage."""
        spec = weight_spec(self.bits, self.group_size, symmetric)
        for rows in self._row_chunks():
            self._store(rows, *spec.quantize_tensor(weight[rows].detach()))

    def _row_chunks(self) -> list[slice]:
        """Row ranges of about `CHUNK_VALUES` weights: rows are quantized and packed
        independently, so working a chunk at a time bounds the temporary copies."""
        step = max(1, CHUNK_VALUES // self.cols)
        return [slice(start, start + step) for start in range(0, self.rows, step)]

    def _store(self, rows: slice, codes: Tensor, scales: Tensor, zero_points: Tensor) -> None:
        """Pack the codes of ``rows`` and store them with their qparams."""
        padded = F.pad(codes.to(torch.uint8), (0, self.n_groups * self.group_size - self.cols))
        self.qweight[rows] = pack(padded, self.bits)
        self.scales[rows] = scales.reshape(-1, self.n_groups)
        self.zero_points[rows] = zero_points.reshape(-1, self.n_groups).to(torch.uint8)

    def codes(self, rows: Tensor | None = None) -> Tensor:
        """Unpacked ``uint8`` codes ``[rows, cols]`` (or of the selected ``rows`` only)."""
        packed = self.qweight if rows is None else self.qweight[rows]
        return unpack(packed, self.bits, self.n_groups * self.group_size)[..., : self.cols]

    def dequantize(self, rows: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The float weight ``[rows, cols]`` (or ``[*rows.shape, cols]`` for selected rows)."""
        scales = self.scales if rows is None else self.scales[rows]
        zeros = self.zero_points if rows is None else self.zero_points[rows]
        packed = self.qweight if rows is None else self.qweight[rows]
        codes = unpack(packed, self.bits, self.n_groups * self.group_size)
        groups = codes.reshape(*codes.shape[:-1], self.n_groups, self.group_size).float()
        weight = (groups - zeros.float().unsqueeze(-1)) * scales.float().unsqueeze(-1)
        return weight.reshape(*codes.shape[:-1], -1)[..., : self.cols].to(dtype)

    def extra_repr(self) -> str:
        return f"rows={self.rows}, cols={self.cols}, bits={self.bits}, group_size={self.group_size}"


class WeightOnlyLinear(nn.Module):
    """A Linear whose weight is stored packed (see the module doc for the layout); the forward
    dequantizes the weight on the fly and runs ``F.linear`` in the input's dtype.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        bits: 2..8.
        group_size: input columns per scale (``None``: per output channel).
    """

    def __init__(
        self, in_features: int, out_features: int, bits: int = 4, group_size: int | None = 128, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.packed = PackedWeight(out_features, in_features, bits, group_size)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_float(
        cls, linear: nn.Linear, bits: int = 4, group_size: int | None = 128, symmetric: bool = False
    ) -> WeightOnlyLinear:
        """Quantize ``linear`` with round-to-nearest min-max qparams."""
        new = cls(linear.in_features, linear.out_features, bits, group_size, linear.bias is not None)
        new.to(linear.weight.device)
        new.packed.quantize_(linear.weight, symmetric)
        if linear.bias is not None:
            new.bias.data.copy_(linear.bias.detach().float())
        return new

    @classmethod
    def from_codes(
        cls, codes: Tensor, scales: Tensor, zero_points: Tensor, bits: int, group_size: int | None, bias: Tensor | None
    ) -> WeightOnlyLinear:
        """Build from precomputed unsigned codes ``[out, in]`` and ``[out, n_groups]`` qparams
        (for algorithms such as GPTQ that choose the rounding themselves)."""
        out_features, in_features = codes.shape
        new = cls(in_features, out_features, bits, group_size, bias is not None).to(codes.device)
        new.packed.set_codes(codes, scales, zero_points)
        if bias is not None:
            new.bias.data.copy_(bias.detach().float())
        return new

    @property
    def weight(self) -> Tensor:
        """The dequantized ``[out, in]`` weight (for code that reads ``.weight``)."""
        return self.packed.dequantize()

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.packed.dequantize(dtype=x.dtype), bias)

    def logical_weights(self) -> list[Tensor]:
        """The dequantized weight, so `count_params` counts what this layer represents."""
        return [self.packed.dequantize()]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class WeightOnlyEmbedding(nn.Module):
    """An Embedding whose table is stored packed (module doc layout); a lookup unpacks and
    dequantizes only the rows it reads.

    Args:
        num_embeddings, embedding_dim, padding_idx: as ``nn.Embedding``.
        bits: 2..8.
        group_size: embedding columns per scale (``None``: one scale per row).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        bits: int = 4,
        group_size: int | None = 128,
        padding_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.packed = PackedWeight(num_embeddings, embedding_dim, bits, group_size)

    @classmethod
    def from_float(
        cls, embedding: nn.Embedding, bits: int = 4, group_size: int | None = 128, symmetric: bool = False
    ) -> WeightOnlyEmbedding:
        """Quantize ``embedding`` with round-to-nearest min-max qparams."""
        if embedding.max_norm is not None:
            raise InvalidConfigError("embeddings with max_norm renormalize their table at lookup; cannot pack them")
        new = cls(embedding.num_embeddings, embedding.embedding_dim, bits, group_size, embedding.padding_idx)
        new.to(embedding.weight.device)
        new.packed.quantize_(embedding.weight, symmetric)
        return new

    @property
    def weight(self) -> Tensor:
        """The dequantized ``[num_embeddings, embedding_dim]`` table (for code that reads it)."""
        return self.packed.dequantize()

    def forward(self, ids: Tensor) -> Tensor:
        return self.packed.dequantize(rows=ids)

    def logical_weights(self) -> list[Tensor]:
        """The dequantized table, so `count_params` counts what this layer represents."""
        return [self.packed.dequantize()]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}"
