"""Layer-wise methods declare their statistics; the PTQ driver fills them all in one pass."""

import json
import warnings

import pytest
import torch

import slimkit as sk
from slimkit.core.data import TensorData
from slimkit.core.index import integrity_hash
from slimkit.quantization.algorithms import SmoothedLinear
from slimkit.quantization.modules import WeightOnlyLinear
from slimkit.quantization.qdq import QDQLayer

MIXED = {"ffn.*": {"method": "smoothquant", "alpha": 0.6}, "head": {"method": "bias-correction", "bits": 4}}


def _model_and_data():
    model = sk.load("slimkit.models.testing:TinyAttention")
    x = torch.randn(24, 8, 32, generator=torch.Generator().manual_seed(3))
    return model, x, TensorData(x, batch_size=8)


def _forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_three_methods_on_one_model_calibrate_in_one_pass():
    model, x, data = _model_and_data()
    calls = _forwards(model)
    mixed = sk.quantize(model, "int8-static", data=data, overrides=MIXED)
    assert len(calls) == 3  # one forward per calibration batch for every layer's statistics
    assert isinstance(mixed.ffn[0], SmoothedLinear) and isinstance(mixed.ffn[2], SmoothedLinear)
    assert isinstance(mixed.head, WeightOnlyLinear) and isinstance(mixed.query, QDQLayer)
    methods = {n: e["method"] for n, e in sk.explain(mixed).details["layers"].items()}
    assert methods["ffn.0"] == "smoothquant" and methods["head"] == "bias-correction"
    assert methods["query"] == "int8-static"


@pytest.mark.parametrize(("pattern", "method", "options"), [
    ("ffn.*", "smoothquant", {"alpha": 0.6}), ("head", "bias-correction", {"bits": 4}),
])  # fmt: skip
def test_a_layer_gets_the_same_numbers_mixed_as_alone(pattern, method, options):
    model, x, data = _model_and_data()
    mixed = sk.quantize(model, "int8-static", data=data, overrides=MIXED)
    alone = sk.quantize(model, method, data=data, include=pattern, **options)
    for name, module in alone.named_modules():
        if isinstance(module, SmoothedLinear | WeightOnlyLinear):
            ours = mixed.get_submodule(name)
            for (key, a), (_, b) in zip(module.state_dict().items(), ours.state_dict().items(), strict=True):
                assert torch.equal(a, b), (name, key)


def test_mixed_model_saves_and_loads_exactly(tmp_path):
    model, x, data = _model_and_data()
    mixed = sk.quantize(model, "int8-static", data=data, overrides=MIXED)
    loaded = sk.load(sk.save(mixed, tmp_path / "m"))
    assert torch.equal(loaded(x), mixed(x))


def _as_recorded_by_0_1(folder, state):
    meta = folder / "slimkit.json"
    index = json.loads(meta.read_text())
    index["transforms"][-1]["state"] = state
    index["integrity"] = integrity_hash(index)
    meta.write_text(json.dumps(index))


def test_smoothquant_and_bias_correction_records_of_0_1_still_load(tmp_path):
    model, x, data = _model_and_data()
    smooth = sk.quantize(model, "smoothquant", data=data)
    folder = sk.save(smooth, tmp_path / "s")
    _as_recorded_by_0_1(folder, {"linear": list(sk.explain(smooth).details["layers"])})
    assert torch.equal(sk.load(folder)(x), smooth(x))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corrected = sk.quantize(model, "bias-correction", data=data, embeddings=False)
    folder = sk.save(corrected, tmp_path / "b")
    linear = list(sk.explain(corrected).details["layers"])
    _as_recorded_by_0_1(folder, {"linear": linear, "embedding": [], "added_bias": [], "uncorrected": []})
    assert torch.equal(sk.load(folder)(x), corrected(x))


class HeadReadDirectly(torch.nn.Module):
    """Its head's weight is read with F.linear: the head module never runs."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = torch.nn.Linear(32, 32), torch.nn.Linear(32, 10)

    def forward(self, x):
        return torch.nn.functional.linear(self.embed(x).mean(1), self.head.weight, self.head.bias)


def test_a_linear_the_data_never_reaches_is_rounded_uncorrected():
    _, _, data = _model_and_data()
    corrected = sk.quantize(HeadReadDirectly(), "bias-correction", data=data)
    assert sk.explain(corrected).details["uncorrected"] == ["head"]
    assert isinstance(corrected.head, WeightOnlyLinear) and corrected.head.bias is not None
    assert "uncorrected" not in sk.explain(sk.quantize(HeadReadDirectly(), "bias-correction", data=data,
                                                       include="embed")).details  # fmt: skip
