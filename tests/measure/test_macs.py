import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import BertConfig, BertModel

from slimkit.core.data import Batch
from slimkit.core.errors import InvalidConfigError
from slimkit.measure import macs
from slimkit.measure.macs import KINDS, MacCount, count_macs, register_mac_formula
from slimkit.models.testing import ZOO

REL = 0.01  # every hand count must match within 1% relative


def conv(n, cin, cout, hout, wout, k, groups=1):
    """Cout * Hout * Wout * (Cin / groups) * kh * kw per sample."""
    return n * cout * hout * wout * (cin // groups) * k * k


def linear(tokens, fan_in, fan_out):
    return tokens * fan_in * fan_out


def lstm(samples, steps, fan_in, hidden, gates=4):
    """Per time step and sample: gates * H * (I + H)."""
    return samples * steps * gates * hidden * (fan_in + hidden)


def attention_matmuls(batch, heads, lq, lk, head_dim):
    """q @ kᵀ plus attn @ v."""
    return 2 * batch * heads * lq * lk * head_dim


# Batch of 2 everywhere (example_inputs); images are 3x16x16.
HAND_COUNTS = {
    "residual": {
        "conv": conv(2, 3, 8, 16, 16, 3)
        + 2 * conv(2, 8, 8, 16, 16, 3)
        + conv(2, 8, 16, 8, 8, 3)
        + conv(2, 16, 16, 8, 8, 3)
        + conv(2, 8, 16, 8, 8, 1),
        "linear": linear(2, 16, 10),
    },
    "inverted-residual": {
        "conv": conv(2, 3, 8, 16, 16, 3)
        + conv(2, 8, 32, 16, 16, 1)
        + conv(2, 32, 32, 16, 16, 3, groups=32)
        + conv(2, 32, 8, 16, 16, 1),
        "linear": linear(2, 8, 10),
    },
    "concat": {
        "conv": conv(2, 3, 8, 16, 16, 3)
        + conv(2, 8, 4, 16, 16, 3)
        + conv(2, 12, 4, 16, 16, 3)
        + conv(2, 16, 8, 16, 16, 1),
        "linear": linear(2, 8, 10),
    },
    "grouped": {
        "conv": conv(2, 3, 16, 16, 16, 3)
        + conv(2, 16, 16, 16, 16, 1)
        + conv(2, 16, 16, 16, 16, 3, groups=4)
        + conv(2, 16, 16, 16, 16, 1),
        "linear": linear(2, 16, 10),
    },
    "attention": {  # dim 32, 4 heads, ffn 64, 8 tokens
        "linear": linear(16, 32, 32) * 5 + linear(16, 32, 64) + linear(16, 64, 32) + linear(2, 32, 10),
        "matmul": attention_matmuls(2, 4, 8, 8, 8),
    },
    "mha": {  # nn.MultiheadAttention: q/k/v in-projections + out-projection, then the head
        "linear": linear(16, 32, 32) * 4 + linear(2, 32, 10),
        "attention": attention_matmuls(2, 4, 8, 8, 8),
    },
    "lstm": {"recurrent": lstm(2, 10, 8, 16), "linear": linear(2, 16, 4)},
    "embedding": {"linear": linear(2, 16, 32) + linear(2, 32, 5)},  # the lookup is a gather: 0
}


def assert_count(count: MacCount, expected: dict[str, int]) -> None:
    assert set(count.by_kind) == set(KINDS)
    for kind in KINDS:
        want = expected.get(kind, 0)
        assert count.by_kind[kind] == pytest.approx(want, rel=REL, abs=0), kind
    assert count.total == pytest.approx(sum(expected.values()), rel=REL)
    assert count.total == sum(count.by_kind.values())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_matches_hand_count(name):
    model = ZOO[name]()
    assert_count(count_macs(model, model.example_inputs()), HAND_COUNTS[name])


def test_every_zoo_model_has_a_hand_count():
    assert set(HAND_COUNTS) == set(ZOO)


def test_count_is_for_the_batch_given():
    model = ZOO["residual"]()
    (x,) = model.example_inputs()
    assert count_macs(model, Batch(args=(x,))).total == 2 * count_macs(model, (x[:1],)).total


def test_model_mode_and_hooks_are_left_as_they_were():
    model = ZOO["lstm"]().train()
    count_macs(model, model.example_inputs())
    assert model.training and model.lstm.training
    assert not model.lstm._forward_hooks and not model.lstm._forward_pre_hooks


def _tiny_bert() -> BertModel:
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


def test_bert_matches_hand_count():
    batch, seq, hidden, ffn, layers = 2, 8, 32, 64, 2
    tokens = batch * seq
    per_layer_linear = linear(tokens, hidden, hidden) * 4 + linear(tokens, hidden, ffn) + linear(tokens, ffn, hidden)
    expected = {
        "linear": layers * per_layer_linear + linear(batch, hidden, hidden),  # + pooler on [CLS]
        "attention": layers * attention_matmuls(batch, 4, seq, seq, hidden // 4),
    }
    inputs = {
        "input_ids": torch.randint(0, 100, (batch, seq)),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long),
    }
    assert_count(count_macs(_tiny_bert(), inputs), expected)


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (nn.GRU(8, 16, batch_first=True), lstm(2, 10, 8, 16, gates=3)),
        (nn.RNN(8, 16, batch_first=True), lstm(2, 10, 8, 16, gates=1)),
        (nn.LSTM(8, 16, batch_first=True), lstm(2, 10, 8, 16)),
        (
            nn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True),
            2 * (lstm(2, 10, 8, 16) + lstm(2, 10, 32, 16)),
        ),
        # with a projection the recurrent input is the projected state (4), plus H*P per step
        (nn.LSTM(8, 16, proj_size=4, batch_first=True), 2 * 10 * (4 * 16 * (8 + 4) + 16 * 4)),  # not oneDNN
    ],
    ids=["gru", "rnn", "lstm", "lstm-2layer-bidirectional", "lstm-proj"],
)
@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_recurrent_formulas(module, expected):
    assert_count(count_macs(module, (torch.randn(2, 10, 8),)), {"recurrent": expected})


