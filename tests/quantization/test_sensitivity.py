"""Per-layer sensitivity ranks a deliberately fragile layer first."""

import pytest
import torch

import slimkit as sk
from slimkit.core.data import TensorData
from slimkit.core.errors import InvalidConfigError
from slimkit.quantization.sensitivity import layer_sensitivity


def fragile_model():
    model = sk.load("slimkit.models.testing:TinyAttention")
    with torch.no_grad():  # a huge weight on a dead input: 3-bit min-max rounding zeroes the rest of ffn.0
        model.norm1.weight[0] = 0.0
        model.norm1.bias[0] = 0.0
        model.ffn[0].weight[:, 0] = 40.0
    return model


def test_fragile_layer_ranks_first():
    model = fragile_model()
    data = TensorData(torch.randn(32, 8, 32, generator=torch.Generator().manual_seed(0)), batch_size=16)
    table = layer_sensitivity(
        model, data, "weight-only", bits=3, group_size=None, include=["query", "key", "value", "out", "ffn.*"]
    )
    names = list(table)
    assert names[0] == "ffn.0"
    assert set(names) == {"query", "key", "value", "out", "ffn.0", "ffn.2"}
    scores = [table[n].sqnr_db for n in names]
    assert scores == sorted(scores)  # most fragile (lowest SQNR) first
    assert table["ffn.0"].params == 32 * 64 + 64


def test_accuracy_drop_mode_and_bad_inputs():
    model = fragile_model()
    x = torch.randn(32, 8, 32, generator=torch.Generator().manual_seed(0))
    data = TensorData(x, model(x).argmax(-1).detach(), batch_size=16)
    table = layer_sensitivity(
        model, data, "weight-only", metric="accuracy", layers=["ffn.0", "query"], bits=2, group_size=None
    )
    assert table["ffn.0"].drop > table["query"].drop
    with pytest.raises(InvalidConfigError, match="unknown layer"):
        layer_sensitivity(model, data, layers=["nope"])
    with pytest.raises(InvalidConfigError, match="metric"):
        layer_sensitivity(model, data, metric="bleu")
