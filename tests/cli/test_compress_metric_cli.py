"""A user metric through `slimkit compress`'s budget: the direction decides what breaks it."""

from __future__ import annotations

import json

import pytest

RECIPE = """
model: mypkg.models:trained_net
data: mypkg.data:splits
stages:
  - prune: {method: channels, ratio: 0.75}
target: {runtime: torch, max_metric_drop: 0.0, batch_sizes: [1]}
"""


@pytest.mark.slow
def test_lower_is_better_metric_reverses_the_budget(run_cli, own_project, monkeypatch):
    monkeypatch.chdir(own_project)
    (own_project / "recipe.yaml").write_text(RECIPE)
    runs = {}
    for name, extra in (("higher", []), ("lower", ["--lower-is-better"])):
        code, out, err = run_cli(
            "compress", "recipe.yaml", "--out", name, "--metric", "mypkg.metrics:mean_output", *extra, "--json"
        )
        assert code in (0, 3), err
        runs[name] = (code, json.loads(out))
    original = runs["higher"][1]["original"]["metrics"]["mean_output"]
    pruned = runs["higher"][1]["stages"][0]["profile"]["metrics"]["mean_output"]
    assert pruned != original
    assert runs["lower"][1]["original"]["lower_is_better"] == ["mean_output"]
    # exactly one direction sees the change as a loss, and says which way the metric moved
    expected_stop = "higher" if pruned < original else "lower"
    for name, (code, result) in runs.items():
        if name == expected_stop:
            assert code == 3 and ("dropped" if name == "higher" else "rose") in result["stopped"]
        else:
            assert code == 0 and not result["stopped"]
