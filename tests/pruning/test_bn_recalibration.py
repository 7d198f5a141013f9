"""BatchNorm adaptation after structured pruning: statistics re-estimated on the data."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.data import TensorData
from slimkit.measure.metrics import evaluate
from slimkit.training.batchnorm import recalibrate_batchnorms


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(8, 4, 1),
                         nn.BatchNorm2d(4))  # fmt: skip


def test_statistics_are_the_data_moments_in_float64():
    model = _net().eval()
    x = torch.randn(48, 3, 10, 10) * 3 + 1
    assert recalibrate_batchnorms(model, TensorData(x, None, 16)) == 2
    with torch.no_grad():
        seen = model[0](x).double()
    mean, var = seen.mean((0, 2, 3)), seen.var((0, 2, 3), unbiased=False)
    torch.testing.assert_close(model[1].running_mean.double(), mean, rtol=1e-5, atol=1e-5)
    # per-batch unbiased variances averaged: equal to the pooled one up to the between-batch spread
    torch.testing.assert_close(model[1].running_var.double(), var, rtol=0.05, atol=1e-3)
    assert model[1].momentum == 0.1 and not model.training and not model[3].training  # modes restored


def test_dropout_stays_off_while_recalibrating():
    x = torch.randn(32, 3, 10, 10)
    a, b = _net().eval(), _net().eval()
    recalibrate_batchnorms(a, TensorData(x, None, 16))
    recalibrate_batchnorms(b, TensorData(x, None, 16))
    torch.testing.assert_close(a[5].running_mean, b[5].running_mean, rtol=0, atol=0)  # no random masks


def test_a_model_without_batchnorm_runs_nothing():
    assert recalibrate_batchnorms(nn.Linear(3, 2), [torch.full((2, 3), float("nan"))]) == 0


@pytest.fixture(scope="module")
def digits():
    return sk.load("example:digits-cnn"), sk.load_data("example:digits")


@pytest.mark.slow
def test_pruned_digits_cnn_keeps_its_accuracy_only_with_adaptation(digits):
    model, data = digits
    adapted = sk.prune(model, "channels", ratio=0.25, data=data.calibration)
    sliced = sk.prune(model, "channels", ratio=0.25, data=data.calibration, recalibrate_batches=0)
    assert sk.explain(adapted).details["recalibrated"] == 12 and sk.explain(sliced).details["recalibrated"] == 0
    assert evaluate(adapted, data.test, "accuracy")["accuracy"] >= 0.97  # 0.987 measured
    assert evaluate(sliced, data.test, "accuracy")["accuracy"] <= 0.2  # the sliced statistics: chance level
    without_data = sk.prune(model, "channels", ratio=0.25, example_inputs=(data.test.x[:1],))
    assert sk.explain(without_data).details["recalibrated"] == 0


def test_adapted_statistics_save_and_load(digits, tmp_path):
    model, data = digits
    adapted = sk.prune(model, "channels", ratio=0.25, data=data.calibration)
    loaded = sk.load(sk.save(adapted, tmp_path / "m"))
    x = data.test.x[:8]
    torch.testing.assert_close(loaded(x), adapted(x), rtol=0, atol=0)
