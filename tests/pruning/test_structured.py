import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.graph import capture
from slimkit.measure import count_macs
from slimkit.models.testing import ZOO
from slimkit.pruning.dependency import DependencyGraph

NAMES = list(ZOO)


def _zoo(name):
    return sk.load(f"slimkit.models.testing:{ZOO[name].__name__}")


def _prune(model, **options):
    with pytest.warns(UserWarning) if not _has_prunable(model) else _nullcontext():
        return sk.prune(model, "channels", example_inputs=model.example_inputs(), **options)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _has_prunable(model):
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return True  # the width of its heads (split into q/k/v projections by channels)
    return any(not g.blocked for g in DependencyGraph(capture(model, model.example_inputs())).groups())


@pytest.mark.parametrize("name", NAMES)
def test_pruned_forward_keeps_output_shape(name):
    model = _zoo(name)
    x = model.example_inputs()
    pruned = _prune(model, ratio=0.5)
    assert pruned(*x).shape == model(*x).shape
    if _has_prunable(model):
        assert sk.measure.count_params(pruned) < sk.measure.count_params(model)
    else:  # nothing the graph can follow: the record says why
        assert sk.explain(pruned).skipped


def test_lstm_is_listed_as_not_prunable():
    model = _zoo("lstm")
    with pytest.warns(UserWarning, match="nothing to prune"):
        pruned = sk.prune(model, "channels")
    assert "lstm" in sk.explain(pruned).skipped


@pytest.mark.parametrize("name", NAMES)
def test_ratio_zero_is_bit_identical(name):
    model = _zoo(name)
    x = model.example_inputs()
    assert torch.equal(_prune(model, ratio=0.0)(*x), model(*x))


