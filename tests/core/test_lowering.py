"""The lowering table: a technique says how the exporters write its layers; they never import it."""

import pytest
import torch
from torch import nn

from slimkit.core import lowering as table
from slimkit.core.errors import UnsupportedModelError
from slimkit.core.lowering import ANY_FORMAT, Lowering, export_standins, refuse_unexpressible, register_lowering


class Odd(nn.Linear):
    """A layer only its own lowering knows how to export."""


class Twice(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return 2 * self.layer(x)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(table, "_LOWERINGS", {})
    register_lowering("fmt", Lowering((Odd,), standin=Twice, translations=lambda scale=1: {"op": scale}))
    register_lowering(ANY_FORMAT, Lowering((nn.GRU,), refusal="recurrent layers ({layers}): export without them"))


def test_standins_swap_in_for_the_block_and_shared_layers_stay_shared(registered):
    odd = Odd(3, 3)
    model = nn.Sequential(odd, nn.ReLU(), odd)
    x = torch.randn(2, 3)
    with export_standins(model, "fmt") as swapped:
        assert set(swapped) == {"0", "2"} and swapped["0"] is swapped["2"] and isinstance(model[0], Twice)
        torch.testing.assert_close(model[0](x), 2 * odd(x))
    assert model[0] is odd and model[2] is odd
    with export_standins(model, "other") as swapped:
        assert swapped == {} and model[0] is odd
    assert table.translation_table("fmt", scale=3) == {"op": 3} and table.translation_table("other") == {}


def test_a_refused_layer_is_named_for_every_format(registered):
    model = nn.Sequential(nn.GRU(3, 3), nn.GRU(3, 3))
    with pytest.raises(UnsupportedModelError, match=r"ExecuTorch cannot run recurrent layers \('0' and 1 more\)"):
        refuse_unexpressible(model, "executorch", "ExecuTorch")
    refuse_unexpressible(nn.Linear(2, 2), "executorch", "ExecuTorch")


def test_quantization_registers_its_onnx_lowering_and_int8_dynamic_refusal():
    import slimkit as sk

    model = sk.quantize(nn.Sequential(nn.Linear(8, 8)), "int8-dynamic")
    with pytest.raises(UnsupportedModelError, match="TFLite cannot run slimkit's int8-dynamic layers"):
        refuse_unexpressible(model, "tflite", "TFLite")
    with export_standins(model, "onnx") as swapped:
        assert type(swapped["0"]).__name__ == "Int8DynamicMatMul"
