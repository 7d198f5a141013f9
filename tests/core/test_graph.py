import pytest
import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError
from slimkit.core.graph import capture, node_shape
from slimkit.models.testing import ResidualNet


def test_capture_keeps_layers_and_shapes():
    model = ResidualNet().eval()
    x = model.example_inputs()
    gm = capture(model, x)
    modules = {n.target: node_shape(n) for n in gm.graph.nodes if n.op == "call_module"}
    assert modules["stem.0"] == (2, 8, 16, 16)
    assert modules["head"] == (2, 10)
    torch.testing.assert_close(gm(*x), model(*x))


def test_capture_with_keyword_inputs():
    class Kw(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, a, b=None):
            return self.fc(a) + b

    gm = capture(Kw(), {"a": torch.randn(1, 3), "b": torch.randn(1, 2)})
    assert [node_shape(n) for n in gm.graph.nodes if n.op == "call_module"] == [(1, 2)]


class Branchy(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_untraceable_error_names_construct_and_hint():
    with pytest.raises(UnsupportedModelError, match="Branchy.*torch.fx.*give groups"):
        capture(Branchy(), (torch.randn(2),), hint="give groups")


def test_failing_forward_is_reported():
    with pytest.raises(UnsupportedModelError, match="does not run on the example inputs"):
        capture(nn.Linear(3, 2), (torch.randn(1, 5),))
