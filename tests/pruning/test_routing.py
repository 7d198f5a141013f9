"""Exact pruning through size-dependent channel routing (`slimkit.pruning.routing`).

A ShuffleNet-style net (each unit splits its input in half with ``chunk``, passes the first half
on and interleaves it with its branch's output by a channel shuffle) is pruned with
``channels``; the reference is the *masked* original: the same model with every removed
channel zeroed where it is made and every removed input column zeroed where it is read. The
pruned model must compute exactly that (float32, relative 1e-5), while differing from the
unmasked original, so channels really were removed from the trunk.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import slimkit as sk
from slimkit.measure import count_macs
from slimkit.pruning.structured import keep_count


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _branch(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, stride, 1, groups=cout, bias=False), nn.BatchNorm2d(cout),
        nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )  # fmt: skip


class Unit(nn.Module):
    """Stride 1: split, pass the first half, interleave it with the branch of the second."""

    def __init__(self, half: int) -> None:
        super().__init__()
        self.branch = _branch(half, half, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return shuffle(torch.cat((a, self.branch(b)), dim=1), 2)


class Down(nn.Module):
    """Stride 2: two branches over the whole input, interleaved."""

    def __init__(self, cin: int, half: int) -> None:
        super().__init__()
        self.left = nn.Sequential(
            nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
            nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
        )  # fmt: skip
        self.right = _branch(cin, half, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shuffle(torch.cat((self.left(x), self.right(x)), dim=1), 2)


class ShuffleTiny(nn.Module):
    def __init__(self, halves: tuple[int, ...] = (6, 10), depth: int = 3) -> None:
        super().__init__()
        stages, cin = [], 8
        for half in halves:
            stages += [Down(cin, half), *(Unit(half) for _ in range(depth))]
            cin = 2 * half
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.stages = nn.Sequential(*stages)
        pool = (nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Conv2d(cin, 16, 1), nn.ReLU(), *pool, nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class Mixed(nn.Module):
    """The two halves of a split multiplied together: channels of different places mix."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return self.out(a * b)


def _randomized(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a removed channel would show in the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            ranges = ((m.running_mean, -0.3, 0.3), (m.running_var, 0.5, 2), (m.weight, 0.5, 1.5), (m.bias, -0.3, 0.3))
            for t, lo, hi in ranges:
                t.data.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model.eval()


def masked(model: nn.Module, keeps: dict[str, dict[str, list[int]]]) -> nn.Module:
    """``model`` with the channels ``keeps`` removes zeroed: rows (and biases, BatchNorm scale and
    shift) of each removed output, columns of each removed input."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, axes in keeps.items():
            layer = out.get_submodule(name)
            for axis, keep in axes.items():
                dim = 0 if axis == "out" else 1
                drop = torch.ones(layer.weight.shape[dim], dtype=torch.bool)
                drop[keep] = False
                layer.weight.index_fill_(dim, drop.nonzero().flatten(), 0.0)
                if axis == "out" and layer.bias is not None:
                    layer.bias[drop] = 0.0
    return out


def _x(seed: int = 0) -> tuple[torch.Tensor]:
    return (torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed)),)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _check_exact(model: nn.Module, ratio: float, x: tuple[torch.Tensor]) -> nn.Module:
    pruned = sk.prune(copy.deepcopy(model), "channels", ratio=ratio, example_inputs=x)
    keeps = sk.explain(pruned).details["keeps"]
    reference = masked(model, keeps)
    with torch.no_grad():
        assert _relative(pruned(*x), reference(*x)) < 1e-5
        assert _relative(model(*x), reference(*x)) > 1e-3  # channels really were removed
    return pruned


def _trunk_widths(model: nn.Module) -> list[int]:
    return [m.left[2].out_channels for m in model.stages if isinstance(m, Down)]


def test_shuffle_trunk_is_pruned_exactly_and_round_trips(tmp_path):
    model, x = _randomized(ShuffleTiny(), 0), _x()
    pruned = _check_exact(model, 0.5, x)
    first, second = _trunk_widths(pruned)
    assert 2 <= first <= 4 and second == 5  # 6 -> 3 has no matching routes at depth 3; a width beside it does
    assert all(u.branch[0].in_channels == first for u in pruned.stages[1:4])
    assert count_macs(pruned, x).total < 0.45 * count_macs(model, x).total  # odd widths round up
    assert not any("routed" in why or "channel count" in why for why in sk.explain(pruned).skipped.values())
    sk.save(pruned, tmp_path / "m", source=f"{__name__}:ShuffleTiny")
    assert torch.equal(sk.load(tmp_path / "m")(*x), pruned(*x))


@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(
    halves=st.tuples(st.integers(3, 12), st.integers(3, 12)),
    depth=st.integers(1, 4),
    ratio=st.sampled_from([0.25, 0.4, 0.5, 0.75]),
    seed=st.integers(0, 1000),
)
def test_any_width_depth_and_ratio_prunes_exactly_or_keeps_the_trunk(halves, depth, ratio, seed):
    """Whatever the widths, every pruned model equals its masked original; a trunk whose routes
    no width near the target keeps stays whole and is listed with the reason."""
    torch.manual_seed(seed)
    model, x = _randomized(ShuffleTiny(halves, depth), seed), _x(seed)
    pruned = sk.prune(copy.deepcopy(model), "channels", ratio=ratio, example_inputs=x)
    reference = masked(model, sk.explain(pruned).details["keeps"])
    with torch.no_grad():
        assert _relative(pruned(*x), reference(*x)) < 1e-5
    for old, new in zip(_trunk_widths(model), _trunk_widths(pruned), strict=True):
        if new == old and keep_count(old, ratio, 1) < old:
            assert any("no width keeps" in why for why in sk.explain(pruned).skipped.values()), halves


def test_channels_mixed_across_a_split_stay_whole_with_the_reason():
    model, x = Mixed().eval(), _x()
    with pytest.warns(UserWarning, match="nothing to prune"):
        pruned = sk.prune(copy.deepcopy(model), "channels", ratio=0.5, example_inputs=x)
    assert pruned.conv.out_channels == 8
    assert "chunk" in sk.explain(pruned).skipped["conv"]
    assert torch.equal(pruned(*x), model(*x))


@pytest.mark.slow
def test_torchvision_shufflenet_trunk_is_pruned_exactly():
    """torchvision's shufflenet_v2_x1_0 (issue 17's table: Torch-Pruning fails on it) at 0.5:
    every stage's trunk is halved, MACs fall to at most 0.35x, the model equals its masked original."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "zoo"))
    import cnn_zoo  # torchvision through the zoo's shim (make test installs it)
    import torchvision_shim

    torchvision_shim.import_torchvision()

    torch.manual_seed(0)
    model, x = _randomized(cnn_zoo.shufflenet_v2_x1_0(), 0), (cnn_zoo.image(cnn_zoo.SIZE),)
    pruned = _check_exact(model, 0.5, x)
    trunks = [s[0].branch1[2].out_channels for s in (pruned.stage2, pruned.stage3, pruned.stage4)]
    assert trunks == [58 // 2, 116 // 2, 232 // 2]
    assert count_macs(pruned, x).total <= 0.35 * count_macs(model, x).total


def test_global_scope_prunes_the_trunk_exactly():
    model, x = _randomized(ShuffleTiny(), 1), _x(1)
    pruned = sk.prune(copy.deepcopy(model), "channels", ratio=0.5, scope="global", example_inputs=x)
    reference = masked(model, sk.explain(pruned).details["keeps"])
    with torch.no_grad():
        assert _relative(pruned(*x), reference(*x)) < 1e-5
