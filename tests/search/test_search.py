"""`sk.search` and `slimkit search`: a Pareto front of loadable recipes; bad inputs refused."""

import json

import optuna
import pytest
from torch import nn
from typer.testing import CliRunner

import slimkit as sk
from slimkit.cli import app
from slimkit.core.errors import InvalidConfigError
from slimkit.pipeline.recipe import load_recipe, read_yaml
from slimkit.search import SearchSpace, search
from slimkit.search.pareto import dominates, pareto_front
from slimkit.search.space import sample_stages
from slimkit.search.study import _sampler

SMALL_SPACE = SearchSpace(prune_ratios=(0.0, 0.25), svd_fractions=(0.0,), quantize=("int8-static", "weight-only"))


def test_sk_search_is_the_search_function():
    assert callable(sk.search) and sk.search.search is search


def test_the_seed_fixes_the_proposed_recipes():
    def proposals(seed):
        study = optuna.create_study(directions=["minimize"] * 2, sampler=_sampler(optuna, seed))
        return [sample_stages(study.ask(), SearchSpace()) for _ in range(8)]

    assert proposals(0) == proposals(0)
    assert proposals(0) != proposals(1)


def test_pruning_stages_round_channels_as_the_space_says():
    study = optuna.create_study(directions=["minimize"] * 2, sampler=_sampler(optuna, 0))
    space = SearchSpace(prune_ratios=(0.5,), svd_fractions=(0.0,))
    pruned = [s[0]["prune"] for s in (sample_stages(study.ask(), space) for _ in range(4))]
    assert all(p["round_to"] == 8 for p in pruned)  # the default: multiples of 8
    choose = space.model_copy(update={"round_to": (1, 16)})
    chosen = {s[0]["prune"].get("round_to", 1) for s in (sample_stages(study.ask(), choose) for _ in range(12))}
    assert chosen == {1, 16}  # 1 is left out of the recipe
    with pytest.raises(ValueError, match="round_to"):
        SearchSpace(round_to=(0,))


def test_pareto_front_keeps_the_non_dominated_points():
    points = [(1, 5), (2, 2), (3, 1), (3, 3), (2, 2), (1, 6)]
    assert pareto_front(points, lambda p: p) == [(1, 5), (2, 2), (3, 1)]
    assert dominates((1, 1), (1, 2)) and not dominates((1, 2), (1, 2)) and not dominates((0, 3), (1, 2))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"objectives": ("speed",)}, "objectives"),
        ({"objectives": ("size", "size")}, "objectives"),
        ({"constraints": {"max_size": 1}}, "unknown constraints"),
        ({"constraints": {"max_metric_drop": -1}}, "max_metric_drop"),
        ({"trials": 0}, "trials"),
        ({"target": "tensorrt"}, "unknown target"),
    ],
)
def test_bad_inputs_raise_one_clear_error(small, options, message):
    model, data = small
    with pytest.raises(InvalidConfigError, match=message):
        search(model, data, **options)


def test_data_without_splits_is_refused(small):
    model, data = small
    with pytest.raises(InvalidConfigError, match="calibration and test splits"):
        search(model, list(data.calibration), trials=1)


def test_bad_space_is_refused():
    with pytest.raises(InvalidConfigError, match="quantize"):
        SearchSpace.build(quantize=("int3",))


def test_cli_refuses_an_existing_out_and_missing_data(tmp_path):
    (tmp_path / "out").mkdir()
    runner = CliRunner()
    existing = runner.invoke(
        app, ["search", "example:digits-cnn", "--data", "example:digits", "--out", str(tmp_path / "out")]
    )
    assert existing.exit_code != 0 and "already exists" in str(existing.exception or existing.output)
    missing = runner.invoke(app, ["search", "example:digits-cnn", "--out", str(tmp_path / "new")])
    assert "--data" in str(missing.exception or missing.output)


@pytest.mark.slow
def test_search_finds_a_front_of_loadable_recipes(digits, tmp_path):
    model, data = digits
    result = sk.search(
        model, data, target="onnxruntime", constraints={"max_metric_drop": 0.01}, trials=4, seed=0, space=SMALL_SPACE
    )
    assert len(result.trials) == 4 and result.front
    for point in result.front:
        assert point.selection.drop <= 0.01
        assert point.test.size_bytes < result.original.size_bytes
        recipe = load_recipe(point.recipe)
        assert recipe.model == "example:digits-cnn" and recipe.target.runtime == "onnxruntime"


