"""A search's study in a database: an interrupted search resumes, a finished one extends, a
study made for something else is refused; trials on Ray land in the same study."""

import sys

import pytest

from slimkit.core.errors import InvalidConfigError, MissingExtraError
from slimkit.search import SearchSpace, search
from slimkit.search.runner import Evaluator

SPACE = SearchSpace(prune_ratios=(0.0, 0.25), svd_fractions=(0.0,), quantize=("none", "weight-only"))


def _search(small, storage, trials, **options):
    model, data = small
    options = {"target": "torch", "objectives": ("latency", "size"), "space": SPACE, **options}
    return search(model, data, trials=trials, storage=storage, **options)


@pytest.mark.slow
def test_an_interrupted_search_resumes_where_it_stopped(small, tmp_path, monkeypatch):
    storage = tmp_path / "study.db"
    calls = []
    real = Evaluator.__call__

    def dies_on_the_third(self, stages):
        calls.append(stages)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C (or a killed process) in the middle of trial 2
        return real(self, stages)

    monkeypatch.setattr(Evaluator, "__call__", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        _search(small, storage, trials=4)
    monkeypatch.setattr(Evaluator, "__call__", real)
    result = _search(small, storage, trials=4)
    assert [t.number for t in result.trials] == [0, 1, 3, 4]  # trial 2 died: counted as failed, not re-told
    assert [t.stages for t in result.trials[:2]] == calls[:2]
    assert all(t.selection is not None for t in result.trials)


@pytest.mark.slow
def test_a_finished_study_is_extended_by_asking_for_more_trials(small, tmp_path):
    storage = tmp_path / "study.db"
    first = _search(small, storage, trials=2)
    more = _search(small, storage, trials=3)
    assert len(first.trials) == 2 and len(more.trials) == 3
    assert [t.stages for t in more.trials[:2]] == [t.stages for t in first.trials]
    assert len(_search(small, storage, trials=2).trials) == 3  # fewer than stored: nothing new runs


@pytest.mark.slow
def test_a_study_made_for_something_else_is_refused(small, tmp_path):
    storage = tmp_path / "study.db"
    _search(small, storage, trials=1)
    with pytest.raises(InvalidConfigError, match="made for another objectives"):
        _search(small, storage, trials=1, objectives=("size",))
    with pytest.raises(InvalidConfigError, match="another"):
        _search(small, storage, trials=1, constraints={"max_metric_drop": 0.5})
    assert len(_search(small, storage, trials=1, study_name="other", objectives=("size",)).trials) == 1


def test_a_folder_is_not_a_storage(small, tmp_path):
    with pytest.raises(InvalidConfigError, match="is a folder"):
        _search(small, tmp_path, trials=1)


def test_ray_missing_names_the_extra(small, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"slimkit\[ray\]"):
        _search(small, None, trials=1, backend="ray", workers=2)


@pytest.mark.slow
def test_trials_run_as_ray_tasks_into_one_study(small, tmp_path):
    import ray

    try:
        result = _search(small, tmp_path / "study.db", trials=4, backend="ray", workers=2)
        assert sorted(t.number for t in result.trials) == [0, 1, 2, 3]
        assert all(t.selection is not None for t in result.trials) and result.front
        again = _search(small, tmp_path / "study.db", trials=4)  # the same study, read back here
        assert [t.stages for t in again.trials] == [t.stages for t in result.trials]
        # the front was re-measured on the test split as Ray tasks too: the same figures as here
        assert [p.recipe for p in again.front] == [p.recipe for p in result.front]
        for here, there in zip(again.front, result.front, strict=True):
            assert (here.test.metric, here.test.size_bytes) == (there.test.metric, there.test.size_bytes)
            assert here.test.drop == pytest.approx(there.test.drop, abs=1e-12)
        assert again.original.metric == result.original.metric
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_the_top_candidates_are_fine_tuned_as_recipes_compress_runs(small):
    from slimkit.pipeline.recipe import load_recipe

    space = SearchSpace(prune_ratios=(0.5,), svd_fractions=(0.0,), quantize=("none",))
    result = _search(small, None, trials=2, space=space, finetune_top=1, finetune={"epochs": 8, "lr": 1e-2})
    tuned = [t for t in result.trials if t.tuned_from is not None]
    assert len(tuned) == 1 and tuned[0].number == 2 and tuned[0].selection is not None
    assert tuned[0].stages[-1] == {"finetune": {"epochs": 8, "lr": 1e-2, "distill": True}}
    untuned = next(t for t in result.trials if t.number == tuned[0].tuned_from)
    assert tuned[0].stages[:-1] == untuned.stages
    assert tuned[0].selection.drop < untuned.selection.drop  # half the channels gone: training recovers some
    for point in result.front:
        load_recipe(point.recipe)
