"""QAT: LSQ gradients, exact conversion to packed layers, training beats plain PTQ, round trip."""

import math

import pytest
import torch

import slimkit as sk
from slimkit.core.data import TensorData
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.measure import evaluate
from slimkit.quantization.algorithms.lowbit import LowBitLayer
from slimkit.quantization.algorithms.lsq import LSQQuantizer, QATWrapper


def test_lsq_forward_and_scaled_step_gradient():
    q = LSQQuantizer(bits=3, signed=True)
    q.scale.data.fill_(0.5)
    x = torch.tensor([-3.0, -0.6, 0.2, 0.74, 10.0])
    y = q(x)
    torch.testing.assert_close(y, torch.tensor([-2.0, -0.5, 0.0, 0.5, 1.5]))
    y.sum().backward()
    v = x / 0.5
    inside = torch.clamp(v, -4, 3)
    per_element = torch.where((v > -4) & (v < 3), inside.round() - v, inside)  # LSQ eq. 3
    g = 1 / math.sqrt(x.numel() * 3)
    torch.testing.assert_close(q.scale.grad, per_element.sum() * g)


def test_lowbit_conversion_is_exact():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(4, 6, 3, padding=1)
    wrapper = QATWrapper(layer, weight_bits=4, act_bits=8, act_signed=True)
    wrapper.act_quant.init_from(torch.tensor(3.0))
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = wrapper(x)
        converted = LowBitLayer.from_qat(wrapper)
        assert converted.packed.qweight.numel() == 6 * 4 * 9 // 2  # 4-bit: two codes a byte
        assert torch.equal(converted(x), expected)


def teacher_data():
    model = sk.load("slimkit.models.testing:TinyAttention")
    x = torch.randn(256, 8, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(-1)
    return model, TensorData(x[:192], y[:192], 32), TensorData(x[192:], y[192:], 32)


@pytest.mark.slow
def test_qat_beats_plain_ptq_and_round_trips(tmp_path):
    model, train, test = teacher_data()
    ptq = sk.quantize(model, "qat", data=train, bits=2, act_bits=8, finetune={"epochs": 0})
    qat = sk.quantize(model, "qat", data=train, bits=2, act_bits=8, finetune={"epochs": 6, "lr": 2e-3})
    assert isinstance(qat.query, LowBitLayer)
    cos_ptq = evaluate(ptq, test, "fidelity", reference=model)["cosine"]
    cos_qat = evaluate(qat, test, "fidelity", reference=model)["cosine"]
    assert cos_qat > cos_ptq + 0.01
    sk.save(qat, tmp_path / "qat")
    x = test.x[:4]
    assert torch.equal(sk.load(tmp_path / "qat")(x), qat(x))


def test_qat_bad_inputs():
    model, train, _ = teacher_data()
    with pytest.raises(DataError, match="calibration data"):
        sk.quantize(model, "qat")
    with pytest.raises(InvalidConfigError, match="does not divide"):
        sk.quantize(model, "qat", data=train, group_size=5, finetune={"epochs": 0})
    with pytest.raises(InvalidConfigError, match="bits"):
        sk.quantize(model, "qat", data=train, bits=1)


def test_the_old_weight_bits_spelling_still_works_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="option 'weight_bits' is now 'bits'"):
        config = sk.quantization.qat.QAT(weight_bits=3)
    assert config.bits == 3
