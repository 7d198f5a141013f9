"""A user's own layer type, taught to channel pruning with `register_layer_pruner`."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import InvalidConfigError
from slimkit.pruning import layers as layer_table
from slimkit.pruning.layers import LayerPruner, register_layer_pruner, slice_attr


class Dense(nn.Module):
    """A linear layer that is not an ``nn.Linear``: ``x @ w.T + b``."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)
        self.b = nn.Parameter(torch.randn(n_out))
        self.weight = self.w  # importance reads ``weight``

    def forward(self, x):
        return x @ self.w.T + self.b


class Scale(nn.Module):
    """One learned scale per channel (last axis)."""

    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(n) + 0.5)

    def forward(self, x):
        return x * self.weight


def _shrink_dense(layer: Dense, axis: str, keep: torch.Tensor) -> None:
    slice_attr(layer, "w", 0 if axis == "out" else 1, keep)
    if axis == "out":
        slice_attr(layer, "b", 0, keep)
    layer.weight = layer.w


def _shrink_scale(layer: Scale, axis: str, keep: torch.Tensor) -> None:
    slice_attr(layer, "weight", 0, keep)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.scale, self.last = Dense(6, 16), Scale(16), Dense(16, 3)

    def forward(self, x):
        return self.last(torch.relu(self.scale(self.first(x))))


@pytest.fixture
def registered():
    saved = dict(layer_table._PRUNERS), set(layer_table._BUILTIN)
    register_layer_pruner(Dense, LayerPruner(lambda m, axis: m.w.shape[0 if axis == "out" else 1], _shrink_dense))
    register_layer_pruner(Scale, LayerPruner(lambda m, axis: m.weight.numel(), _shrink_scale, kind="per-channel"))
    yield
    layer_table._PRUNERS.clear()
    layer_table._PRUNERS.update(saved[0])
    layer_table._BUILTIN.clear()
    layer_table._BUILTIN.update(saved[1])


def test_an_unknown_layer_type_is_listed_with_the_remedy():
    model, x = Net().eval(), torch.randn(4, 6)
    with pytest.warns(UserWarning, match="nothing to prune"):
        pruned = sk.prune(model, "channels", ratio=0.5, example_inputs=x)
    skipped = sk.explain(pruned).skipped
    assert set(skipped) == {"first", "scale", "last"}
    assert "register_layer_pruner" in skipped["first"]


def test_a_registered_layer_is_pruned_like_a_builtin_one(registered):
    model, x = Net().eval(), torch.randn(5, 6)
    pruned = sk.prune(model, "channels", ratio=0.5, example_inputs=x)
    assert pruned.first.w.shape == (8, 6) and pruned.first.b.shape == (8,)
    assert pruned.scale.weight.shape == (8,) and pruned.last.w.shape == (3, 8)
    # Reference: the original model with the removed hidden channels zeroed gives the same output.
    kept = [int((model.first.w == row).all(1).nonzero()) for row in pruned.first.w]
    mask = torch.zeros(16)
    mask[kept] = 1
    hidden = torch.relu(model.scale(model.first(x))) * mask
    torch.testing.assert_close(pruned(x), model.last(hidden), rtol=0, atol=1e-6)
    assert sk.explain(pruned).skipped == {"last": "reaches the model output"}


def test_register_layer_pruner_refuses_what_it_cannot_use():
    with pytest.raises(InvalidConfigError, match="nn.Module subclass"):
        register_layer_pruner(int, LayerPruner(len, _shrink_scale))
    with pytest.raises(InvalidConfigError, match="LayerPruner"):
        register_layer_pruner(Scale, {"length": len})


def test_a_subclass_of_a_builtin_layer_is_pruned_as_its_base():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(MyLinear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    pruned = sk.prune(model, "channels", ratio=0.5, example_inputs=torch.randn(2, 4))
    assert pruned[0].out_features == 4 and pruned[2].in_features == 4