def test_recurrent_cell_counts_one_step():
    assert_count(count_macs(nn.LSTMCell(8, 16), (torch.randn(3, 8),)), {"recurrent": lstm(3, 1, 8, 16)})


def test_cudnn_rnn_formula_uses_every_weight_matrix():
    lstm_module = nn.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4)
    steps, samples = 5, 3
    x = torch.randn(steps, samples, 8)
    expected = steps * samples * sum(w.numel() for w in lstm_module._flat_weights if w.dim() == 2)
    assert macs._cudnn_rnn_macs(x, lstm_module._flat_weights, 4) == expected
    hand = 2 * (4 * 16 * (8 + 4) + 16 * 4) + 2 * (4 * 16 * (2 * 4 + 4) + 16 * 4)
    assert expected == steps * samples * hand


def test_multihead_attention_fast_and_slow_paths_agree():
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    x = torch.randn(2, 8, 32)
    fast = count_macs(mha.eval(), (x, x, x))  # eval + no-grad: aten._native_multi_head_attention
    slow = count_macs(mha.train(), (x, x, x))  # training: in-projections, then bmm
    assert fast.total == slow.total == linear(16, 32, 32) * 4 + attention_matmuls(2, 4, 8, 8, 8)
    assert fast.by_kind["attention"] == slow.by_kind["matmul"] == attention_matmuls(2, 4, 8, 8, 8)


def test_multihead_cross_attention():
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    q, kv = torch.randn(2, 8, 32), torch.randn(2, 5, 32)
    # not the fused path (key is not query); need_weights=True materializes scores with bmm
    expected = {
        "linear": linear(16, 32, 32) * 2 + linear(10, 32, 32) * 2,
        "matmul": attention_matmuls(2, 4, 8, 5, 8),
    }
    assert_count(count_macs(mha, (q, kv, kv)), expected)


