"""int8-dynamic with pair-bounded weights and 8-bit activations, alone and under smoothquant."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import slimkit as sk
from slimkit.core.errors import DataError
from slimkit.core.index import integrity_hash
from slimkit.measure import sqnr_db
from slimkit.quantization.algorithms.smoothquant import SmoothedLinear, SmoothQuant
from slimkit.quantization.dynamic import PAIR_BOUND, Int8DynamicLinear, onnx_qparams, pair_bounded_codes

U8_PAIR_LIMIT = 255 * PAIR_BOUND
"""The largest uint8 x int8 pair sum of pair-bounded codes: inside int16 (32767)."""


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 33),
    seed=st.integers(0, 2**16),
    log_spread=st.floats(0, 6),
)
def test_pair_bound_holds_and_codes_round_to_nearest(rows, cols, seed, log_spread):
    torch.manual_seed(seed)
    weight = torch.randn(rows, cols) * torch.logspace(0, log_spread, cols)[torch.randperm(cols)]
    codes, scale = pair_bounded_codes(weight)
    padded = torch.nn.functional.pad(codes.int().abs(), (0, cols % 2))
    pair_sums = padded.reshape(rows, -1, 2).sum(-1)
    assert int(pair_sums.max()) <= PAIR_BOUND and int(codes.abs().max()) <= PAIR_BOUND - 1
    assert 255 * int(pair_sums.max()) <= U8_PAIR_LIMIT <= 2**15 - 1
    error = (codes.float() * scale[:, None] - weight).abs()
    assert bool((error <= scale[:, None] / 2 * (1 + 1e-6)).all())  # round to nearest, nothing clipped


def _float64_reference(layer: Int8DynamicLinear, x: torch.Tensor) -> torch.Tensor:
    """The layer's integer codes and scales multiplied out in float64 (DynamicQuantizeLinear's
    activation parameters, per tensor)."""
    x = x.float()
    scale, zero_point = onnx_qparams(x)
    codes = torch.clamp(torch.round(x / scale) + zero_point, 0, 255)
    acc = (codes - zero_point).double() @ layer.weight_int8.double().T
    return acc * (scale.double() * layer.weight_scale.double()) + layer.bias.double()


@pytest.mark.parametrize("smoothed", [False, True])
def test_eight_bit_activations_match_a_float64_reference_of_the_codes(smoothed):
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    x = torch.randn(6, 96) * 3
    x[0, 7] = 80.0  # one outlier sets the range of the whole tensor
    factors = x.abs().amax(0).pow(0.8) / linear.weight.detach().abs().amax(0).pow(0.2) if smoothed else None
    weight = linear.weight.detach() * (factors[None, :] if smoothed else 1.0)  # smoothquant's weight
    layer = Int8DynamicLinear.from_float(linear, reduce_range=True, weight=weight, per_token=False, pair_bounded=True)
    x = x / factors if smoothed else x  # and its input
    assert not layer.act_reduce_range  # pair-bounded codes cannot saturate: 8 bits everywhere
    with torch.no_grad():
        got, want = layer(x).double(), _float64_reference(layer, x)
    # int32 accumulation is exact: only the float32 dequantization rounds (relative 2^-23 a term)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_smoothing_is_exact_in_float_and_helps_an_outlier_channel():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(16, 64)
    x[:, 5] *= 60.0  # an outlier channel
    factors = x.abs().amax(0).pow(0.8) / linear.weight.detach().abs().amax(0).pow(0.2)
    options = SmoothQuant(act_granularity="tensor", pair_bounded=True)
    plain = Int8DynamicLinear.from_float(linear, **options.layer_options())
    smooth = SmoothedLinear.from_float(linear, factors, options)
    assert smooth.inner.pair_bounded and not smooth.inner.per_token
    with torch.no_grad():
        exact = linear(x)
        rescaled = (x * smooth.inv_scale) @ (linear.weight * factors[None]).T + linear.bias
        torch.testing.assert_close(rescaled, exact, rtol=1e-4, atol=1e-4)
        assert sqnr_db(exact, smooth(x)) > sqnr_db(exact, plain(x)) + 6


def _tiny():
    return sk.load("slimkit.models.testing:TinyAttention")


def test_smoothing_needs_data_and_round_trips(tmp_path):
    model = _tiny()
    inputs = model.example_inputs()
    smoothed = {"method": "smoothquant", "alpha": 0.8, "act_granularity": "tensor", "pair_bounded": True}
    with pytest.raises(DataError, match="calibration data"):
        sk.quantize(_tiny(), "int8-dynamic", overrides={"ffn.*": smoothed})
    data = [inputs[0] + 0.1 * torch.randn_like(inputs[0]) for _ in range(3)]
    options = {"act_granularity": "tensor", "pair_bounded": True, "overrides": {"ffn.*": smoothed}}
    q = sk.quantize(model, "int8-dynamic", data=data, **options)
    layers = {n: m for n, m in q.named_modules() if isinstance(m, (Int8DynamicLinear, SmoothedLinear))}
    assert {n for n, m in layers.items() if isinstance(m, SmoothedLinear)} == {
        n for n in layers if n.startswith("ffn.") and not n.endswith(".inner")
    }
    assert all(m.pair_bounded for m in layers.values() if isinstance(m, Int8DynamicLinear))
    sk.save(q, tmp_path)
    loaded = sk.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(q(*inputs), loaded(*inputs))


def _strip(value, keys):
    if isinstance(value, dict):
        return {k: _strip(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_strip(v, keys) for v in value]
    return value


def test_a_folder_saved_before_these_fields_loads(tmp_path):
    model = _tiny()
    inputs = model.example_inputs()
    q = sk.quantize(model, "int8-dynamic")
    sk.save(q, tmp_path)
    record = tmp_path / "slimkit.json"
    old = _strip(json.loads(record.read_text()), {"pair_bounded"})  # as 0.2 wrote it
    old["integrity"] = integrity_hash(old)
    record.write_text(json.dumps(old))
    assert "pair_bounded" not in record.read_text() and "smoothing" not in record.read_text()
    loaded = sk.load(tmp_path)
    assert not any(m.pair_bounded for m in loaded.modules() if isinstance(m, Int8DynamicLinear))
    assert not any(isinstance(m, SmoothedLinear) for m in loaded.modules())
    with torch.no_grad():
        assert torch.equal(q(*inputs), loaded(*inputs))
