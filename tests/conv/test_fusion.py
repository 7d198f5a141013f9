import pytest
import torch
import torch.ao.nn.intrinsic as nni
from torch import nn

import slimkit as sk
from slimkit.conv import fold_batchnorm
from slimkit.core.folding import find_chains, fold_pair
from slimkit.models.testing import ZOO

CONV_MODELS = ["residual", "inverted-residual", "concat", "grouped"]


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(n, generator=gen))
                m.bias.data.copy_(torch.randn(n, generator=gen))
    return model


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", CONV_MODELS)
def test_fuse_matches_unfused_on_zoo(name):
    model = _randomize_bn(ZOO[name]())
    x = model.example_inputs()
    fused = sk.accelerate(model, "fuse", example_inputs=x, channels_last=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        assert _max_rel(fused(*x), model(*x)) <= 1e-5
    state = sk.explain(fused).details
    assert len(state["folded"]) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert state["fused_relu"] and all(
        isinstance(fused.get_submodule(layer), nni.ConvReLU2d) for layer, _ in state["fused_relu"]
    )


def test_fuse_digits_identical_outputs_and_round_trip(tmp_path):
    model = sk.load("example:digits-cnn")
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    fused = sk.accelerate(model, "fuse", example_inputs=x[:1])
    with torch.no_grad():
        ref, out = model(x), fused(x)
    assert _max_rel(out, ref) <= 1e-5
    assert torch.equal(out.argmax(1), ref.argmax(1))
    assert len(sk.explain(fused).details["folded"]) == 12
    loaded = sk.load(sk.save(fused, tmp_path / "fused"))
    with torch.no_grad():
        assert torch.equal(loaded(x), out)


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_forced_round_trip(tmp_path, channels_last):
    model = ZOO["residual"]()
    x = model.example_inputs()
    fused = sk.accelerate(model, "fuse", channels_last=channels_last)
    conv = fused.get_submodule("stem.0.0")
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    loaded = sk.load(sk.save(fused, tmp_path / "m"))
    assert loaded.get_submodule("stem.0.0").weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    with torch.no_grad():
        assert torch.equal(loaded(*x), fused(*x))


def test_channels_last_auto_records_measurement():
    model = ZOO["residual"]()
    fused = sk.accelerate(model, "fuse", example_inputs=model.example_inputs())
    why = sk.explain(fused).details["channels_last_why"]
    assert why["reason"] in ("measured faster", "measured not faster")
    assert why["nchw_ms"] > 0 and why["nhwc_ms"] > 0


def test_fold_pair_matches_float64_reference_grouped_without_bias():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False).double()
    bn = _randomize_bn(nn.BatchNorm2d(8)).double().eval()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        ref = bn(conv(x))
        fold_pair(conv, bn)
        assert conv.bias is not None
        torch.testing.assert_close(conv(x), ref, rtol=1e-12, atol=1e-12)


def test_fold_linear_batchnorm1d_and_depthwise():
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU())
    _randomize_bn(model).eval()
    x = torch.randn(4, 6)
    with torch.no_grad():
        ref = model(x)
        fold_batchnorm(model, example_inputs=(x,))
        assert isinstance(model[1], nn.Identity)
        assert _max_rel(model(x), ref) <= 1e-5


def test_shared_conv_output_is_not_folded():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # the conv output is used twice: folding would be wrong

    model = _randomize_bn(Branchy()).eval()
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        ref = model(x)
        fold_batchnorm(model)
        assert isinstance(model.bn, nn.BatchNorm2d)
        assert torch.equal(model(x), ref)


def test_untraceable_model_falls_back_to_sequential_adjacency():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.body(x)
            return self.body(-x)

    model = _randomize_bn(Untraceable()).eval()
    assert find_chains(model, nn.Conv2d, nn.BatchNorm2d) == [("body.0", "body.1")]
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        ref = model(x)
        fold_batchnorm(model)
        assert isinstance(model.body[1], nn.Identity)
        assert _max_rel(model(x), ref) <= 1e-5


def test_batchnorm_without_running_stats_is_skipped():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    fused = sk.accelerate(model, "fuse", channels_last=False)
    state = sk.explain(fused).details
    assert state["folded"] == [] and state["skipped"] == {"1": "the BatchNorm tracks no running statistics"}
    assert sk.explain(fused).skipped == state["skipped"]
    assert isinstance(fused[1], nn.BatchNorm2d)


def test_an_excluded_batchnorm_is_skipped_with_the_reason():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    fused = sk.accelerate(model, "fuse", channels_last=False, exclude="1")
    assert sk.explain(fused).skipped == {"1": "excluded by include/exclude"}


def test_fuse_in_training_mode_warns():
    model = ZOO["residual"]().train()
    with pytest.warns(UserWarning, match="eval mode"):
        sk.accelerate(model, "fuse", channels_last=False)


def test_fuse_include_restricts_and_bad_pattern_errors():
    model = ZOO["residual"]()
    fused = sk.accelerate(model, "fuse", include="stem.*", channels_last=False)
    assert [p[0] for p in sk.explain(fused).details["folded"]] == ["stem.0"]
    with pytest.raises(sk.InvalidConfigError, match="matches no module"):
        sk.accelerate(model, "fuse", include="nope.*")
    with pytest.raises(sk.InvalidConfigError, match="channels_last"):
        sk.accelerate(model, "fuse", channels_last="sometimes")
