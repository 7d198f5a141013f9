"""Which models `sk.save` can rebuild from their class alone, and the clear error when it cannot."""

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import InvalidConfigError
from slimkit.core.io import infer_source


def test_a_container_built_from_layers_is_not_rebuilt_from_its_class():
    """``nn.Sequential()`` takes ``*layers``: its class alone gives an empty container."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    assert infer_source(model) is None
    assert infer_source(nn.Sequential()) == "torch.nn.modules.container:Sequential"


def test_saving_such_a_container_asks_for_a_source_and_writes_nothing(tmp_path):
    with pytest.raises(InvalidConfigError, match="source="):
        sk.save(nn.Sequential(nn.Linear(3, 4)), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_class_with_a_no_argument_constructor_is_its_own_source(tmp_path):
    model = nn.ReLU()
    assert infer_source(model) == "torch.nn.modules.activation:ReLU"
    sk.save(model, tmp_path / "m")
    assert torch.equal(sk.load(tmp_path / "m")(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
