"""A user's own channel ranking: an `Importance` object, or a name registered for configs and recipes."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import InvalidConfigError
from slimkit.pruning import importance as importance_module
from slimkit.pruning.importance import IMPORTANCES, member_slices


class KeepLastChannels:
    """Scores each channel by its index, so pruning keeps the highest-numbered channels."""

    def __call__(self, group, modules):
        return torch.arange(group.size, dtype=torch.float32)


class MLP(nn.Sequential):
    def __init__(self):
        torch.manual_seed(0)
        super().__init__(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _mlp():
    return MLP().eval()


def _kept_rows(original, pruned):
    """Which rows of the first layer survived, found by matching weights."""
    old, new = original[0].weight, pruned[0].weight
    return [int((old == row).all(1).nonzero()) for row in new]


def test_an_importance_object_decides_which_channels_stay():
    model = _mlp()
    pruned = sk.prune(model, "channels", ratio=0.5, importance=KeepLastChannels(), example_inputs=torch.randn(2, 6))
    assert _kept_rows(model, pruned) == [4, 5, 6, 7]
    recorded = sk.get_record(pruned).transforms[-1].config["importance"]
    assert recorded == f"object:{__name__}.KeepLastChannels"


def test_a_registered_name_works_like_a_built_in_one(monkeypatch):
    monkeypatch.setitem(IMPORTANCES, "last", lambda seed: KeepLastChannels())
    model = _mlp()
    pruned = sk.prune(model, "channels", ratio=0.25, importance="last", example_inputs=torch.randn(2, 6))
    assert _kept_rows(model, pruned) == [2, 3, 4, 5, 6, 7]


def test_register_importance_adds_to_the_table(monkeypatch):
    monkeypatch.setattr(importance_module, "IMPORTANCES", IMPORTANCES.copy())
    importance_module.register_importance("l1-first-layer", lambda seed: importance_module.Magnitude(1))
    assert "l1-first-layer" in importance_module.IMPORTANCES
    with pytest.raises(InvalidConfigError, match="cannot register"):
        importance_module.register_importance("object:x", lambda seed: KeepLastChannels())


def test_a_pruned_model_with_an_object_importance_saves_and_loads(tmp_path):
    model = _mlp()
    pruned = sk.prune(model, "channels", ratio=0.5, importance=KeepLastChannels(), example_inputs=torch.randn(2, 6))
    x = torch.randn(4, 6)
    sk.save(pruned, tmp_path / "m")
    assert torch.equal(sk.load(tmp_path / "m")(x), pruned(x))


def test_bad_importances_are_refused_with_what_is_valid():
    with pytest.raises(InvalidConfigError, match="unknown importance 'nope'.*register_importance"):
        sk.prune(_mlp(), "channels", importance="nope")
    with pytest.raises(InvalidConfigError, match="importance must be a name or a callable"):
        sk.prune(_mlp(), "channels", importance=3)


def test_member_slices_is_what_a_custom_importance_reads():
    model = _mlp()
    graph_group = None

    class Spy:
        def __call__(self, group, modules):
            nonlocal graph_group
            graph_group = group
            first = next(m for m in group.members if m.axis == "out")
            return member_slices(modules[first.module], first, group.size)[0].abs().sum(1)

    sk.prune(model, "channels", ratio=0.5, importance=Spy(), example_inputs=torch.randn(2, 6))
    assert graph_group is not None and graph_group.size == 8
