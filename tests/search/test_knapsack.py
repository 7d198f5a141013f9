"""The allocator's integer program: never over the predicted budget, optimal against brute force."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimkit.core.errors import InvalidConfigError
from slimkit.search.knapsack import choose

option = st.tuples(st.integers(-20, 200).map(lambda d: d / 1000), st.integers(1, 10_000).map(float))
tables = st.lists(st.lists(option, min_size=1, max_size=3), min_size=1, max_size=4)


def _plans(slots):
    """Every plan: per slot an option index or None."""
    return itertools.product(*[[None, *range(len(options))] for options in slots])


def _totals(slots, plan):
    picked = [slots[i][j] for i, j in enumerate(plan) if j is not None]
    return sum(d for d, _ in picked), sum(s for _, s in picked)


def test_tiny_table_matches_hand_solution():
    slots = [[(0.30, 100.0), (0.05, 60.0)], [(0.02, 50.0)], [(0.0, 10.0), (0.5, 90.0)]]
    chosen = choose(slots, max_drop=0.1)
    assert chosen == [1, 0, 0]
    assert _totals(slots, chosen) == pytest.approx((0.07, 120.0))


@settings(max_examples=60, deadline=None)
@given(tables, st.integers(0, 400).map(lambda b: b / 1000))
def test_max_drop_never_exceeded_and_optimal(slots, budget):
    chosen = choose(slots, max_drop=budget)
    drop, saved = _totals(slots, chosen)
    assert drop <= budget + 1e-9
    best = max(s for d, s in map(lambda p: _totals(slots, p), _plans(slots)) if d <= budget + 1e-9)
    assert saved == pytest.approx(best, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(tables, st.floats(0.0, 1.0))
def test_min_saved_is_the_least_drop(slots, fraction):
    reachable = sum(max(s for _, s in options) for options in slots)
    target = fraction * reachable
    chosen = choose(slots, min_saved=target)
    drop, saved = _totals(slots, chosen)
    assert saved >= target - 1e-6
    best = min(d for d, s in map(lambda p: _totals(slots, p), _plans(slots)) if s >= target - 1e-6)
    assert drop == pytest.approx(best, abs=1e-9)


def test_bad_budgets_are_refused():
    with pytest.raises(InvalidConfigError, match="exactly one budget"):
        choose([[(0.1, 1.0)]])
    with pytest.raises(InvalidConfigError, match="exactly one budget"):
        choose([[(0.1, 1.0)]], max_drop=0.1, min_saved=1.0)
    with pytest.raises(InvalidConfigError, match=">= 0"):
        choose([[(0.1, 1.0)]], max_drop=-0.1)
    with pytest.raises(InvalidConfigError, match="no plan saves"):
        choose([[(0.1, 1.0)]], min_saved=5.0)


def test_optimal_beyond_the_solvers_default_gap():
    # found by hypothesis: 12,500 of 12,501 bytes is within HiGHS's default 1e-4 relative gap
    slots = [[(0.003, 1.0)], [(0.064, 4069.0)], [(0.108, 8431.0)], [(0.023, 1.0), (0.066, 22.0)]]
    chosen = choose(slots, max_drop=0.196)
    assert _totals(slots, chosen)[1] == 12501.0
