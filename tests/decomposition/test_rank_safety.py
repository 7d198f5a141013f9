"""Data-free rank selection never silently destroys a model."""

import warnings

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.measure import evaluate


@pytest.mark.slow
def test_tucker_vbmf_keeps_the_trained_digits_cnn_accurate():
    model, data = sk.load("example:digits-cnn"), sk.load_data("example:digits")
    before = evaluate(model, data.test, "accuracy")["accuracy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = sk.decompose(model, "tucker", rank="vbmf")
    layers = sk.explain(d).details["layers"]
    assert len(layers) >= 6  # it still decomposes: VBMF's rank is floored, not abandoned
    assert all(info["error"] <= 0.5 for info in layers.values())
    assert evaluate(d, data.test, "accuracy")["accuracy"] >= before - 0.02  # was 0.101 with raw VBMF ranks


def test_a_layer_above_max_error_stays_dense_and_says_why():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)).eval()  # random: flat spectrum
    with pytest.warns(UserWarning, match="max_error=0.2"):
        d = sk.decompose(model, "svd", rank=4, max_error=0.2)
    skipped = sk.explain(d).skipped
    assert set(skipped) == {"0", "2"} and "relative weight error of 0.8" in skipped["0"]
    forced = sk.decompose(model, "svd", rank=4, max_error=0.2, force=True)
    assert sk.explain(forced).changed == ("0", "2")


def test_an_explicit_rank_that_loses_most_of_the_weight_is_warned_about():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64)).eval()
    with pytest.warns(UserWarning, match=r"lose much of their weight \(relative error > 0.5\): 0 0\.\d\d"):
        d = sk.decompose(model, "svd", rank=4)
    assert sk.explain(d).changed == ("0",)  # the rank you gave is applied, with a warning
