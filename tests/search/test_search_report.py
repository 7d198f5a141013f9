"""`slimkit search`'s report: the front table, every trial, the Pareto and sensitivity figures."""

import json

from slimkit.report.search import sensitivity_figure, write_search_reports
from slimkit.search import Measured, SearchResult, TrialRecord
from slimkit.search.study import FrontPoint

INT8 = [{"quantize": {"method": "int8-static"}}]
MIXED = [{"quantize": {"method": "weight-only", "bits": 4, "include": ["fc"]}}]


def _result(sensitivity=None) -> SearchResult:
    trials = [
        TrialRecord(0, INT8, Measured(0.30, 90_000, 0.99, 0.004)),
        TrialRecord(1, MIXED, Measured(0.40, 60_000, 0.98, 0.012)),
        TrialRecord(2, [{"prune": {"method": "channels", "ratio": 0.9}}], None, error="refused: no channel left"),
    ]
    front = [FrontPoint(0, {"stages": INT8}, trials[0].selection, Measured(0.31, 90_000, 0.985, 0.006))]
    return SearchResult(("latency", "size"), Measured(0.5, 300_000, 0.991, 0.0), front, trials, "accuracy",
                        "measured on onnxruntime", sensitivity)  # fmt: skip


def test_report_lists_the_front_and_every_trial(tmp_path):
    html, md = write_search_reports(_result(), tmp_path)
    page, text = html.read_text(), md.read_text()
    assert 'data-figure="pareto"' in page and 'data-figure="sensitivity"' not in page
    assert "quantize int8-static" in text and "refused: no channel left" in text
    assert "quantize weight-only bits=4 on 1 layers" in page  # the mixed stage, its layers counted
    assert "3 (1 failed)" in text


def test_report_shows_the_sensitivity_the_search_planned_from(tmp_path, fc_table):
    result = _result(fc_table)
    html, _ = write_search_reports(result, tmp_path)
    assert 'data-figure="sensitivity"' in html.read_text()
    axes = sensitivity_figure(fc_table).axes[0]
    assert len(axes.collections) == 3  # int2, int4, int8: one series each, all measured
    assert json.loads(json.dumps(result.to_dict(), default=str))["sensitivity"]["metric"] == "cosine"
