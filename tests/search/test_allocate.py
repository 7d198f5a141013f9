"""`allocate`: the plan meets the budget on measured figures, falling back when it does not."""

import dataclasses

import pytest

from slimkit.core.errors import InvalidConfigError
from slimkit.pipeline.recipe import load_recipe
from slimkit.search import allocate, apply_settings, plan, sensitivity


def test_fallback_raises_precision_until_the_measured_drop_fits(small, fc_table):
    model, data = small
    drops = {r.setting.label: r.drop for r in fc_table.rows}
    budget = (drops["int4"] + drops["int2"]) / 2  # int2 breaks it, int4 meets it
    optimistic = dataclasses.replace(fc_table, rows=[dataclasses.replace(r, drop=0.0) for r in fc_table.rows])
    assert [r.setting.label for r in plan(optimistic, max_metric_drop=budget)] == ["int2"]
    result = allocate(model, data, optimistic, max_metric_drop=budget, metric="fidelity", max_batches=1)
    assert [s.label for s in result.settings] == ["int4"]
    assert result.fallback == ["quantize:weight-only(bits=2,granularity=group:32)@fc -> int4"]
    assert result.met and result.drop <= budget
    assert result.drop == pytest.approx(drops["int4"], abs=1e-9)  # the same batches as the table
    assert result.size_bytes < result.original_bytes
    recipe = load_recipe({"model": "example:digits-cnn", "stages": result.stages()})
    assert recipe.stages[0].options == {
        "method": "weight-only",
        "bits": 4,
        "granularity": "group:32",
        "include": ["fc"],
    }


def test_one_budget_is_required(small, fc_table):
    model, data = small
    with pytest.raises(InvalidConfigError, match="exactly one budget"):
        allocate(model, data, fc_table)
    with pytest.raises(InvalidConfigError, match="max_size_ratio"):
        plan(fc_table, max_size_ratio=1.5)


@pytest.mark.slow
def test_a_macs_budget_prunes_the_least_sensitive_groups(small):
    model, data = small
    table = sensitivity(model, data, ("prune",), ratios=(0.25, 0.5), include="stages.*", max_batches=1)
    assert table.model_macs > 0 and all(r.macs_saved > 0 for r in table.rows)
    chosen = plan(table, max_macs_ratio=0.8)
    assert sum(r.macs_saved for r in chosen) >= 0.2 * table.model_macs  # the predicted MACs fit
    for budget in (0.8, 0.6):  # at 0.6 overlapping savings need a re-plan (measured 0.64 first)
        result = allocate(model, data, table, max_macs_ratio=budget, max_batches=1)
        assert result.met and result.macs_ratio <= budget
    with pytest.raises(InvalidConfigError, match="one budget"):
        plan(table, max_size_ratio=0.5, max_macs_ratio=0.5)


def test_weight_only_rows_save_bytes_not_macs(fc_table):
    assert all(r.macs_saved == 0 and r.bytes_saved > 0 for r in fc_table.rows)


@pytest.mark.slow
def test_digits_meets_one_point_on_measured_accuracy(digits):
    model, data = digits
    table = sensitivity(model, data, ratios=(0.25, 0.5), include=["fc", "stages.1.*", "stages.2.*"], max_batches=2)
    result = allocate(model, data, table, max_metric_drop=0.01)
    assert result.met and result.drop <= 0.01
    assert result.size_ratio < 0.95
    assert result.settings  # something was compressed


def test_two_settings_for_one_layer_are_refused(small, fc_table):
    model, _ = small
    with pytest.raises(InvalidConfigError, match="two settings for 'layer fc'"):
        apply_settings(model, [r.setting for r in fc_table.rows[:2]])


LUT = {
    "overhead": 0.02, "conv2d/fp32:layers": 0.004, "conv2d/fp32:mmacs": 0.03, "conv2d/fp32:present": 0.01,
    "linear/fp32:layers": 0.001, "linear/fp32:mmacs": 0.1, "linear/fp32:present": 0.005,
    "elementwise:ops": 0.002, "elementwise:kelements": 0.0005,
}  # fmt: skip
"""Costs (ms) of a made-up device: the latency budget reads only the table's predictions."""


@pytest.mark.slow
def test_a_latency_budget_plans_by_the_tables_predictions(small, tmp_path):
    from slimkit.search.latency_table import LatencyTable

    model, data = small
    lut = LatencyTable(runtime="onnxruntime", threads=1, machine={"platform": "test"},
                       created="2026-01-01T00:00:00+00:00", coefficients_ms=LUT, grid=[], fit_mape=0.0)  # fmt: skip
    table = sensitivity(model, data, ("prune",), ratios=(0.25, 0.5), include="stages.*", max_batches=1)
    result = allocate(model, data, table, max_latency_ratio=0.7, latency_table=lut.save(tmp_path / "lut.json"))
    assert result.met and result.latency_ratio <= 0.7
    x = data.calibration.x[:1]
    assert result.latency_ratio == pytest.approx(lut.predict_ms(result.model, (x,)) / lut.predict_ms(model, (x,)))
    with pytest.raises(InvalidConfigError, match="needs latency_table"):
        allocate(model, data, table, max_latency_ratio=0.7)
    with pytest.raises(InvalidConfigError, match="one budget"):
        allocate(model, data, table, max_latency_ratio=0.7, max_size_ratio=0.5, latency_table=lut)
