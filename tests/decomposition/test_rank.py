import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.decomposition.rank import RankSpec, budget_ranks, energy_rank, parse_rank, ranks_at
from slimkit.decomposition.vbmf import evbmf_noise_and_rank, vbmf_rank


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (8, RankSpec("fixed", 8.0)),
        ("8", RankSpec("fixed", 8.0)),
        (0.25, RankSpec("ratio", 0.25)),
        ("ratio:0.5", RankSpec("ratio", 0.5)),
        ("vbmf", RankSpec("vbmf", 0.0)),
        ("energy:0.9", RankSpec("energy", 0.9)),
        ("params:0.5", RankSpec("params", 0.5)),
        ("MACS:0.4", RankSpec("macs", 0.4)),
    ],
)
def test_parse_rank_forms(value, expected):
    assert parse_rank(value) == expected


@pytest.mark.parametrize("value", [0, -3, 1.5, 0.0, True, "energy:1.2", "energy:x", "tucker", "params:", None])
def test_parse_rank_rejects(value):
    with pytest.raises(ValueError, match="rank"):
        parse_rank(value)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 100), min_size=1, max_size=30), st.floats(0.05, 1.0))
def test_energy_rank_is_smallest_rank_keeping_fraction(values, fraction):
    s = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
    r = energy_rank(s, fraction)
    total = float((s**2).sum())
    assert float((s[:r] ** 2).sum()) >= fraction * total - 1e-9 * total
    if r > 1:
        assert float((s[: r - 1] ** 2).sum()) < fraction * total


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=3), st.floats(0.001, 1.0))
def test_ranks_at_bounds(full, fraction):
    ranks = ranks_at(fraction, full)
    assert all(1 <= r <= f and r >= math.ceil(fraction * f - 1e-6) for r, f in zip(ranks, full, strict=True))


def test_budget_picks_largest_rank_within_params():
    m, n = 100, 60

    def cost(r):
        return r[0] * (m + n), r[0] * (m + n)

    (rank,) = budget_ranks(parse_rank("params:0.5"), (60,), cost, (m * n, m * n))
    assert rank * (m + n) <= 0.5 * m * n < (rank + 1) * (m + n)
    assert budget_ranks(parse_rank("params:0.001"), (60,), cost, (m * n, m * n)) is None


@pytest.mark.parametrize(
    ("rows", "cols", "rank", "noise"), [(100, 80, 5, 0.1), (64, 288, 12, 0.05), (200, 50, 10, 0.5)]
)
def test_vbmf_finds_true_rank_and_noise(rows, cols, rank, noise):
    g = torch.Generator().manual_seed(1)
    low = torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g)
    sigma2, found = evbmf_noise_and_rank(low + noise * torch.randn(rows, cols, generator=g))
    assert found == rank
    assert sigma2 == pytest.approx(noise**2, rel=0.1)


def test_vbmf_on_pure_noise_is_rank_zero_clamped_to_one():
    noise = torch.randn(60, 70, generator=torch.Generator().manual_seed(2))
    assert evbmf_noise_and_rank(noise)[1] == 0
    assert vbmf_rank(noise) == 1
