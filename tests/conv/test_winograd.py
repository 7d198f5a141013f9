import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import slimkit as sk
from slimkit.conv import WinogradConv2d, plain_convs
from slimkit.conv.winograd import kron_transforms, winograd_matrices
from slimkit.models.testing import ZOO

TOLERANCE = {2: 1e-5, 4: 5e-5}


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref).detach().norm() / ref.detach().norm())


@settings(max_examples=25, deadline=None)
@given(
    tile=st.sampled_from([2, 4]),
    batch=st.integers(1, 3),
    cin=st.integers(1, 24),
    cout=st.integers(1, 24),
    height=st.integers(3, 19),
    width=st.integers(3, 19),
    padding=st.integers(0, 2),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_winograd_matches_float64_conv(tile, batch, cin, cout, height, width, padding, bias, seed):
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 3, padding=padding, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        if bias:
            conv.bias.copy_(torch.randn(cout, generator=gen))
    x = torch.randn(batch, cin, height, width, generator=gen)
    layer = WinogradConv2d.from_conv(conv, tile)
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double() if bias else None, padding=padding)
    with torch.no_grad():
        out = layer(x)
    assert out.shape == ref.shape
    assert _rel_error(out, ref) <= TOLERANCE[tile]


@pytest.mark.parametrize("tile", [2, 4])
def test_wide_layer_numerics(tile):
    conv = nn.Conv2d(256, 128, 3, padding=1)
    x = torch.randn(1, 256, 16, 16)
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    with torch.no_grad():
        assert _rel_error(WinogradConv2d.from_conv(conv, tile)(x), ref) <= TOLERANCE[tile]


def test_transform_matrices_reproduce_1d_correlation_exactly():
    for m in (2, 4):
        a_t, g, b_t = winograd_matrices(m)
        d, k = torch.randn(m + 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
        direct = torch.stack([(d[i : i + 3] * k).sum() for i in range(m)])
        torch.testing.assert_close(a_t @ ((g @ k) * (b_t @ d)), direct, rtol=1e-12, atol=1e-12)
        assert torch.equal(b_t, b_t.round()), "input transform entries are integers (exact in fp32)"
        kron_b, kron_a = kron_transforms(m)
        assert kron_b.shape == ((m + 2) ** 2,) * 2 and kron_a.shape == (m * m, (m + 2) ** 2)


def test_multiplication_counts():
    f2 = WinogradConv2d(8, 16, padding=1, tile=2)
    f4 = WinogradConv2d(8, 16, padding=1, tile=4)
    assert f2.multiplication_ratio == pytest.approx(2.25)
    assert f4.multiplication_ratio == pytest.approx(4.0)
    direct = 8 * 16 * 9 * 16 * 16
    assert direct / f2.elementwise_multiplications(16, 16) == pytest.approx(2.25)
    assert direct / f4.elementwise_multiplications(16, 16) == pytest.approx(4.0)
    assert f4.elementwise_multiplications(15, 15) == 16 * 36 * 8 * 16  # padded tiles count


def test_gradients_match_conv_and_weight_updates_refresh_the_transform():
    conv = nn.Conv2d(4, 6, 3, padding=1).double()
    layer = WinogradConv2d.from_conv(conv, 4).double()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    conv(x).square().sum().backward()
    layer(x).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, conv.weight.grad, rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        layer.weight.mul_(2)
        conv.weight.mul_(2)
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-9, atol=1e-9)


