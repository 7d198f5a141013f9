import pytest
import torch

import slimkit as sk
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.models.testing import ZOO
from slimkit.quantization import WeightOnly


def test_nan_in_calibration_data_names_the_batch():
    model = ZOO["residual"]()
    (x,) = model.example_inputs()
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="calibration batch 2"):
        sk.quantize(model, "int8-static", data=[x, x, bad])


def test_inf_produced_inside_the_model_names_the_batch_and_layer():
    model = ZOO["residual"]()
    (x,) = model.example_inputs()
    with torch.no_grad():
        next(model.parameters()).mul_(1e10)  # the first conv overflows on large (finite) inputs
    with pytest.raises(DataError, match=r"calibration batch 1 produces NaN/Inf at the"):
        sk.quantize(model, "int8-static", data=[x, x * 1e30])


def test_empty_or_missing_calibration_data():
    model = ZOO["residual"]()
    with pytest.raises(DataError, match="no batches"):
        sk.quantize(model, "int8-static", data=[])
    with pytest.raises(DataError, match="needs calibration data"):
        sk.quantize(model, "int8-static")


@pytest.mark.parametrize("bits", [1, 9, 16])
def test_bits_outside_2_to_8(bits):
    with pytest.raises(InvalidConfigError, match="bits"):
        sk.quantize(ZOO["attention"](), "weight-only", bits=bits)


def test_bad_group_size():
    with pytest.raises(InvalidConfigError, match="group_size"):
        WeightOnly.build(group_size=0)
    model = ZOO["attention"]()  # input dims 32 and 64
    with pytest.raises(InvalidConfigError, match="does not divide the input dimension 32"):
        sk.quantize(model, "weight-only", group_size=24, pad=False)
    padded = sk.quantize(model, "weight-only", group_size=24)  # padded storage, still exact layout
    assert padded.query.packed.n_groups == 2
    (x,) = model.example_inputs()
    assert torch.isfinite(padded(x)).all()


def test_unsupported_layers_skipped_warned_and_recorded():
    model = ZOO["lstm"]()
    with pytest.warns(UserWarning, match=r"1 layer\(s\) left in float: lstm"):
        q = sk.quantize(model, "int8-dynamic")
    state = sk.explain(q).details
    assert "lstm" in state["skipped"] and "head" in state["layers"]
    mha = ZOO["mha"]()
    with pytest.warns(UserWarning, match="MultiheadAttention"):
        q = sk.quantize(mha, "weight-only", group_size=16)
    assert "attn.out_proj" in sk.explain(q).skipped


def test_bad_options_and_overrides():
    with pytest.raises(InvalidConfigError, match="unknown option"):
        sk.quantize(ZOO["attention"](), "int8-dynamic", bits=4)
    with pytest.raises(InvalidConfigError, match="observer"):
        sk.quantize(ZOO["residual"](), "int8-static", observer="kl", data=[torch.randn(1, 3, 16, 16)])
    with pytest.raises(InvalidConfigError, match="names method 'gptq-x'"):
        sk.quantize(ZOO["attention"](), "weight-only", overrides={"ffn.*": {"method": "gptq-x"}})
    with pytest.raises(InvalidConfigError, match="matches no module"):
        sk.quantize(ZOO["attention"](), "weight-only", include="nothing.*")
