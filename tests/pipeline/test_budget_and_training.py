"""Budget fallback, model selection off the test split, and training in the record."""

import json

import pytest
import torch

import slimkit as sk
from slimkit.core.data import DataSplits, TensorData
from slimkit.core.record import get_record
from slimkit.models.testing import ZOO
from slimkit.pipeline import compress
from slimkit.pipeline.recipe import Stage
from slimkit.pipeline.stages import StageInputs, run_stage

pytestmark = pytest.mark.usefixtures("quick_reports")


@pytest.fixture(scope="module")
def model():
    return ZOO["residual"]()


def _split(model, seed, n=64, poison=False):
    x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)
    if poison:
        y = (y + 1 + torch.arange(n) % 9) % 10  # every label wrong
    return TensorData(x, y, batch_size=32)


@pytest.fixture(scope="module")
def splits(model):
    return DataSplits(_split(model, 1), _split(model, 2), _split(model, 3), metric="accuracy")


BROKEN = {"prune": {"method": "channels", "ratio": 0.9}}
WEAK_FINETUNE = {"finetune": {"epochs": 1, "lr": 1e-9}}  # cannot recover the pruned model


def test_fallback_is_the_last_stage_that_met_the_budget(model, splits):
    recipe = {
        "stages": [{"accelerate": {"method": "fuse"}}, BROKEN, WEAK_FINETUNE],
        "target": {"max_metric_drop": 0.0},
    }
    result = compress(model, recipe, data=splits)
    assert [(s.index, s.status, s.kept) for s in result.stages] == [
        (1, "met", True),
        (2, "discarded", False),  # excused (a finetune follows), then not recovered
        (3, "discarded", False),
    ]
    assert "stage 3 (finetune) did not recover it" in result.stages[1].reason
    assert result.published == "stage 1 (accelerate:fuse)"
    assert "stage 3 (finetune)" in result.stopped and "published stage 1 (accelerate:fuse)" in result.stopped
    assert result.final is result.stages[0].profile
    assert sum(p.numel() for p in result.model.parameters()) == result.stages[0].profile.params  # not pruned


@pytest.mark.slow
def test_excused_stage_is_not_a_fallback(tmp_path, model, splits):
    recipe = {"stages": [BROKEN, WEAK_FINETUNE], "export": ["onnx"], "target": {"max_metric_drop": 0.0}}
    out = tmp_path / "out"
    result = compress(model, recipe, data=splits, out=out)
    assert result.published == "the original model" and not any(s.kept for s in result.stages)
    assert (out / "model.onnx").is_file()  # the kept model is still exported as the recipe asks
    report = json.loads((out / "report.json").read_text())
    assert report["published"] == "the original model"
    assert [s["status"] for s in report["stages"]] == ["discarded", "discarded"]
    assert all(s["reason"] for s in report["stages"])
    loaded = sk.load(out)
    x = next(iter(splits.test))[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_recovered_stage_is_kept(model, splits):
    recipe = {"stages": [BROKEN, {"finetune": {"epochs": 1}}], "target": {"max_metric_drop": 1.0}}
    result = compress(model, recipe, data=splits)
    assert result.stopped is None and [s.status for s in result.stages] == ["met", "met"]


def test_finetune_selects_on_calibration_never_on_test(model, splits):
    class Forbidden:
        def __iter__(self):
            raise AssertionError("the finetune stage read the test split")

    guarded = DataSplits(splits.train, splits.calibration, Forbidden(), "accuracy")
    inputs = StageInputs(guarded, None, model, "cpu", 0)
    run_stage(model, Stage.model_validate({"finetune": {"epochs": 2}}), inputs)


@pytest.mark.slow
def test_poisoned_test_labels_do_not_change_the_chosen_checkpoint(model, splits):
    recipe = {"stages": [{"finetune": {"epochs": 3, "lr": 0.01}}]}
    clean = compress(model, recipe, data=splits)
    poisoned_splits = DataSplits(splits.train, splits.calibration, _split(model, 3, poison=True), "accuracy")
    poisoned = compress(model, recipe, data=poisoned_splits)
    assert poisoned.final.metrics["accuracy"] != clean.final.metrics["accuracy"]  # the poison is real
    for (name, a), (_, b) in zip(clean.model.state_dict().items(), poisoned.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_finetune_enters_the_record_and_load_skips_it(tmp_path, model, splits):
    out = tmp_path / "out"
    recipe = {"stages": [{"finetune": {"epochs": 1, "lr": 0.002, "distill": {"method": "kd", "temperature": 2}}}]}
    result = compress("slimkit.models.testing:ResidualNet", recipe, data=splits, out=out)
    (training,) = [t for t in get_record(result.model).transforms if t.verb == "train"]
    assert training.method == "finetune" and not training.structural
    config = training.config
    assert config["epochs"] == 1 and config["lr"] == 0.002 and config["loss"] == "kd"
    assert config["teacher"] == "slimkit.models.testing:ResidualNet" and config["data"].startswith("sha256:")
    assert config["selected_on"] == "calibration"
    saved = json.loads((out / "slimkit.json").read_text())
    assert [t["verb"] for t in saved["transforms"]] == ["train"]
    loaded = sk.load(out)
    assert [t.verb for t in get_record(loaded).transforms] == ["train"]
    for (name, a), (_, b) in zip(loaded.state_dict().items(), result.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