def _zero_half(model, groups):
    """Zero every other channel (all coupled slices) of each prunable group."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for group in groups:
            channels = torch.arange(0, group.size, 2)[: group.size // 2]
            for m in group.members:
                idx = (m.offset + channels[:, None] * m.repeat + torch.arange(m.repeat)).flatten()
                mod = modules[m.module]
                if isinstance(mod, nn.Embedding):
                    mod.weight[:, idx] = 0
                elif m.axis == "in" and getattr(mod, "groups", 1) > 1:  # grouped conv: columns of the group's rows
                    per, rows = mod.weight.shape[1], mod.weight.shape[0] // mod.groups
                    mod.weight.view(mod.groups, rows, per, -1)[idx // per, :, idx % per] = 0
                elif m.axis == "in":
                    mod.weight[:, idx] = 0
                else:
                    mod.weight[idx] = 0
                    if getattr(mod, "bias", None) is not None:
                        mod.bias[idx] = 0


@pytest.mark.parametrize("name", NAMES)
def test_zero_channels_are_removed_without_changing_outputs(name):
    model = _zoo(name)
    x = model.example_inputs()
    groups = [g for g in DependencyGraph(capture(model, x)).groups() if not g.blocked]
    _zero_half(model, groups)
    graph_only = {"exclude": "attn*"} if name == "mha" else {}  # head widths: test_channel_transformers
    pruned = _prune(model, ratio=0.5, **graph_only)
    torch.testing.assert_close(pruned(*x), model(*x), atol=1e-6, rtol=0)
    assert sk.measure.count_params(pruned) <= sk.measure.count_params(model)


def _expected_macs(model, x):
    """MACs from the layer shapes: conv out.numel * cin/groups * k, linear out.numel * in."""
    total = []

    def hook(mod, inputs, out):
        if isinstance(mod, nn.Conv2d):
            total.append(out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1])
        elif isinstance(mod, nn.Linear):
            total.append(out.numel() * mod.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(*x)
    for h in handles:
        h.remove()
    return sum(total)


@pytest.mark.parametrize("name", ["residual", "inverted-residual", "concat", "grouped", "embedding"])
def test_macs_match_profile_and_drop(name):
    model = _zoo(name)
    x = model.example_inputs()
    pruned = _prune(model, ratio=0.5)
    macs = count_macs(pruned, x).total
    assert macs == _expected_macs(pruned, x)
    assert sk.profile(pruned, example_inputs=x, batch_sizes=(1,), budget_s=0.05).macs == macs
    assert macs < 0.75 * count_macs(model, x).total


@pytest.mark.parametrize("name", NAMES)
def test_save_load_same_outputs(name, tmp_path):
    model = _zoo(name)
    x = model.example_inputs()
    pruned = _prune(model, ratio=0.5, round_to=2)
    sk.save(pruned, tmp_path / "m")
    loaded = sk.load(tmp_path / "m")
    assert torch.equal(loaded(*x), pruned(*x))


def test_round_to_and_minimum_keep():
    model = _zoo("residual")
    pruned = _prune(model, ratio=0.5, round_to=8)
    kept = sk.explain(pruned).details["pruned"]
    assert all(k % 8 == 0 and k >= 8 for _, k in kept.values())
    tiny = _prune(model, ratio=0.99, round_to=3)
    assert all(k >= 3 for _, k in sk.explain(tiny).details["pruned"].values())


@pytest.mark.parametrize("importance", ["l2", "random", "bn-scale", "taylor", "activation"])
def test_importances_prune_and_run(importance):
    model = _zoo("residual")
    x = model.example_inputs()
    data = [(x[0], torch.tensor([1, 2]))]
    pruned = sk.prune(model, "channels", example_inputs=x, data=data, importance=importance, scope="global")
    assert pruned(*x).shape == (2, 10)
    assert sk.measure.count_params(pruned) < sk.measure.count_params(model)


def test_global_scope_removes_ratio_overall():
    model = _zoo("concat")
    pruned = _prune(model, ratio=0.5, scope="global")
    sizes = sk.explain(pruned).details["pruned"].values()
    before, after = sum(s for s, _ in sizes), sum(k for _, k in sizes)
    assert after == pytest.approx(before / 2, abs=len(sizes))


def test_exclude_keeps_layer_whole():
    model = _zoo("residual")
    pruned = _prune(model, ratio=0.5, exclude="block.*")
    assert pruned.block[0][0].out_channels == 8
    assert "excluded" in str(sk.explain(pruned).skipped)


def test_explicit_groups():
    model = _zoo("embedding")
    x = model.example_inputs()
    pruned = sk.prune(model, "channels", groups=[["mlp.0:out", "mlp.2:in"]], ratio=0.5)
    assert pruned.mlp[0].out_features == 16 and pruned.embedding.embedding_dim == 16
    assert pruned(*x).shape == model(*x).shape


def test_mha_heads_ratio_zero_and_save_load(tmp_path):
    model = _zoo("mha")
    x = model.example_inputs()
    torch.testing.assert_close(sk.prune(model, "heads", ratio=0.0)(*x), model(*x), atol=1e-6, rtol=0)
    pruned = sk.prune(model, "heads", ratio=0.5)
    assert pruned.attn.num_heads == 2 and pruned.attn.q_proj.out_features == 16
    sk.save(pruned, tmp_path / "m")
    assert torch.equal(sk.load(tmp_path / "m")(*x), pruned(*x))


def test_neurons_on_ffn_only():
    model = _zoo("attention")
    x = model.example_inputs()
    pruned = sk.prune(model, "neurons", ratio=0.5)
    assert pruned.ffn[0].out_features == 32 and pruned.query.out_features == 32
    assert pruned(*x).shape == model(*x).shape


def test_pruned_model_exports(tmp_path):
    model = _zoo("residual")
    x = model.example_inputs()
    pruned = _prune(model, ratio=0.5)
    program = torch.export.export(pruned, x)
    torch.testing.assert_close(program.module()(*x), pruned(*x))


class FlattenNet(nn.Module):
    """Two convs concatenated, flattened with their 6x6 maps, then a Linear; plus a chunk."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 6, 3)
        self.c = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(10 * 36, 3)

    def forward(self, x):
        top, bottom = self.c(x).chunk(2, dim=1)
        y = torch.cat([self.a(x), self.b(x)], 1) * (top + bottom).mean(1, keepdim=True)
        return self.fc(torch.flatten(y, 1))


def test_flatten_and_concat_follow_channels_chunk_blocks():
    torch.manual_seed(0)
    model = FlattenNet().eval()
    x = (torch.randn(2, 1, 8, 8),)
    groups = {g.label: g for g in DependencyGraph(capture(model, x)).groups()}
    assert not groups["a"].blocked and not groups["b"].blocked
    assert "chunk" in groups["c"].blocked
    assert any(m.module == "fc" and m.repeat == 36 and m.offset == 4 * 36 for m in groups["b"].members)
    _zero_half(model, [g for g in groups.values() if not g.blocked])
    pruned = sk.prune(model, "channels", example_inputs=x, ratio=0.5)
    assert pruned.fc.in_features == 5 * 36 and pruned.a.out_channels == 2 and pruned.c.out_channels == 4
    torch.testing.assert_close(pruned(*x), model(*x), atol=1e-6, rtol=0)
