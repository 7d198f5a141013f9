"""SmoothQuant (exact smoothing, better W8A8 with outliers) and empirical bias correction."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.data import TensorData
from slimkit.core.errors import DataError
from slimkit.measure import sqnr_db
from slimkit.quantization.algorithms import SmoothedLinear
from slimkit.quantization.algorithms.smoothquant import smoothing_factors


class OutlierNet(nn.Module):
    """One Linear whose inputs have a few channels 50x larger than the rest (LLM-style)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = nn.Linear(64, 32)
        self.fc.weight.data = torch.randn(32, 64, generator=g) * 0.1

    def forward(self, x):
        return self.fc(x)

    @staticmethod
    def inputs(n: int = 256) -> torch.Tensor:
        x = torch.randn(n, 64, generator=torch.Generator().manual_seed(1))
        x[:, :3] *= 50.0
        return x


def test_smoothed_float_layer_is_equivalent():
    model = OutlierNet()
    x = OutlierNet.inputs()
    smoothed = sk.quantize(model, "smoothquant", data=TensorData(x), quantize=False, alpha=0.7)
    assert isinstance(smoothed.fc, SmoothedLinear)
    ref, out = model(x), smoothed(x)
    assert float((ref - out).norm() / ref.norm()) < 1e-5
    factors = 1 / smoothed.fc.inv_scale
    expected = smoothing_factors(x.abs().amax(0), model.fc.weight, 0.7)
    torch.testing.assert_close(factors, expected, rtol=1e-5, atol=0)


def test_smoothquant_improves_w8a8_with_outliers():
    model = OutlierNet()
    x = OutlierNet.inputs()
    plain = sk.quantize(model, "int8-dynamic")
    smooth = sk.quantize(model, "smoothquant", data=TensorData(x[:128]), alpha=0.5)
    held_out = OutlierNet.inputs(512)[256:]
    ref = model(held_out)
    assert sqnr_db(ref, smooth(held_out)) > sqnr_db(ref, plain(held_out)) + 3.0


def test_smoothquant_round_trip(tmp_path):
    model = sk.load("slimkit.models.testing:TinyAttention")
    x = torch.randn(32, 8, 32)
    q = sk.quantize(model, "smoothquant", data=TensorData(x, batch_size=8))
    assert sqnr_db(model(x), q(x)) > 25
    sk.save(q, tmp_path / "q")
    assert torch.equal(sk.load(tmp_path / "q")(x), q(x))


class BiasedNet(nn.Module):
    """A Linear with no bias fed inputs of large mean: rounding the weight shifts every output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(48, 16, bias=False)

    def forward(self, x):
        return self.fc(x)


def test_bias_correction_removes_output_shift(tmp_path):
    torch.manual_seed(0)
    model = BiasedNet()
    x = torch.randn(512, 48) * 0.2 + 3.0
    calib, test = x[:256], x[256:]
    rtn = sk.quantize(model, "weight-only", bits=3, group_size=None)
    corrected = sk.quantize(model, "bias-correction", data=TensorData(calib), bits=3, group_size=None)
    with torch.no_grad():
        ref = model(test)
        shift_rtn = (ref - rtn(test)).mean(0).abs().mean()
        shift_bc = (ref - corrected(test)).mean(0).abs().mean()
        assert torch.equal(rtn.fc.packed.qweight, corrected.fc.packed.qweight)  # same rounding
        assert float(shift_bc) < 0.1 * float(shift_rtn)
        assert sqnr_db(ref, corrected(test)) > sqnr_db(ref, rtn(test)) + 3
    assert sk.explain(corrected).details["added_bias"] == ["fc"]
    sk.save(corrected, tmp_path / "bc")
    assert torch.equal(sk.load(tmp_path / "bc")(test), corrected(test))


@pytest.mark.parametrize("method", ["smoothquant", "bias-correction"])
def test_calibration_methods_need_finite_data(method):
    with pytest.raises(DataError, match="calibration data"):
        sk.quantize(OutlierNet(), method)
    bad = OutlierNet.inputs(64)
    bad[3, 3] = float("inf")
    with pytest.raises(DataError, match="batch 0"):
        sk.quantize(OutlierNet(), method, data=TensorData(bad))