@pytest.mark.slow
def test_cli_writes_front_recipes_and_plot(tmp_path):
    from slimkit.cli import main

    out = tmp_path / "found"
    with pytest.raises(SystemExit) as done:
        main(["search", "example:digits-cnn", "--data", "example:digits", "--max-drop", "0.01", "--trials", "2",
              "--out", str(out), "--quiet"])  # fmt: skip
    assert done.value.code in (0, None)
    front = json.loads((out / "front.json").read_text())
    assert front["front"] and (out / "pareto.png").stat().st_size > 0
    assert 'data-figure="pareto"' in (out / "report.html").read_text() and (out / "report.md").is_file()
    published = out / "model"  # the chosen point, run through compress
    assert (published / "report.json").is_file() and any(published.glob("model.onnx"))
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".lock"]
    assert (tmp_path / "found.study.db").is_file()  # the study, beside the output: a rerun resumes it
    recipes = sorted((out / "front").glob("*.yaml"))
    assert len(recipes) == len(front["front"])
    for path in recipes:
        load_recipe(read_yaml(path))


def test_cli_bad_target_exits_2(tmp_path, capsys):
    from slimkit.cli import main

    with pytest.raises(SystemExit) as done:
        main(["search", "example:digits-cnn", "--data", "example:digits", "--target", "nope", "--trials", "1",
              "--out", str(tmp_path / "x")])  # fmt: skip
    assert done.value.code == 2
    assert "unknown target" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("space", "message"),
    [("quantize=int3", "quantize"), ("low_bit_shares=[2]", "low_bit_shares"), ("bits", "key=value")],
)
def test_cli_bad_space_exits_2(tmp_path, capsys, space, message):
    from slimkit.cli import main

    with pytest.raises(SystemExit) as done:
        main(["search", "example:digits-cnn", "--data", "example:digits", "--space", space, "--trials", "1",
              "--out", str(tmp_path / "x")])  # fmt: skip
    assert done.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_space_reaches_the_search(tmp_path, monkeypatch):
    import slimkit.search
    from slimkit.cli import main

    seen = {}

    def stop(model, data, **options):
        seen.update(options)
        raise InvalidConfigError("stop here")

    monkeypatch.setattr(slimkit.search, "search", stop)
    with pytest.raises(SystemExit):
        main(["search", "example:digits-cnn", "--data", "example:digits", "--space", "quantize=mixed",
              "--space", "prune_ratios=[0, 0.5]", "--out", str(tmp_path / "x")])  # fmt: skip
    assert seen["space"].quantize == ("mixed",) and seen["space"].prune_ratios == (0.0, 0.5)


def _record(number, stages, latency, size, drop, tuned_from=None):
    from slimkit.search import Measured, TrialRecord

    return TrialRecord(number, stages, Measured(latency, size, 1 - drop, drop), tuned_from=tuned_from)


INT8 = {"quantize": {"method": "int8-static"}}
HALF = {"prune": {"method": "channels", "ratio": 0.5, "round_to": 8}}
MOST = {"prune": {"method": "channels", "ratio": 0.75, "round_to": 8}}
SVD = {"decompose": {"method": "svd", "rank": 0.5}}
TRIALS = [
    _record(0, [INT8], 0.30, 279, 0.0),  # meets the budget
    _record(1, [HALF], 0.15, 256, 0.43),
    _record(2, [HALF, INT8], 0.16, 98, 0.58),
    _record(3, [MOST], 0.08, 74, 0.84),
    _record(4, [SVD], 0.50, 300, 0.60),  # slower and larger than trial 0: not worth training
]


def test_promising_structures_rank_by_the_least_drop_and_skip_dominated_ones():
    from slimkit.search.study import promising_structures

    chosen = promising_structures(TRIALS, ("latency", "size"), budget=0.005, top=5)
    assert [r.number for r in chosen] == [1, 3]  # one per structure: HALF by its best trial, then MOST
    assert [r.number for r in promising_structures(TRIALS, ("latency", "size"), 0.005, top=1)] == [1]


def test_each_structure_is_trained_once_then_every_quantization_tried():
    from slimkit.search.study import tuned_records
    from slimkit.training.config import Finetune

    class Recorder:
        def __init__(self):
            self.trained, self.measured = [], []

        def apply(self, stages):
            self.trained.append(stages)
            return nn.Identity()

        def __call__(self, stages, start=None):
            assert isinstance(start, nn.Identity)
            self.measured.append(stages)
            return TRIALS[0].selection, None

    recorder = Recorder()
    tuned = tuned_records(TRIALS, ("latency", "size"), 0.005, 2, Finetune(epochs=1), recorder)
    step = {"finetune": Finetune(epochs=1).model_dump(mode="json")}
    assert recorder.trained == [[HALF, step], [MOST, step]]
    assert sorted(map(str, recorder.measured)) == sorted(map(str, [[INT8], [], [INT8], []]))
    assert [t.number for t in tuned] == [5, 6, 7, 8] and [t.tuned_from for t in tuned] == [1, 1, 3, 3]
    assert {str(t.stages) for t in tuned} == {
        str(s) for s in ([HALF, step, INT8], [HALF, step], [MOST, step, INT8], [MOST, step])
    }
