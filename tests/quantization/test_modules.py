import copy

import pytest
import torch
from torch import nn

from slimkit.measure import count_params, sqnr_db
from slimkit.quantization import Int8DynamicLinear, QDQLayer, WeightOnlyEmbedding, WeightOnlyLinear, modules
from slimkit.quantization.packing import unpack
from slimkit.quantization.primitives import QuantSpec


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [32, 50, None])
def test_weight_only_linear_matches_dequantized_dense(bits, group_size):
    linear = nn.Linear(100, 24)
    q = WeightOnlyLinear.from_float(linear, bits, group_size)
    spec = QuantSpec(bits=bits, symmetric=False, signed=False, group_size=group_size or 100)
    codes, scale, zp = spec.quantize_tensor(linear.weight.detach())
    reference = spec.dequantize(codes, scale, zp).double()
    x = torch.randn(5, 100)
    expected = x.double() @ reference.T + linear.bias.double()
    torch.testing.assert_close(q(x).double(), expected, rtol=1e-5, atol=1e-5)
    assert q.packed.qweight.dtype == torch.uint8
    padded = q.packed.n_groups * q.packed.group_size
    assert q.packed.qweight.numel() == 24 * -(-padded * bits // 8)
    assert torch.equal(unpack(q.packed.qweight, bits, padded)[:, :100], codes)
    assert count_params(nn.Sequential(q)) == count_params(nn.Sequential(linear))
    floor = {2: 5, 3: 12, 4: 18, 8: 40}[bits]
    assert sqnr_db(linear.weight.detach(), q.weight) > floor


def test_weight_only_embedding_reads_only_rows():
    emb = nn.Embedding(50, 64, padding_idx=0)
    q = WeightOnlyEmbedding.from_float(emb, bits=4, group_size=32)
    ids = torch.tensor([[1, 5, 49], [0, 2, 2]])
    torch.testing.assert_close(q(ids), q.weight[ids], rtol=0, atol=0)
    assert sqnr_db(emb(ids).detach(), q(ids)) > 18
    assert q.packed.qweight.shape == (50, 32)


@pytest.mark.parametrize("bits", [3, 4])
def test_packing_in_row_chunks_matches_one_pass(monkeypatch, bits):
    """Large weights are quantized and packed a few rows at a time; the result is unchanged."""
    linear = nn.Linear(40, 37)
    whole = WeightOnlyLinear.from_float(linear, bits, 16)
    monkeypatch.setattr(modules, "CHUNK_VALUES", 100)  # 2 rows per chunk, last chunk partial
    chunked = WeightOnlyLinear.from_float(linear, bits, 16)
    codes = whole.packed.codes()
    scales, zeros = whole.packed.scales, whole.packed.zero_points
    stored = WeightOnlyLinear.from_codes(codes, scales, zeros, bits, 16, linear.bias)
    for q in (chunked, stored):
        for name, buffer in whole.packed.named_buffers():
            assert torch.equal(getattr(q.packed, name), buffer), name


def test_int8_dynamic_linear_close_to_float_and_deepcopy():
    linear = nn.Linear(64, 32)
    q = Int8DynamicLinear.from_float(linear)
    x = torch.randn(8, 64)
    assert sqnr_db(linear(x).detach(), q(x)) > 30
    clone = copy.deepcopy(q)
    assert torch.equal(clone(x), q(x))
    assert q.weight_int8.dtype == torch.int8 and set(q.state_dict()) == {"weight_int8", "weight_scale", "bias"}
    q.weight_scale.mul_(2)
    q.repack()
    assert not torch.equal(clone(x), q(x))


def test_int8_dynamic_per_token_scales_keep_quiet_rows_exact():
    """One outlier token must not cost the other tokens their resolution (float64 reference)."""
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(8, 64)
    x[0] *= 1000  # a token with a huge range, as after GELU in BERT's FFN
    reference = linear.double()(x.double()).detach()
    quiet = slice(1, None)
    per_token = Int8DynamicLinear.from_float(linear.float(), per_token=True)(x)
    per_call = Int8DynamicLinear.from_float(linear.float(), per_token=False)(x)
    assert sqnr_db(reference[quiet], per_token[quiet]) > 30
    assert sqnr_db(reference[quiet], per_call[quiet]) < 20
    assert sqnr_db(reference[0], per_token[0]) > 30


def test_qdq_conv_simulates_int8():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    in_q = QuantSpec(bits=8, symmetric=False, signed=False).qparams(x.min(), x.max())
    layer = QDQLayer.from_float(conv, in_q, None)
    y = layer(x)
    assert sqnr_db(conv(x).detach(), y) > 30
    assert layer.weight_int8.abs().max() <= 127