def test_transformer_encoder_layer_fast_path():
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    expected = {
        "linear": linear(16, 32, 32) * 4 + linear(16, 32, 64) + linear(16, 64, 32),
        "attention": attention_matmuls(2, 4, 8, 8, 8),
    }
    assert_count(count_macs(layer, (torch.randn(2, 8, 32),)), expected)


class _SDPA(nn.Module):
    def forward(self, q, k, v):
        return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


@pytest.mark.parametrize(
    ("value_dim", "kind"),
    # CPU runs aten._scaled_dot_product_flash_attention_for_cpu when value and query dims
    # match, else the math fallback, whose bmm ops are matmuls
    [(16, "attention"), (8, "matmul")],
)
def test_scaled_dot_product_attention_on_cpu(value_dim, kind):
    q, k, v = torch.randn(2, 3, 7, 16), torch.randn(2, 3, 5, 16), torch.randn(2, 3, 5, value_dim)
    # counted dense: the causal mask does not reduce it
    expected = 2 * 3 * 7 * 5 * 16 + 2 * 3 * 7 * 5 * value_dim
    assert_count(count_macs(_SDPA(), (q, k, v)), {kind: expected})


def test_embedding_is_a_gather_with_no_macs():
    count = count_macs(nn.Embedding(1000, 64), (torch.randint(0, 1000, (4, 12)),))
    assert count.total == 0 and set(count.by_kind.values()) == {0}


def _quantize_dynamic(dtype):
    linear_relu = torch.ao.nn.intrinsic.LinearReLU(nn.Linear(16, 8), nn.ReLU())
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), linear_relu, nn.Linear(8, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear, type(linear_relu)}, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_dynamic_quantized_linear(dtype):
    # quantized::linear_dynamic / linear_relu_dynamic, or their _fp16 versions
    quantized = _quantize_dynamic(dtype)
    assert type(quantized[0]).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(quantized[2]).__module__.startswith("torch.ao.nn.intrinsic.quantized.dynamic")
    expected = {"linear": linear(15, 8, 16) + linear(15, 16, 8) + linear(15, 8, 4)}
    assert_count(count_macs(quantized, (torch.randn(3, 5, 8),)), expected)


class _Static(nn.Module):
    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def _quantize_static(*layers: nn.Module, example: torch.Tensor) -> nn.Module:
    model = _Static(*layers).eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig(torch.backends.quantized.engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = torch.ao.quantization.prepare(model)
        prepared(example)
        return torch.ao.quantization.convert(prepared)


def test_static_quantized_conv_and_linear():
    intrinsic = torch.ao.nn.intrinsic
    x = torch.randn(2, 4, 9, 9)
    model = _quantize_static(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),  # quantized::conv2d, 5x5 out
        intrinsic.ConvReLU2d(nn.Conv2d(8, 8, 1), nn.ReLU()),  # quantized::conv2d_relu
        nn.Flatten(),
        nn.Linear(200, 6),  # quantized::linear
        intrinsic.LinearReLU(nn.Linear(6, 3), nn.ReLU()),  # quantized::linear_relu
        example=x,
    )
    assert type(model.body[0]).__module__.startswith("torch.ao.nn.quantized")
    expected = {
        "conv": conv(2, 4, 8, 5, 5, 3, groups=2) + conv(2, 8, 8, 5, 5, 1),
        "linear": linear(2, 200, 6) + linear(2, 6, 3),
    }
    assert_count(count_macs(model, (x,)), expected)


