import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.core.errors import InvalidConfigError
from slimkit.measure import sqnr_db
from slimkit.quantization.primitives import QuantSpec, cast16, dequantize, qparams, qrange, quantize

specs = st.builds(
    QuantSpec,
    bits=st.integers(2, 8),
    symmetric=st.booleans(),
    signed=st.booleans(),
    narrow_range=st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(spec=specs, seed=st.integers(0, 2**16), rows=st.integers(1, 5), cols=st.integers(1, 40))
def test_round_trip_error_at_most_half_a_step(spec, seed, rows, cols):
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 3
    if spec.symmetric and not spec.signed and spec.narrow_range:
        spec = spec.with_(narrow_range=False)
    for granular in (spec, spec.with_(axis=0), spec.with_(group_size=7)):
        q, scale, zp = granular.quantize_tensor(x)
        qmin, qmax = granular.range
        assert q.min() >= qmin and q.max() <= qmax
        err = (granular.dequantize(q, scale, zp) - x).abs()
        if granular.group_size:
            step = scale.repeat_interleave(7, -1)[:, :cols]
        elif granular.axis is not None:
            step = scale[:, None].expand_as(x)
        else:
            step = scale.expand_as(x)
        # in range by construction (min-max qparams): |error| <= scale / 2 (+ float slack)
        assert bool((err <= step / 2 * (1 + 1e-4) + 1e-6).all())


@pytest.mark.parametrize("signed", [True, False])
def test_per_tensor_matches_torch_quantize(signed):
    x = torch.randn(64, 33)
    scale, zp = qparams(x.min(), x.max(), 8, symmetric=False, signed=signed)
    q = quantize(x, scale, zp, *qrange(8, signed))
    dtype = torch.qint8 if signed else torch.quint8
    ref = torch.quantize_per_tensor(x, float(scale), int(zp), dtype).int_repr()
    assert torch.equal(q, ref)


def test_per_channel_matches_torch_and_dequantize():
    x = torch.randn(8, 16) * torch.arange(1, 9)[:, None]
    spec = QuantSpec(bits=8, axis=0)
    q, scale, zp = spec.quantize_tensor(x)
    ref = torch.quantize_per_channel(x, scale.double(), zp.long(), 0, torch.qint8)
    diff = (q.int() - ref.int_repr().int()).abs()  # torch multiplies by 1/scale: ties may round apart
    assert diff.max() <= 1 and (diff == 0).float().mean() > 0.99
    same = diff == 0
    torch.testing.assert_close(
        dequantize(q, scale, zp, axis=0)[same], ref.dequantize().float()[same], rtol=0, atol=1e-6
    )


def test_per_channel_beats_per_tensor_on_unequal_channel_ranges():
    w = torch.randn(32, 64) * torch.logspace(-2, 1, 32)[:, None]
    for bits in (4, 8):
        tensor_spec = QuantSpec(bits=bits)
        chan_spec = QuantSpec(bits=bits, axis=0)
        q1 = tensor_spec.dequantize(*tensor_spec.quantize_tensor(w))
        q2 = chan_spec.dequantize(*chan_spec.quantize_tensor(w))
        assert sqnr_db(w, q2) > sqnr_db(w, q1) + 6


def test_group_padding_does_not_widen_range():
    x = torch.tensor([[1.0, 2.0, 3.0, 10.0, 20.0]])
    lo, hi = QuantSpec(group_size=3).minmax(x)
    assert lo.tolist() == [[1.0, 10.0]] and hi.tolist() == [[3.0, 20.0]]


def test_fake_quantize_straight_through():
    x = torch.randn(10, requires_grad=True)
    spec = QuantSpec(bits=4)
    _, scale, zp = spec.quantize_tensor(x.detach())
    y = spec.fake_quantize(x, scale, zp)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(10))
    assert torch.allclose(y, spec.dequantize(spec.quantize(x.detach(), scale, zp), scale, zp))


def test_symmetric_zero_point_and_narrow_range():
    scale, zp = qparams(torch.tensor(-1.0), torch.tensor(2.0), 8, narrow_range=True)
    assert int(zp) == 0 and abs(float(scale) - 2 / 127) < 1e-7
    _, zpu = qparams(torch.tensor(-1.0), torch.tensor(2.0), 8, signed=False)
    assert int(zpu) == 128


@pytest.mark.parametrize("bits", [1, 9, 16, 2.5])
def test_bits_outside_range_rejected(bits):
    with pytest.raises(InvalidConfigError, match="bits must be an integer from 2 to 8"):
        QuantSpec(bits=bits)


def test_cast16():
    x = torch.randn(4)
    assert cast16(x, "bf16").dtype == torch.bfloat16 and cast16(x).dtype == torch.float16
    with pytest.raises(InvalidConfigError):
        cast16(x, torch.float64)
