import json

import pytest
import torch

import slimkit as sk
from slimkit.core.data import TensorData
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.measure.size import artifact_bytes
from slimkit.models.testing import ResidualNet
from slimkit.report import comparison_table, profile_table


def _data(model, n=16):
    x = torch.randn(n, 3, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    return TensorData(x, y, batch_size=8)


def test_profile_measures_everything():
    model = ResidualNet()
    prof = sk.profile(model, data=_data(model), batch_sizes=(1, 4), threads=1, budget_s=0.05)
    assert prof.params == sum(p.numel() for p in model.parameters())
    assert prof.nonzero_params <= prof.params
    assert set(prof.latency) == {1, 4}
    assert all(lat.p50_ms <= lat.p90_ms for lat in prof.latency.values())
    assert prof.threads == 1
    assert prof.metrics == {"accuracy": 1.0}  # targets are the model's own predictions
    assert prof.macs > 0 and sum(prof.macs_by_kind.values()) == prof.macs
    assert prof.peak_memory_bytes >= 4 * prof.params
    # size is exactly what sk.save writes
    assert prof.size_bytes > 4 * prof.params
    json.dumps(prof.to_dict())


def test_profile_size_equals_saved_artifact(tmp_path):
    model = ResidualNet()
    out = sk.save(model, tmp_path / "o")
    prof = sk.profile(model, budget_s=0.01)
    # the index stores the source spec; profile of an unsaved copy must be within a few bytes
    assert abs(prof.size_bytes - artifact_bytes(out)) < 64
    assert sk.profile(out, budget_s=0.01).size_bytes == artifact_bytes(out)


def test_fidelity_against_reference():
    model = ResidualNet()
    noisy = ResidualNet()
    noisy.load_state_dict(model.state_dict())
    with torch.no_grad():
        noisy.head.weight.add_(0.01 * torch.randn_like(noisy.head.weight))
    data = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    same = sk.profile(model, data=data, metric="fidelity", reference=model, budget_s=0.01).metrics
    assert same["cosine"] == pytest.approx(1.0, abs=1e-6) and same["sqnr_db"] > 100
    off = sk.profile(noisy, data=data, metric="fidelity", reference=model, budget_s=0.01).metrics
    assert 0.9 < off["cosine"] < 1.0 and 10 < off["sqnr_db"] < 80


def test_fidelity_reference_defaults_to_source():
    model = sk.load("slimkit.models.testing:ResidualNet")
    data = [torch.randn(2, 3, 16, 16)]
    metrics = sk.profile(model, data=data, metric="fidelity", budget_s=0.01).metrics
    # the reference is rebuilt from the factory (fresh random weights), so fidelity is poor but measured
    assert metrics["cosine"] < 0.999


def test_compare_ratios_and_tables():
    big, small = ResidualNet(width=8), ResidualNet(width=4)
    a = sk.profile(big, budget_s=0.02)
    b = sk.profile(small, budget_s=0.02)
    c = sk.compare(a, b)
    assert c.ratios["params"] == pytest.approx(b.params / a.params)
    assert c.ratios["macs"] < 0.5 and c.ratios["size"] < 0.5
    assert "latency_p50_bs1" in c.ratios
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(profile_table(a))
    console.print(comparison_table(c))
    text = console.export_text()
    assert "MACs" in text and "ratio" in text
    json.dumps(c.to_dict())


def test_profile_bad_inputs():
    model = ResidualNet()
    with pytest.raises(DataError, match="forward failed"):
        sk.profile(model, example_inputs=(torch.randn(1, 5, 16, 16),))
    with pytest.raises(InvalidConfigError, match="batch_sizes"):
        sk.profile(model, batch_sizes=(0,))
    with pytest.raises(InvalidConfigError, match="unknown metric|valid"):
        sk.profile(model, data=[torch.randn(2, 3, 16, 16)], metric="bleu")
    with pytest.raises(DataError, match="NaN or Inf"):
        sk.profile(model, data=[torch.full((2, 3, 16, 16), float("nan"))])
    with pytest.raises(DataError, match=r"pass data= .*--data.* example_inputs=.*example_inputs\(\) method"):
        sk.profile(torch.nn.Linear(2, 2))


def mean_squared_error(outputs, targets):
    """A lower-is-better metric over the whole split."""
    return float(((outputs - targets) ** 2).mean())


mean_squared_error.higher_is_better = False


class Regressor(torch.nn.Module):
    """A model without example_inputs(): sample inputs must come from the data."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(x)


def _regression_data(model, noise=0.0, n=24):
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x) + noise
    return TensorData(x, y, batch_size=8)


def test_profile_takes_example_inputs_from_data_and_defaults_to_one_thread():
    model = Regressor()
    prof = sk.profile(model, data=_regression_data(model), metric=mean_squared_error, budget_s=0.02)
    assert prof.threads == 1 and prof.macs == 12
    assert prof.metrics == {"mean_squared_error": pytest.approx(0.0, abs=1e-10)}
    assert prof.lower_is_better == ["mean_squared_error"]
    lat = prof.latency[1]
    assert lat.spread == pytest.approx(lat.p90_ms / lat.p50_ms) and isinstance(lat.noisy, bool)
    assert sk.Profile.from_dict(json.loads(json.dumps(prof.to_dict()))) == prof


def test_lower_is_better_metric_in_comparison_table():
    model = Regressor()
    worse = Regressor()
    data = _regression_data(model, noise=0.5)
    a = sk.profile(model, data=data, metric=mean_squared_error, budget_s=0.01)
    b = sk.profile(worse, data=data, metric=mean_squared_error, budget_s=0.01)
    assert a.metrics["mean_squared_error"] == pytest.approx(0.25, rel=1e-5)
    c = sk.compare(a, b)
    from rich.console import Console

    console = Console(record=True, width=80)
    console.print(comparison_table(c))
    text = console.export_text()
    assert "mean_squared_error" in text and "(lower is" in text and "better)" in text and "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_export_takes_example_inputs_from_data(tmp_path):
    import onnxruntime  # noqa: F401 (required: make test installs every extra)
    model = Regressor()
    with pytest.raises(DataError, match="export needs sample inputs.*pass data="):
        sk.export(model, tmp_path / "none.onnx")
    path = sk.export(model, tmp_path / "m.onnx", data=_regression_data(model))
    prof = sk.profile(path, data=_regression_data(model), metric=mean_squared_error, budget_s=0.01)
    assert prof.runtime == "onnxruntime" and prof.threads == 1
    assert prof.metrics["mean_squared_error"] < 1e-10 and prof.lower_is_better == ["mean_squared_error"]


def test_budget_follows_the_metric_direction():
    from slimkit.pipeline.compress import budget_violation
    from slimkit.pipeline.recipe import load_recipe

    model, worse = Regressor(), Regressor()
    data = _regression_data(model, noise=0.2)
    a = sk.profile(model, data=data, metric=mean_squared_error, budget_s=0.01)  # mse 0.04
    b = sk.profile(worse, data=data, metric=mean_squared_error, budget_s=0.01)  # mse much larger
    recipe = load_recipe({"stages": [], "target": {"max_metric_drop": 0.01}})
    assert recipe.target.threads == 1
    assert "mean_squared_error rose by" in budget_violation(a, b, recipe)
    assert budget_violation(b, a, recipe) is None  # a lower error is an improvement, whatever its size
    flipped = load_recipe({"stages": [], "target": {"max_metric_drop": 0.01, "higher_is_better": True}})
    assert budget_violation(a, b, flipped) is None
