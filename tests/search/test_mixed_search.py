"""Per-layer mixed precision inside `sk.search`: the planner's stages, the sampled recipes, a front."""

import optuna
import pytest
import torch
from torch import nn

from slimkit.core.errors import InvalidConfigError
from slimkit.measure.size import tensor_bytes
from slimkit.pipeline.recipe import load_recipe
from slimkit.search import SearchSpace, search
from slimkit.search.candidates import apply_stages
from slimkit.search.mixed import MixedPrecision
from slimkit.search.space import sample_stages, warm_starts
from slimkit.search.study import _sampler

LINEARS = ("1", "3", "5")


@pytest.fixture(scope="module")
def mlp(digits):
    """An MLP trained briefly on the digits (accuracy well above chance), with the digits splits."""
    _, data = digits
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(1024, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        for x, y in data.train:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    return model, data


@pytest.fixture(scope="module")
def planner(mlp):
    model, data = mlp
    return MixedPrecision.estimate(model, data, (4, 8))


def _quantized_bits(model: nn.Module, stages: list[dict]) -> dict[str, int]:
    built = apply_stages(model, stages)
    return {
        name: built.get_submodule(name).packed.bits for name in LINEARS if hasattr(built.get_submodule(name), "packed")
    }


def test_shares_go_from_the_most_bits_to_the_fewest(mlp, planner):
    model, _ = mlp
    assert _quantized_bits(model, planner.stages(0.0)) == dict.fromkeys(LINEARS, 8)
    assert _quantized_bits(model, planner.stages(1.0)) == dict.fromkeys(LINEARS, 4)
    sizes = [tensor_bytes(apply_stages(model, planner.stages(s))) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]


def test_a_middle_share_mixes_widths_in_recipe_form(mlp, planner):
    model, _ = mlp
    stages = planner.stages(0.5)
    assert all(list(stage) == ["quantize"] and stage["quantize"]["method"] == "weight-only" for stage in stages)
    assert sorted(set(_quantized_bits(model, stages).values())) == [4, 8]
    layers = [layer for stage in stages for layer in stage["quantize"]["include"]]
    assert len(layers) == len(set(layers))  # one width per layer


def test_mixed_trials_sample_a_share_and_no_svd(planner):
    space = SearchSpace(quantize=("mixed", "int8-static"), svd_fractions=(0.0, 0.5), prune_ratios=(0.0,))
    study = optuna.create_study(directions=["minimize"] * 2, sampler=_sampler(optuna, 0))
    seen = set()
    for _ in range(16):
        trial = study.ask()
        stages = sample_stages(trial, space, planner)
        if trial.params["quantize"] == "mixed":
            seen.add(trial.params["low_bit_share"])
            assert "svd_fraction" not in trial.params and all("decompose" not in s for s in stages)
            assert stages == planner.stages(trial.params["low_bit_share"])
    assert seen  # at least one mixed trial among 16
    with pytest.raises(InvalidConfigError, match="planner"):
        study = optuna.create_study(directions=["minimize"] * 2)
        study.enqueue_trial({"quantize": "mixed"})
        sample_stages(study.ask(), space)
    mixed_starts = [s for s in warm_starts(space, 10) if s["quantize"] == "mixed"]
    assert [s["low_bit_share"] for s in mixed_starts] == [0.25, 0.5, 0.75]  # one per share
    assert not any("svd_fraction" in s for s in mixed_starts)


def test_default_space_does_not_offer_mixed():
    assert "mixed" not in SearchSpace().quantize
    with pytest.raises(InvalidConfigError, match="low_bit_shares"):
        SearchSpace.build(low_bit_shares=(1.5,))


@pytest.mark.slow
def test_search_with_mixed_precision_finds_a_reproducible_front(mlp):
    model, data = mlp
    space = SearchSpace(quantize=("mixed",), prune_ratios=(0.0,), svd_fractions=(0.0,), low_bit_shares=(0.5, 1.0))
    result = search(model, data, target="onnxruntime", constraints={"max_metric_drop": 0.02}, trials=3, space=space)
    assert result.front and not [t for t in result.trials if t.error]
    assert result.sensitivity is not None and result.sensitivity.estimate == "fisher"
    for point in result.front:
        recipe = load_recipe(point.recipe)
        assert all(stage.method == "weight-only" for stage in recipe.stages)
        assert point.test.size_bytes < result.original.size_bytes


def test_search_reads_a_fidelity_datas_cosine(mlp):
    from slimkit.core.data import DataSplits

    model, data = mlp
    fidelity = DataSplits(data.train, data.calibration, data.test, metric="fidelity")
    space = SearchSpace(quantize=("weight-only",), bits=(8,), prune_ratios=(0.0,), svd_fractions=(0.0,))
    result = search(model, fidelity, target="torch", trials=1, space=space)
    assert result.original.metric == pytest.approx(1.0, abs=1e-6)  # cosine of the model to itself
    assert 0.99 < result.trials[0].selection.metric <= 1.0 + 1e-6
