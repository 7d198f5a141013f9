"""``channels`` through grouped convolutions, GroupNorm, layer scales, SE gates, functional norms
and models only torch.export can capture (issue 17)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import slimkit as sk
from slimkit.core.errors import UnsupportedModelError
from slimkit.core.graph import capture
from slimkit.measure import count_macs


class GroupedWide(nn.Module):
    """A grouped conv whose output is wider than its input, then a GroupNorm of 4 groups."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.norm = nn.GroupNorm(4, 32)
        self.project = nn.Conv2d(32, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.norm(self.grouped(F.relu(self.stem(x)))))
        return self.head(self.project(x).mean((2, 3)))


class ScaledSE(nn.Module):
    """A ConvNeXt-style layer scale and a MobileNetV3-style squeeze-excitation gate on a residual."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(width, 8, 1), nn.Conv2d(8, width, 1)
        self.gate = nn.Hardsigmoid()
        self.layer_scale = nn.Parameter(torch.full((width, 1, 1), 0.5))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.conv(x)
        y = y * self.gate(self.fc2(F.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        x = x + self.layer_scale * y
        return self.head(x.mean((2, 3)))


class ShapeBranch(nn.Module):
    """A Python branch on the input's shape: torch.fx cannot trace it, torch.export can."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        if x.shape[-1] > 8:
            x = F.avg_pool2d(x, 2)
        y = F.relu(self.bn(self.conv1(x)))
        return self.head((y + self.conv2(y)).mean((2, 3)))


class DataBranch(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.branch = DataBranch()

    def forward(self, x):
        return self.branch(self.conv(x))


def _x():
    return (torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)),)


def _prune_and_reload(model, tmp_path, x):
    pruned = sk.prune(model.eval(), "channels", ratio=0.5, example_inputs=x)
    sk.save(pruned, tmp_path / "m", source=f"{__name__}:{type(model).__name__}")
    assert torch.equal(sk.load(tmp_path / "m")(*x), pruned(*x))
    return pruned


def test_grouped_conv_keeps_its_groups_and_groupnorm_its_groups(tmp_path):
    x = _x()
    model = GroupedWide()
    pruned = _prune_and_reload(model, tmp_path, x)
    assert (pruned.grouped.groups, pruned.grouped.in_channels, pruned.grouped.out_channels) == (4, 8, 16)
    assert (pruned.norm.num_groups, pruned.norm.num_channels) == (4, 16)
    assert count_macs(pruned, x).total < 0.35 * count_macs(model, x).total


def test_grouped_conv_pruned_channels_are_the_zero_ones():
    """Zeroed inputs of each group (and their stem filters) go; the output does not change."""
    model, x = GroupedWide().eval(), _x()
    with torch.no_grad():
        dead = torch.arange(16).view(4, 4)[:, 2:].flatten()  # the last 2 inputs of every group
        model.stem.weight[dead] = 0
        model.stem.bias[dead] = -1  # relu(-1) = 0: these channels carry nothing
    pruned = sk.prune(model, "channels", ratio=0.5, example_inputs=x, groups=[["stem:out", "grouped:in"]])
    assert pruned.grouped.weight.shape[1] == 2 and pruned.grouped.groups == 4
    torch.testing.assert_close(pruned(*x), model(*x), atol=1e-5, rtol=0)


def test_layer_scale_and_se_gate_are_coupled_with_the_block(tmp_path):
    x = _x()
    model = ScaledSE()
    pruned = _prune_and_reload(model, tmp_path, x)
    assert pruned.layer_scale.shape == (8, 1, 1)
    assert (pruned.fc1.in_channels, pruned.fc1.out_channels, pruned.fc2.out_channels) == (8, 4, 8)
    skipped = sk.explain(pruned).skipped
    assert set(skipped) == {"head"}


def test_a_model_fx_cannot_trace_is_exported_instead(tmp_path):
    x = _x()
    model = ShapeBranch().eval()
    assert capture(model, x).meta["tracer"] == "export"
    pruned = _prune_and_reload(model, tmp_path, x)
    assert (pruned.conv1.out_channels, pruned.bn.num_features, pruned.conv2.in_channels) == (8, 8, 8)


def test_untraceable_error_names_both_tracers_and_the_module():
    with pytest.raises(UnsupportedModelError, match=r"torch\.fx: .*in module branch \(DataBranch\).*torch\.export"):
        capture(Wrapped(), (torch.randn(1, 3, 4, 4),))


class Shared(nn.Module):
    """One conv applied to two inputs, and one scale parameter applied to both results."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(8, 1, 1))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        left, right = self.scale * self.shared(self.a(x)), self.scale * self.shared(self.b(x))
        return self.head(torch.cat([left, right], 1).mean((2, 3)))


def test_a_layer_used_twice_keeps_the_same_channels_in_both_calls(tmp_path):
    x = _x()
    pruned = _prune_and_reload(Shared(), tmp_path, x)
    assert (pruned.a.out_channels, pruned.b.out_channels, pruned.shared.in_channels) == (4, 4, 4)
    assert pruned.shared.out_channels == 4 and pruned.scale.shape == (4, 1, 1) and pruned.head.in_features == 8


class ScaledMLPBlock(nn.Module):
    """ConvNeXt's block tail: Linear -> GELU -> Linear, then a per-channel layer-scale parameter."""

    def __init__(self, width: int = 8, hidden: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.layer_scale = nn.Parameter(torch.full((width,), 0.5))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        y = self.stem(x).mean((2, 3))
        return self.head(y + self.layer_scale * self.fc2(F.gelu(self.fc1(y))))


def test_neurons_beside_a_layer_scale_parameter_prunes_the_hidden_layer(tmp_path):
    """A channel group holding a bare parameter (the layer scale) is not an FFN: no crash, and
    the hidden neurons still go."""
    torch.manual_seed(0)
    model = ScaledMLPBlock().eval()
    x = torch.randn(2, 3, 8, 8)
    pruned = sk.prune(model, "neurons", ratio=0.5, example_inputs=(x,))
    assert pruned.fc1.out_features == 16 and pruned.fc2.in_features == 16
    assert pruned(x).shape == (2, 10)
    with torch.no_grad():
        torch.testing.assert_close(sk.load(sk.save(pruned, tmp_path / "m"))(x), pruned(x))
