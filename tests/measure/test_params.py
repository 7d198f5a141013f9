import numpy as np
import torch
from torch import nn

from slimkit.measure import count_nonzero, count_params
from slimkit.models.testing import ZOO


class PackedLinear(nn.Module):
    """Keeps its weight as int8 codes + a scale in buffers, like a quantized module."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        scale = weight.abs().max() / 127
        self.register_buffer("codes", torch.round(weight / scale).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = nn.Parameter(torch.zeros(weight.shape[0]))

    def logical_weights(self):
        return [self.codes.float() * self.scale]

    def forward(self, x):
        return nn.functional.linear(x, self.logical_weights()[0], self.bias)


def test_linear_hand_count():
    assert count_params(nn.Linear(7, 3)) == 7 * 3 + 3
    assert count_params(nn.Linear(7, 3, bias=False)) == 21


def test_lstm_zoo_model_hand_count():
    # LSTM(8 -> 16): 4 gates x (16x8 + 16x16) weights + 2 x 4x16 biases; head Linear(16 -> 4)
    expected = 4 * 16 * (8 + 16) + 2 * 4 * 16 + 16 * 4 + 4
    assert count_params(ZOO["lstm"]()) == expected


def test_shared_module_and_tied_weights_are_counted_once():
    layer = nn.Linear(5, 5)
    assert count_params(nn.Sequential(layer, nn.ReLU(), layer)) == 30
    embedding, decoder = nn.Embedding(11, 4), nn.Linear(4, 11, bias=False)
    decoder.weight = embedding.weight
    assert count_params(nn.ModuleList([embedding, decoder])) == 44


def test_count_nonzero_matches_numpy():
    model = ZOO["residual"]()
    before = count_nonzero(model)  # random init: the entries zeroed below are nonzero
    with torch.no_grad():
        model.stem[0].weight[:, :2] = 0
        model.head.bias.zero_()
    expected = sum(int(np.count_nonzero(p.detach().numpy())) for p in model.parameters())
    zeroed = model.stem[0].weight[:, :2].numel() + model.head.bias.numel()
    assert count_nonzero(model) == expected == before - zeroed


def test_logical_weights_protocol_counts_packed_weights():
    weight = torch.randn(6, 10)
    weight[0] = 0  # a zero row stays zero after quantization
    model = nn.Sequential(PackedLinear(weight), nn.ReLU(), nn.Linear(6, 2))
    assert count_params(model) == (6 * 10 + 6) + (6 * 2 + 2)
    packed_nonzero = int(np.count_nonzero(model[0].logical_weights()[0].numpy()))
    assert packed_nonzero <= 50
    linear_nonzero = int(np.count_nonzero(model[2].weight.detach().numpy())) + int(
        np.count_nonzero(model[2].bias.detach().numpy())
    )
    assert count_nonzero(model) == packed_nonzero + linear_nonzero  # the packed bias is all zeros
