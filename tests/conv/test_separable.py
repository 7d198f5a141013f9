import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import slimkit as sk
from slimkit.conv import SeparableConv2d
from slimkit.core.data import TensorData
from slimkit.models.testing import ZOO


def _conv_with(weight: torch.Tensor, bias: bool = True, **kw) -> nn.Conv2d:
    cout, cin, kh, kw_ = weight.shape
    conv = nn.Conv2d(cin, cout, (kh, kw_), bias=bias, **kw)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


@settings(max_examples=20, deadline=None)
@given(cin=st.integers(1, 6), cout=st.integers(1, 8), k=st.sampled_from([3, 5]), seed=st.integers(0, 999))
def test_separable_kernel_is_reproduced_exactly(cin, cout, k, seed):
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(cout, cin, generator=gen, dtype=torch.float64)
    d = torch.randn(cin, k, k, generator=gen, dtype=torch.float64)
    conv = _conv_with((p[:, :, None, None] * d[None]).float(), padding=k // 2).double()
    layer = SeparableConv2d.from_conv(conv, 1).double()
    x = torch.randn(2, cin, 7, 7, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_rank_one_init_is_the_best_rank_one_per_channel():
    conv = nn.Conv2d(5, 7, 3).double()
    layer = SeparableConv2d.from_conv(conv, 1).double()
    dense = layer.dense_weight().detach()
    for c in range(5):
        slice_ = conv.weight[:, c].reshape(7, 9).detach()
        singular = torch.linalg.svdvals(slice_)
        error = torch.linalg.matrix_norm(slice_ - dense[:, c].reshape(7, 9))
        torch.testing.assert_close(error, singular[1:].square().sum().sqrt(), rtol=1e-9, atol=1e-9)


def test_full_rank_reproduces_the_layer_with_stride_padding_dilation():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2).double()
    layer = SeparableConv2d.from_conv(conv, rank=6).double()  # min(Cout, k²) = 6
    x = torch.randn(2, 4, 11, 11, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-10, atol=1e-10)
    ref = F.conv2d(x, layer.dense_weight(), conv.bias, stride=2, padding=2, dilation=2)
    torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-10)


def test_macs_of_a_converted_layer_drop_by_the_formula():
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(1, 64, 16, 16)
    layer = SeparableConv2d.from_conv(conv, 1)
    before = sk.measure.count_macs(conv, (x,)).total
    after = sk.measure.count_macs(layer, (x,)).total
    assert after / before == pytest.approx(1 / 64 + 1 / 9, rel=1e-6)
    assert before / after >= 4
    assert layer.mac_ratio == pytest.approx(1 / 64 + 1 / 9)


def test_accelerate_separable_skips_and_round_trips(tmp_path):
    model = ZOO["grouped"]()
    x = model.example_inputs()
    fast = sk.accelerate(model, "separable")
    state = sk.explain(fast).details
    assert set(state["converted"]) == {"stem.0"}
    assert "already grouped" in state["skipped"]["grouped.0"]
    assert "1x1" in state["skipped"]["reduce.0"]
    assert isinstance(fast.get_submodule("stem.0"), SeparableConv2d)
    loaded = sk.load(sk.save(fast, tmp_path / "s"))
    with torch.no_grad():
        assert torch.equal(loaded(*x), fast(*x))


def test_rank_that_saves_nothing_is_refused_per_layer():
    model = ZOO["residual"]()  # width 8: rank 8 costs 8 * (1/8 + 1/9) > 1
    fast = sk.accelerate(model, "separable", rank=8)
    state = sk.explain(fast).details
    assert state["converted"] == {}
    assert all("would not reduce MACs" in why for name, why in state["skipped"].items() if name != "shortcut")


def test_bad_options_are_clear_errors():
    model = ZOO["residual"]()
    with pytest.raises(sk.InvalidConfigError, match="needs data"):
        sk.accelerate(model, "separable", finetune={"epochs": 1})
    with pytest.raises(sk.InvalidConfigError, match="rank"):
        sk.accelerate(model, "separable", rank=0)
    with pytest.raises(sk.InvalidConfigError, match="cannot make"):
        SeparableConv2d.from_conv(nn.Conv2d(4, 4, 1))


@pytest.mark.slow
def test_distillation_finetune_moves_the_student_towards_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    teacher[-1].weight.data.mul_(50)  # a confident teacher, like a trained one
    x = torch.randn(128, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = teacher(x).log_softmax(1)
    data = TensorData(x, ref.argmax(1), batch_size=16)
    untuned = sk.accelerate(teacher, "separable")
    tuned = sk.accelerate(teacher, "separable", data=data, finetune={"epochs": 5, "lr": 3e-3})

    def divergence(student: nn.Module) -> float:
        with torch.no_grad():
            return float(F.kl_div(student.eval()(x).log_softmax(1), ref, log_target=True, reduction="batchmean"))

    assert divergence(tuned) < 0.5 * divergence(untuned)
    assert sk.get_record(tuned).transforms[-1].config["finetune"]["epochs"] == 5
