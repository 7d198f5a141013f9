import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import InvalidConfigError, UnsupportedModelError


def _residual():
    return sk.load("slimkit.models.testing:ResidualNet")


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("method", ["channels", "neurons", "heads"])
def test_ratio_outside_unit_interval(method, ratio):
    with pytest.raises(InvalidConfigError, match="ratio"):
        sk.prune(_residual(), method, ratio=ratio)


@pytest.mark.parametrize("method", ["unstructured", "gradual"])
def test_sparsity_outside_unit_interval(method):
    with pytest.raises(InvalidConfigError, match="ratio"):
        sk.prune(_residual(), method, ratio=1.0)


def test_pattern_matching_no_layer():
    with pytest.raises(InvalidConfigError, match="matches no module"):
        sk.prune(_residual(), "channels", include="encoder.*")
    with pytest.raises(InvalidConfigError, match="matches no module"):
        sk.prune(_residual(), "unstructured", include="nope")


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.fc(x)
        return x


def test_untraceable_model_names_the_construct():
    with pytest.raises(UnsupportedModelError, match="torch.fx.*groups="):
        sk.prune(Untraceable(), "channels", example_inputs=(torch.randn(1, 4),))


def test_untraceable_model_with_explicit_groups():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    pruned = sk.prune(model, "channels", groups=[["0:out", "2:in"]], ratio=0.5)
    assert pruned[0].out_features == 4 and pruned(torch.randn(3, 4)).shape == (3, 2)


def test_bad_explicit_group():
    with pytest.raises(InvalidConfigError, match="module:out"):
        sk.prune(_residual(), "channels", groups=[["nope:out"]])


def test_ratio_that_would_remove_everything_keeps_round_to():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    pruned = sk.prune(model, "channels", example_inputs=(torch.randn(1, 4),), ratio=0.99)
    assert pruned[0].out_features == 1
    pruned = sk.prune(model, "channels", example_inputs=(torch.randn(1, 4),), ratio=0.99, round_to=2)
    assert pruned[0].out_features == 2


def test_no_inputs_to_trace():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(InvalidConfigError, match="example_inputs"):
        sk.prune(model, "channels")


def test_heads_without_attention():
    with pytest.raises(UnsupportedModelError, match="attention"):
        sk.prune(_residual(), "heads")


def test_nm_needs_n_below_m():
    with pytest.raises(InvalidConfigError, match="n must be smaller"):
        sk.prune(_residual(), "nm", n=4, m=4)


def test_gradual_and_taylor_need_data():
    with pytest.raises(InvalidConfigError, match="data"):
        sk.prune(_residual(), "gradual")
    with pytest.raises(InvalidConfigError, match="data"):
        sk.prune(_residual(), "channels", importance="taylor")
    with pytest.raises(InvalidConfigError, match="data"):
        sk.prune(_residual(), "channels", importance="activation")
