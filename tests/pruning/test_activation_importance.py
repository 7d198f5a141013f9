"""The ``activation`` importance: E[x_j^2] * ||W[:, j]||^2 summed over a channel's readers."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.pruning import Activation
from slimkit.pruning.groups import layer_table, parse_groups


def _scores(model, x, spec):
    importance = Activation(batches=4)
    importance.prepare(model, [x[i : i + 8] for i in range(0, len(x), 8)], torch.device("cpu"))
    (group,) = parse_groups(model, [spec])
    return importance(group, layer_table(model))


def test_linear_reader_matches_float64_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(32, 6)
    got = _scores(model, x, ["0:out", "2:in"])
    hidden = torch.relu(x.double() @ model[0].weight.double().T + model[0].bias.double())
    want = hidden.pow(2).mean(0) * model[2].weight.double().pow(2).sum(0)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_conv_reader_averages_over_positions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3))
    x = torch.randn(16, 1, 6, 6)
    got = _scores(model, x, ["0:out", "2:in"])
    hidden = model[1](model[0](x)).double()
    want = hidden.pow(2).mean((0, 2, 3)) * model[2].weight.double().pow(2).sum((0, 2, 3))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_flattened_reader_sums_a_channels_positions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x = torch.randn(16, 1, 6, 6)
    got = _scores(model, x, ["0:out", "3:in*16"])
    flat = model[2](model[1](model[0](x))).double()
    per_column = flat.pow(2).mean(0) * model[3].weight.double().pow(2).sum(0)
    torch.testing.assert_close(got.double(), per_column.reshape(3, 16).sum(1), rtol=1e-5, atol=1e-7)


def test_a_dead_neuron_goes_first_whatever_its_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].bias.fill_(3.0)  # every other neuron is always active (|w| < 0.5, 0 <= x < 1)
        model[0].weight[5] = -10.0  # never positive for x >= 0: ReLU keeps it at zero
        model[0].bias[5] = -1.0
        model[2].weight[:, 5] = 10.0  # the largest reader column: magnitude keeps it
    x = torch.rand(64, 4)
    data = [x[i : i + 16] for i in range(0, 64, 16)]
    by_activation = sk.prune(model, "neurons", ratio=0.125, importance="activation", data=data, example_inputs=(x[:2],))
    by_l1 = sk.prune(model, "neurons", ratio=0.125, example_inputs=(x[:2],))
    assert sk.explain(by_activation).details["keeps"]["0"]["out"] == [0, 1, 2, 3, 4, 6, 7]
    assert 5 in sk.explain(by_l1).details["keeps"]["0"]["out"]
    torch.testing.assert_close(by_activation(x), model(x), rtol=1e-5, atol=1e-6)  # nothing it read is lost


def test_a_group_no_layer_reads_falls_back_to_magnitude():
    model = nn.Sequential(nn.Linear(4, 6))
    importance = Activation()
    importance.prepare(model, [torch.randn(8, 4)], torch.device("cpu"))
    (group,) = parse_groups(model, [["0:out"]])
    want = model[0].weight.detach().pow(2).sum(1) + model[0].bias.detach().pow(2)
    torch.testing.assert_close(importance(group, layer_table(model)), want)


def test_needs_data():
    with pytest.raises(sk.InvalidConfigError, match="needs data"):
        Activation().prepare(nn.Linear(2, 2), None, torch.device("cpu"))
