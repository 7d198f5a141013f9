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
    assert "MACs" in text and "after/before" in text
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
    with pytest.raises(DataError, match="example_inputs or data"):
        sk.profile(torch.nn.Linear(2, 2))