@pytest.mark.parametrize(
    ("layers", "shape", "expected"),
    [
        ((nn.Conv1d(4, 6, 3, padding=1),), (2, 4, 10), 2 * 6 * 10 * 4 * 3),  # quantized::conv1d
        (
            (torch.ao.nn.intrinsic.ConvReLU1d(nn.Conv1d(4, 6, 3), nn.ReLU()),),  # quantized::conv1d_relu
            (2, 4, 10),
            2 * 6 * 8 * 4 * 3,
        ),
        ((nn.Conv3d(4, 6, 3, stride=2, groups=2),), (1, 4, 7, 7, 7), 6 * 27 * 2 * 27),  # quantized::conv3d
        (
            (torch.ao.nn.intrinsic.ConvReLU3d(nn.Conv3d(4, 6, 1), nn.ReLU()),),  # quantized::conv3d_relu
            (1, 4, 3, 3, 3),
            6 * 27 * 4,
        ),
    ],
    ids=["conv1d", "conv1d_relu", "conv3d", "conv3d_relu"],
)
def test_static_quantized_conv1d_conv3d(layers, shape, expected):
    x = torch.randn(*shape)
    assert_count(count_macs(_quantize_static(*layers, example=x), (x,)), {"conv": expected})


@pytest.fixture
def isolated_registry(monkeypatch):
    monkeypatch.setattr(macs, "_REGISTRY", dict(macs._REGISTRY))


@torch.library.custom_op("slimkit_test::outer_sum", mutates_args=())
def _outer_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a[:, None] * b[None, :]).sum()


@_outer_sum.register_fake
def _(a, b):
    return a.new_empty(())


class _OuterSum(nn.Module):
    def forward(self, a, b):
        return torch.ops.slimkit_test.outer_sum(a, b)


def test_register_mac_formula_counts_a_new_op(isolated_registry):
    a, b = torch.randn(6), torch.randn(7)
    assert count_macs(_OuterSum(), (a, b)).total == 0
    register_mac_formula(torch.ops.slimkit_test.outer_sum, lambda a, b, out: a.numel() * b.numel(), kind="matmul")
    assert_count(count_macs(_OuterSum(), (a, b)), {"matmul": 42})


def test_register_mac_formula_may_split_kinds(isolated_registry):
    register_mac_formula(torch.ops.slimkit_test.outer_sum.default, lambda a, b, out: {"linear": 2, "other": 3})
    assert_count(count_macs(_OuterSum(), (torch.randn(2), torch.randn(2))), {"linear": 2, "other": 3})


def test_formula_returning_an_unknown_kind_is_reported(isolated_registry):
    register_mac_formula(torch.ops.slimkit_test.outer_sum, lambda a, b, out: {"flops": 1})
    with pytest.raises(InvalidConfigError, match="unknown kind 'flops'"):
        count_macs(_OuterSum(), (torch.randn(2), torch.randn(2)))


def test_register_mac_formula_rejects_bad_arguments(isolated_registry):
    with pytest.raises(InvalidConfigError, match="valid kinds: conv, linear"):
        register_mac_formula(torch.ops.aten.mm, lambda *a, out: 0, kind="gemm")
    with pytest.raises(InvalidConfigError, match="dispatcher op"):
        register_mac_formula(torch.matmul, lambda *a, out: 0)


SMALL = st.integers(1, 6)


@settings(max_examples=40, deadline=None)
@given(
    lead=st.lists(SMALL, min_size=1, max_size=3),
    fan_in=st.integers(1, 48),
    fan_out=st.integers(1, 48),
    bias=st.booleans(),
)
def test_linear_property(lead, fan_in, fan_out, bias):
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    count = count_macs(layer, (torch.randn(*lead, fan_in),))
    assert count.total == count.by_kind["linear"] == math.prod(lead) * fan_in * fan_out


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    groups=st.integers(1, 4),
    cin_per_group=st.integers(1, 4),
    cout_per_group=st.integers(1, 4),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    size=st.integers(8, 14),
)
def test_conv2d_property(n, groups, cin_per_group, cout_per_group, kh, kw, stride, padding, dilation, size):
    cin, cout = groups * cin_per_group, groups * cout_per_group
    layer = nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=padding, dilation=dilation, groups=groups)
    hout = (size + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wout = (size + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    count = count_macs(layer, (torch.randn(n, cin, size, size),))
    assert count.total == count.by_kind["conv"] == n * cout * hout * wout * cin_per_group * kh * kw
