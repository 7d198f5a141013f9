"""The Fisher proxy of `sk.sensitivity(estimate="fisher")`: estimators against closed forms in
float64, the fitted scale, and the rows it gives against measured ones."""

import importlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import spearmanr
from torch import nn

import slimkit as sk
from slimkit.core.errors import InvalidConfigError
from slimkit.search import Cache, sensitivity
from slimkit.search.fisher import anchors, fisher_diagonals, fit_scale, parameter_diagonals, removal_cost

fisher_module = importlib.import_module("slimkit.search.sensitivity")


def _linear_and_inputs(seed: int = 0) -> tuple[nn.Sequential, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 3))
    return model, torch.randn(8, 5)


def test_gauss_newton_diagonal_matches_the_closed_form():
    # y = W x + b: d y_k / d W_kj = x_j, so diag(J^T J) per sample is x_j^2 for every row k.
    model, x = _linear_and_inputs()
    estimate = fisher_diagonals(model, [x], ["0"], classifier=False, draws=3000)["0"]
    exact = x.double().square().mean(0).expand(3, 5)
    torch.testing.assert_close(estimate, exact, rtol=0.15, atol=0)  # 3000 draws: ~3 % std per entry


def test_classifier_fisher_matches_the_closed_form():
    # cross-entropy at y ~ softmax: E[(p_k - [y = k])^2] x_j^2 = p_k (1 - p_k) x_j^2.
    model, x = _linear_and_inputs(1)
    estimate = fisher_diagonals(model, [(x, torch.zeros(8, dtype=torch.long))], ["0"], classifier=True, draws=3000)
    p = model(x).double().softmax(-1).detach()
    exact = ((p * (1 - p)).unsqueeze(2) * x.double().square().unsqueeze(1)).mean(0)
    torch.testing.assert_close(estimate["0"], exact, rtol=0.15, atol=0)


def test_parameters_and_modes_are_restored():
    model, x = _linear_and_inputs()
    model.train()
    model[0].bias.requires_grad_(False)
    fisher_diagonals(model, [x], ["0"], classifier=False)
    assert model.training and model[0].weight.requires_grad and not model[0].bias.requires_grad
    assert model[0].weight.grad is None  # gradients are taken, never accumulated into .grad


@given(st.lists(st.floats(1e-6, 1e3), min_size=1, max_size=12), st.floats(0, 100))
def test_fit_scale_recovers_an_exact_slope(proxies, slope):
    assert fit_scale(proxies, [slope * p for p in proxies]) == pytest.approx(slope, rel=1e-9, abs=1e-12)


@given(st.lists(st.floats(0, 1e3), min_size=1, max_size=12), st.lists(st.floats(-1, 0), min_size=12, max_size=12))
def test_fit_scale_is_never_negative(proxies, drops):
    assert fit_scale(proxies, drops[: len(proxies)]) >= 0


@given(st.dictionaries(st.text(min_size=1, max_size=4), st.floats(0, 1e3), min_size=1, max_size=30), st.integers(1, 8))
def test_anchors_are_distinct_and_include_the_largest(proxies, count):
    chosen = anchors(proxies, count)
    assert len(chosen) == len(set(chosen)) == min(count, len(proxies))
    assert max(proxies.values()) in {proxies[k] for k in chosen}


BITS = (2, 3, 4, 8)


@pytest.fixture(scope="module")
def fc_rows(small):
    """Weight-only rows of the digits classifier by fidelity: measured, and estimated from the proxy."""
    model, data = small
    options = dict(metric="fidelity", bits=BITS, group_size=None, max_batches=1)
    measured = sensitivity(model, data, ("quantize",), **options)
    estimated = sensitivity(model, data, ("quantize",), estimate="fisher", anchors_measured=2, **options)
    return measured, estimated


def test_estimated_rows_agree_with_measured_ones(fc_rows):
    measured, estimated = fc_rows
    assert estimated.estimate == "fisher" and set(estimated.scale) == {"quantize"} and estimated.scale["quantize"] > 0
    assert [r.estimated for r in estimated.rows] == [False, True, False, True]  # anchors: int2, int4
    for want, got in zip(measured.rows, estimated.rows, strict=True):
        assert got.setting == want.setting and got.bytes_saved == want.bytes_saved
        assert got.drop == pytest.approx(want.drop, rel=0.3, abs=2e-4)
        assert got.metric == pytest.approx(estimated.baseline - got.drop)
    drops = [r.drop for r in estimated.rows]
    assert drops == sorted(drops, reverse=True)  # fewer bits, larger estimated drop


