import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.core.errors import InvalidConfigError
from slimkit.quantization.packing import pack, packed_length, unpack


@settings(max_examples=80, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(1, 4), n=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_pack_unpack_exact(bits, rows, n, seed):
    values = torch.randint(0, 1 << bits, (rows, n), generator=torch.Generator().manual_seed(seed))
    packed = pack(values, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (rows, packed_length(n, bits)) == (rows, -(-n * bits // 8))
    assert torch.equal(unpack(packed, bits, n).long(), values)


def test_three_bits_fill_three_bytes_per_eight_values():
    values = torch.arange(8)
    packed = pack(values, 3)
    assert packed.shape == (3,)
    word = sum(int(v) << (3 * i) for i, v in enumerate(values))
    assert packed.tolist() == [word & 255, (word >> 8) & 255, word >> 16]


def test_four_bits_low_nibble_first():
    assert pack(torch.tensor([1, 2, 15, 0]), 4).tolist() == [0x21, 0x0F]
    assert pack(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]


def test_out_of_range_values_rejected():
    with pytest.raises(InvalidConfigError, match="must lie in"):
        pack(torch.tensor([16]), 4)
    with pytest.raises(InvalidConfigError):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, 8)