def test_to_conv_and_ineligible_layers():
    conv = nn.Conv2d(3, 5, 3, padding=2)
    layer = WinogradConv2d.from_conv(conv, 2)
    back = layer.to_conv()
    assert torch.equal(back.weight, conv.weight) and back.padding == (2, 2)
    for bad, message in [
        (nn.Conv2d(3, 5, 3, stride=2), "stride"),
        (nn.Conv2d(4, 4, 3, groups=2), "groups"),
        (nn.Conv2d(3, 5, 5), "kernel"),
        (nn.Conv2d(3, 5, 3, dilation=2), "dilation"),
        (nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect"), "padding_mode"),
    ]:
        with pytest.raises(sk.InvalidConfigError, match=message):
            WinogradConv2d.from_conv(bad)
    with pytest.raises(sk.InvalidConfigError, match="tile"):
        WinogradConv2d(3, 3, tile=3)


@pytest.mark.parametrize("tile", [2, 4])
def test_accelerate_forced_tile_converts_every_eligible_layer(tmp_path, tile):
    model = ZOO["residual"]()
    x = model.example_inputs()
    fast = sk.accelerate(model, "winograd", tile=tile)
    state = sk.explain(fast).details
    assert set(state["converted"]) == {"stem.0", "block.0.0", "block.1", "down.1"}
    assert state["skipped"] == {"down.0.0": "stride (2, 2) is not 1", "shortcut": "kernel (1, 1) is not 3x3"}
    assert all(isinstance(fast.get_submodule(n), WinogradConv2d) for n in state["converted"])
    with torch.no_grad():
        ref = model(*x).double()
        out = fast(*x)
        assert _rel_error(out, ref) <= 10 * TOLERANCE[tile]
    loaded = sk.load(sk.save(fast, tmp_path / "w"))
    with torch.no_grad():
        assert torch.equal(loaded(*x), out)


def test_accelerate_auto_records_timings_and_only_converts_faster_layers():
    model = ZOO["residual"]()
    fast = sk.accelerate(model, "winograd", example_inputs=model.example_inputs())
    state = sk.explain(fast).details
    assert set(state["layers"]) == {"stem.0", "block.0.0", "block.1", "down.1"}
    for name, info in state["layers"].items():
        assert info["direct_ms"] > 0 and info["f2_ms"] > 0 and info["f4_ms"] > 0
        if info["tile"] is None:
            assert name not in state["converted"] and isinstance(fast.get_submodule(name), nn.Conv2d)
        else:
            assert info[f"f{info['tile']}_ms"] < 0.95 * info["direct_ms"]
            assert info["confirm_ms"] < 0.95 * info["confirm_direct_ms"]
            assert state["converted"][name] == info["tile"]


def test_auto_without_inputs_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    with pytest.raises(sk.InvalidConfigError, match="example_inputs or data"):
        sk.accelerate(model, "winograd")
    with pytest.raises(sk.InvalidConfigError, match="tile"):
        sk.accelerate(model, "winograd", tile=3)


def test_profile_counts_the_executed_matmuls():
    model = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1)).eval()
    x = torch.randn(1, 32, 16, 16)
    direct = sk.measure.count_macs(model, (x,))
    fast = sk.accelerate(model, "winograd", tile=4)
    counted = sk.measure.count_macs(fast, (x,))
    elementwise = fast[0].elementwise_multiplications(16, 16)
    assert counted.by_kind["conv"] == 0 and counted.by_kind["matmul"] >= elementwise
    assert direct.total / elementwise == pytest.approx(4.0)
    assert counted.total < direct.total


@pytest.mark.slow
@pytest.mark.parametrize("as_plain_conv", [False, True])
def test_onnx_export_parity(tmp_path, as_plain_conv):
    import onnx
    import onnxruntime as ort

    model = ZOO["residual"]()
    x = model.example_inputs()
    fast = sk.accelerate(model, "winograd", tile=4)
    exported = plain_convs(fast) if as_plain_conv else fast
    path = tmp_path / "m.onnx"
    torch.onnx.export(exported, x, str(path), dynamo=True)
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Conv") == sum(isinstance(m, nn.Conv2d) for m in exported.modules())
    assert ops.count("Conv") == (6 if as_plain_conv else 2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result = session.run(None, {session.get_inputs()[0].name: x[0].numpy()})[0]
    with torch.no_grad():
        ref = fast(*x)
    assert float((torch.from_numpy(result) - ref).abs().max() / ref.abs().max()) <= 1e-4
