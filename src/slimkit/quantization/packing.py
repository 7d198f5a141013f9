"""Exact bit packing of unsigned b-bit codes (b = 1..8) into ``uint8``, along the last dim.

Layout (little-endian bit stream, the ONNX ``MatMulNBits`` / GGML convention for 4 bits):
value ``j`` of a row occupies bits ``j*b .. j*b+b-1`` of the row's bit stream, and byte ``k``
holds stream bits ``8k .. 8k+7``. So for 4 bits, byte ``k`` = ``v[2k] | v[2k+1] << 4`` (low
nibble first); for 2 bits, ``v[4k] | v[4k+1] << 2 | ...``; for 3 bits, 8 values fill 3 bytes.
A row of ``n`` values takes ``ceil(n * b / 8)`` bytes (the tail is zero-padded to whole units
of ``lcm(b, 8) / b`` values).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from slimkit.core.errors import InvalidConfigError


def _unit(bits: int) -> tuple[int, int]:
    """(values, bytes) per packing unit."""
    if not 1 <= bits <= 8:
        raise InvalidConfigError(f"can pack 1..8-bit values, got bits={bits}")
    lcm = bits * 8 // math.gcd(bits, 8)
    return lcm // bits, lcm // 8


def packed_length(n: int, bits: int) -> int:
    """Bytes that ``n`` values of ``bits`` bits take in a packed row."""
    return -(-n * bits // 8)


def pack(values: Tensor, bits: int) -> Tensor:
    """Pack codes in ``[0, 2**bits)`` along the last dim into ``uint8``.

    Args:
        values: integer tensor ``[..., n]`` (any int dtype), each value in ``[0, 2**bits)``.
        bits: 1..8.

    Returns:
        ``uint8`` tensor ``[..., ceil(n * bits / 8)]``.

    Raises:
        InvalidConfigError: when a value does not fit in ``bits`` bits.
    """
    per, nbytes = _unit(bits)
    n = values.shape[-1]
    v = values.to(torch.int64)
    if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 1 << bits):
        raise InvalidConfigError(f"values to pack must lie in [0, {(1 << bits) - 1}] for {bits} bits")
    if bits == 8:
        return v.to(torch.uint8)
    v = torch.nn.functional.pad(v, (0, -n % per)).reshape(*v.shape[:-1], -1, per)
    shifts = torch.arange(per, device=v.device, dtype=torch.int64) * bits
    words = (v << shifts).sum(-1, keepdim=True)
    byte_shifts = torch.arange(nbytes, device=v.device, dtype=torch.int64) * 8
    packed = ((words >> byte_shifts) & 0xFF).reshape(*v.shape[:-2], -1)
    return packed[..., : packed_length(n, bits)].to(torch.uint8)


def unpack(packed: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of `pack`: ``uint8 [..., ceil(n*bits/8)]`` -> ``uint8 [..., n]`` codes."""
    per, nbytes = _unit(bits)
    if packed.shape[-1] != packed_length(n, bits):
        raise InvalidConfigError(
            f"packed rows hold {packed.shape[-1]} bytes but {n} values of {bits} bits need {packed_length(n, bits)}"
        )
    if bits == 8:
        return packed.to(torch.uint8)
    if nbytes == 1:  # 1, 2, 4 bits: shift bytes directly, no wide words
        shifts = torch.arange(per, device=packed.device, dtype=torch.uint8) * bits
        values = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
        return values.reshape(*packed.shape[:-1], -1)[..., :n]
    p = packed.to(torch.int64)
    p = torch.nn.functional.pad(p, (0, -p.shape[-1] % nbytes)).reshape(*p.shape[:-1], -1, nbytes)
    byte_shifts = torch.arange(nbytes, device=p.device, dtype=torch.int64) * 8
    words = (p << byte_shifts).sum(-1, keepdim=True)
    shifts = torch.arange(per, device=p.device, dtype=torch.int64) * bits
    values = ((words >> shifts) & ((1 << bits) - 1)).reshape(*p.shape[:-2], -1)
    return values[..., :n].to(torch.uint8)
