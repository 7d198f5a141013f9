"""Layers from other libraries and subclasses of standard layers, under quantize and decompose."""

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

import slimkit as sk


def tiny_gpt2() -> nn.Module:
    """A 2-layer GPT-2 (``Conv1D`` projections), fixed random init."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


IDS = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("method", "options", "min_cosine"),
    [("int8-dynamic", {}, 0.999), ("weight-only", {"bits": 4, "group_size": 32}, 0.98)],
)
def test_gpt2_conv1d_projections_are_quantized(method, options, min_cosine):
    model = tiny_gpt2()
    conv1d = [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    q = sk.quantize(model, method, **options)
    changed = set(sk.explain(q).changed)
    assert set(conv1d) <= changed  # every Conv1D projection, none left float silently
    assert not any(type(m).__name__ == "Conv1D" for m in q.modules())
    with torch.no_grad():
        assert _cosine(model(IDS).logits, q(IDS).logits) >= min_cosine


def test_quantized_gpt2_saves_and_loads_exactly(tmp_path):
    q = sk.quantize(tiny_gpt2(), "int8-dynamic")
    sk.save(q, tmp_path / "q", source=f"{__name__}:tiny_gpt2")
    loaded = sk.load(tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, q(IDS).logits)


def test_svd_factorizes_conv1d_and_keeps_weight_readable():
    model = tiny_gpt2()
    d = sk.decompose(model, "svd", rank=0.25)
    layer = d.transformer.h[0].mlp.c_fc
    assert type(layer).__name__ == "LowRankLinear"
    # model code reading .weight (dtype, device, values) still works on the replaced layer
    assert layer.weight.shape == (256, 64) and layer.weight.dtype == torch.float32
    x = torch.randn(3, 64)
    torch.testing.assert_close(F.linear(x, layer.weight, layer.bias), layer(x), rtol=1e-4, atol=1e-5)


class _ScaledLinear(nn.Linear):
    """A Linear subclass with its own forward: not a standard Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


class _NamedLinear(nn.Linear):
    """A Linear subclass that keeps Linear's forward: a standard Linear."""


@pytest.mark.parametrize("verb", ["quantize", "decompose"])
def test_subclasses_are_their_base_unless_they_override_forward(verb):
    model = nn.Sequential(_NamedLinear(64, 64), nn.ReLU(), _ScaledLinear(64, 64)).eval()
    run = sk.quantize if verb == "quantize" else sk.decompose
    out = run(model, "int8-dynamic") if verb == "quantize" else run(model, "svd", rank=8)
    outcome = sk.explain(out)
    assert outcome.changed == ("0",)
    assert "overrides the forward of Linear" in outcome.skipped["2"]


class _ReadsWeightDirectly(nn.Module):
    """Like torchvision's Swin attention: ``F.linear(x, self.qkv.weight, ...)``, never ``self.qkv(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 16)
        self.proj = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(F.linear(x, self.qkv.weight, self.qkv.bias)))


def test_int8_static_skips_a_layer_whose_weight_is_read_directly():
    model = _ReadsWeightDirectly().eval()
    x = torch.randn(64, 16)
    q = sk.quantize(model, "int8-static", data=[x[:32], x[32:]])
    outcome = sk.explain(q)
    assert outcome.changed == ("proj",)
    assert "reads its weight directly" in outcome.skipped["qkv"]
    with torch.no_grad():
        assert _cosine(model(x), q(x)) >= 0.99


def test_int8_static_transformer_encoder_reads_its_linears_bias():
    # nn.TransformerEncoderLayer reads linear1.bias / linear2.bias before choosing its path
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(4, 6, 32)
    quantized = sk.quantize(model, "int8-static", data=[x])
    linear1 = quantized.layers[0].linear1
    torch.testing.assert_close(linear1.bias, model.layers[0].linear1.bias.detach(), rtol=0, atol=1e-3)
    calls = []
    for module in quantized.modules():
        if type(module).__name__ == "QDQLayer":
            module.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        assert _cosine(quantized(x), model(x)) > 0.999
    assert len(calls) == 4  # both Linears of both layers ran quantized