def test_fisher_rows_are_cached(small, monkeypatch):
    model, data = small
    calls = []
    real = fisher_module.parameter_diagonals
    monkeypatch.setattr(fisher_module, "parameter_diagonals", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = Cache()
    options = dict(metric="fidelity", bits=(2, 4, 8), max_batches=1, estimate="fisher", anchors_measured=1, cache=cache)
    first = sensitivity(model, data, ("quantize",), **options)
    again = sensitivity(model, data, ("quantize",), **options)
    assert len(calls) == 1 and again.measured == 0
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in first.rows]


class _Spare(nn.Module):
    """A classifier with a Linear that never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.spare = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_a_layer_no_gradient_reaches_is_measured_not_estimated():
    torch.manual_seed(0)
    data = [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]
    table = sensitivity(_Spare(), data, ("quantize",), bits=(2, 4), group_size=None, estimate="fisher",
                        anchors_measured=1)  # fmt: skip
    spare = [r for r in table.rows if r.setting.unit == "spare"]
    assert len(spare) == 2 and not any(r.estimated for r in spare) and all(r.drop == 0 for r in spare)
    assert any(r.estimated for r in table.rows if r.setting.unit == "fc")


@pytest.mark.parametrize(
    "options", [{"estimate": "hessian"}, {"anchors_measured": 0}, {"draws": 0}, {"fisher_verbs": ("decompose",)}]
)
def test_bad_estimate_options_are_refused(small, options):
    model, data = small
    with pytest.raises(InvalidConfigError):
        sensitivity(model, data, ("quantize",), **options)


class _Chain(nn.Module):
    """conv -> BatchNorm -> ReLU -> conv -> pool -> linear: one prunable group between the convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(torch.relu(self.bn(self.a(x)))).mean((2, 3)))


def test_removal_cost_is_the_fisher_weighted_square_of_the_consumers_removed_inputs():
    torch.manual_seed(0)
    model = _Chain().eval()
    x = torch.randn(4, 2, 6, 6)
    diagonals = parameter_diagonals(model, [x], classifier=False, draws=2)
    assert set(diagonals) == {n for n, _ in model.named_parameters()}
    pruned = sk.prune(model, "channels", ratio=0.5, example_inputs=(x[:1],))
    assert (pruned.a.out_channels, pruned.b.out_channels) == (4, 2)

    def removed(before: torch.Tensor, after: torch.Tensor) -> list[int]:
        return [i for i in range(len(before)) if not any(torch.equal(before[i], w) for w in after)]

    hidden = removed(model.a.weight, pruned.a.weight)  # the group between the convs
    out = removed(model.b.bias, pruned.b.bias)  # the group between b and fc
    assert len(hidden) == 4 and len(out) == 2
    by_hand = 0.0  # a removed channel's effect is its consumers' input columns going to zero
    for name, index in (("b.weight", (slice(None), hidden)), ("fc.weight", (slice(None), out))):
        weight = model.get_parameter(name).detach().double()
        by_hand += 0.5 * float((diagonals[name] * weight.square())[index].sum())
    assert removal_cost(model, pruned, diagonals) == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.slow
def test_pruning_rows_are_estimated_with_their_own_scale(small):
    model, data = small
    options = dict(metric="fidelity", ratios=(0.25, 0.5, 0.75), max_batches=1)
    measured = sensitivity(model, data, ("prune",), **options)
    estimated = sensitivity(model, data, ("quantize", "prune"), bits=(2, 4), group_size=None, estimate="fisher",
                            fisher_verbs=("quantize", "prune"), anchors_measured=2, **options)  # fmt: skip
    assert set(estimated.scale) == {"quantize", "prune"} and estimated.scale["prune"] > 0
    prune_rows = [r for r in estimated.rows if r.setting.verb == "prune"]
    assert sum(r.estimated for r in prune_rows) == len(prune_rows) - 2  # two anchors measured
    for want, got in zip(measured.rows, prune_rows, strict=True):
        assert got.setting == want.setting
        assert got.bytes_saved == want.bytes_saved and got.macs_saved == want.macs_saved
    by_slot: dict[str, list[float]] = {}
    for row in prune_rows:
        if row.estimated:
            by_slot.setdefault(row.setting.slot, []).append(row.drop)
    assert all(drops == sorted(drops) for drops in by_slot.values())  # a larger ratio, a larger estimated drop
    rho = spearmanr([r.drop for r in measured.rows], [r.drop for r in prune_rows]).statistic
    assert rho > 0.5  # 0.67 here: the proxy ranks the cuts roughly as measuring them does
    default = sensitivity(model, data, ("prune",), estimate="fisher", anchors_measured=2, **options)
    assert not any(r.estimated for r in default.rows)  # pruning rows are estimated only when asked
