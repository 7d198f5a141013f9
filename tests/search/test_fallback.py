"""`fallback`: int8-static with the fewest float layers that meet a measured budget."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.data import DataSplits, TensorData
from slimkit.core.errors import InvalidConfigError
from slimkit.measure.metrics import evaluate
from slimkit.quantization.ptq import KEPT_FLOAT
from slimkit.search import Cache, fallback


class Outliers(nn.Module):
    """An MLP whose ``b`` and ``d`` inputs carry one huge channel: per-tensor int8 ranges crush the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        scale = torch.ones(16)
        scale[0] = 300.0
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b(torch.tanh(self.a(x)) * self.scale) / 30
        return self.d(torch.tanh(self.c(h)) * self.scale)


@pytest.fixture(scope="module")
def outliers():
    torch.manual_seed(0)
    model = Outliers().eval()
    x = torch.randn(64, 8)
    data = DataSplits(
        train=TensorData(x[:16], None, 16), calibration=TensorData(x[:32], None, 16),
        test=TensorData(x[32:], None, 16), metric="fidelity",
    )  # fmt: skip
    return model, data


def _drop(model, quantized, data) -> float:
    return 1 - evaluate(quantized, data.calibration, "fidelity", reference=model)["cosine"]


def test_keeps_the_fewest_layers_float_that_meet_the_budget(outliers):
    model, data = outliers
    budget = 1e-4
    result = fallback(model, data, max_metric_drop=budget)
    assert result.full_drop > budget  # plain int8-static breaks the budget
    assert result.met and result.drop <= budget and result.float_layers
    assert _drop(model, result.model, data) == pytest.approx(result.drop, abs=1e-9)  # the returned model was scored
    assert set(result.float_layers) | set(result.quantized) == {"a", "b", "c", "d"}
    for name in result.float_layers:  # 1-minimal: quantizing any float layer too breaks the budget
        others = [k for k in result.float_layers if k != name]
        more = sk.quantize(model, "int8-static", data=data.calibration, overrides={k: None for k in others})
        assert _drop(model, more, data) > budget, name
    ranked = [name for name, _ in result.ranking]
    assert result.float_layers == [n for n in ranked if n in result.float_layers]  # most sensitive first
    assert result.probes[0] == ((), result.full_drop)
    skipped = sk.explain(result.model).skipped
    assert {n: skipped[n] for n in result.float_layers} == dict.fromkeys(result.float_layers, KEPT_FLOAT)
    assert all(not isinstance(result.model.get_submodule(n), nn.Linear) for n in result.quantized)


def test_the_result_saves_and_loads_with_its_float_layers(outliers, tmp_path):
    model, data = outliers
    result = fallback(model, data, max_metric_drop=1e-4)
    loaded = sk.load(sk.save(result.model, tmp_path / "model"))
    x = data.test.x
    torch.testing.assert_close(loaded(x), result.model(x), rtol=0, atol=0)
    assert all(type(loaded.get_submodule(n)) is nn.Linear for n in result.float_layers)


def test_a_budget_int8_meets_keeps_nothing_float(outliers):
    model, data = outliers
    result = fallback(model, data, max_metric_drop=0.5)
    assert result.float_layers == [] and result.ranking == [] and result.met
    assert result.drop == result.full_drop <= 0.5


def test_a_rerun_scores_from_the_cache(outliers, tmp_path, monkeypatch):
    model, data = outliers
    first = fallback(model, data, max_metric_drop=1e-4, cache=tmp_path)

    def no_scoring(*_):
        raise AssertionError("scored again")

    monkeypatch.setattr("slimkit.search.accuracy_aware.Scorer.__call__", no_scoring)
    again = fallback(model, data, max_metric_drop=1e-4, cache=Cache(tmp_path))
    assert again.float_layers == first.float_layers and again.drop == first.drop


def test_bad_budgets_and_models_are_refused(outliers):
    model, data = outliers
    with pytest.raises(InvalidConfigError, match="max_metric_drop must be >= 0"):
        fallback(model, data, max_metric_drop=-0.1)
    with pytest.raises(InvalidConfigError, match="quantizes no layer"):
        fallback(nn.Sequential(nn.Tanh()), data, max_metric_drop=0.01, metric="fidelity")
