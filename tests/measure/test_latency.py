import time

import numpy as np
import pytest
import torch

from slimkit.core.errors import InvalidConfigError
from slimkit.measure import Latency, fixed_threads, measure_latency
from slimkit.measure.latency import MAX_SPREAD


class FakeClock:
    """Replaces time.perf_counter; each call of the timed function advances it by a set amount."""

    def __init__(self, monkeypatch, durations_s):
        self.now, self.calls, self.durations = 100.0, 0, list(durations_s)
        monkeypatch.setattr(time, "perf_counter", lambda: self.now)

    def fn(self):
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


def test_statistics_exclude_warmup_and_match_numpy(monkeypatch):
    timed_ms = [7.0, 1.0, 3.0, 10.0, 2.0, 9.0, 4.0, 6.0, 8.0, 5.0]
    warmup_s = [5.0, 5.0]  # slow warm-up calls that must not show up
    clock = FakeClock(monkeypatch, warmup_s + [ms / 1e3 for ms in timed_ms])
    result = measure_latency(clock.fn, warmup=2, min_runs=10, max_runs=10, budget_s=1e9, sync=lambda: None)
    assert clock.calls == 12
    assert result.runs == 10
    p50, p90 = np.percentile(np.array(timed_ms, dtype=np.float64), [50, 90])
    assert result.p50_ms == pytest.approx(p50, rel=1e-9)
    assert result.p90_ms == pytest.approx(p90, rel=1e-9)
    assert result.mean_ms == pytest.approx(np.mean(timed_ms), rel=1e-9)


def test_stops_once_budget_spent_after_min_runs_while_noisy(monkeypatch):
    clock = FakeClock(monkeypatch, [0.05, 0.05, 0.3, 0.3])  # p90/p50 stays far above MAX_SPREAD
    result = measure_latency(clock.fn, warmup=1, min_runs=4, max_runs=200, budget_s=1.0, sync=lambda: None)
    assert result.runs == 6  # 0.05 + 0.3 + 0.3 + 0.05 + 0.05 + 0.3 s reaches the 1 s budget
    assert clock.calls == 7
    assert result.noisy and result.spread > MAX_SPREAD


def test_stops_as_soon_as_the_spread_settles(monkeypatch):
    clock = FakeClock(monkeypatch, [0.25])
    result = measure_latency(clock.fn, warmup=1, min_runs=3, max_runs=200, budget_s=100.0, sync=lambda: None)
    assert result.runs == 3 and result.spread == pytest.approx(1.0) and not result.noisy


def test_repeats_past_a_noisy_start_until_the_spread_is_small(monkeypatch):
    clock = FakeClock(monkeypatch, [0.5, 0.5] + [0.1] * 1000)  # two slow runs, then steady
    result = measure_latency(clock.fn, warmup=0, min_runs=5, max_runs=1000, budget_s=1e9, sync=lambda: None)
    assert 5 < result.runs < 50
    assert result.spread <= MAX_SPREAD and not result.noisy
    assert result.p50_ms == pytest.approx(100.0)


def test_min_runs_win_over_budget_and_max_runs_over_everything(monkeypatch):
    clock = FakeClock(monkeypatch, [0.25])
    assert measure_latency(clock.fn, warmup=0, min_runs=7, budget_s=0.0, sync=lambda: None).runs == 7
    noisy = FakeClock(monkeypatch, [0.05, 0.05, 0.3, 0.3])
    result = measure_latency(noisy.fn, warmup=0, min_runs=4, max_runs=5, budget_s=1e9, sync=lambda: None)
    assert result.runs == 5 and result.noisy


def test_latency_records_without_spread_still_load():
    old = Latency(p50_ms=2.0, p90_ms=3.0, mean_ms=2.5, runs=10)
    assert old.spread == pytest.approx(1.5) and not old.noisy


def test_sync_runs_after_every_call_inside_the_timed_span(monkeypatch):
    clock = FakeClock(monkeypatch, [0.002])
    syncs = []

    def sync():
        syncs.append(clock.calls)
        clock.now += 0.001  # waiting for the device is part of the latency

    result = measure_latency(clock.fn, warmup=3, min_runs=10, max_runs=10, sync=sync)
    assert syncs == list(range(1, 14))
    assert result.p50_ms == pytest.approx(3.0) and result.p90_ms == pytest.approx(3.0)


def test_real_clock_structure():
    calls = []
    result = measure_latency(
        lambda: calls.append(torch.randn(64, 64).sum()), warmup=2, min_runs=5, max_runs=50, budget_s=0.05
    )
    assert isinstance(result, Latency)
    assert 5 <= result.runs <= 50
    assert len(calls) == 2 + result.runs
    assert 0 < result.p50_ms <= result.p90_ms
    assert result.mean_ms > 0


@pytest.mark.parametrize(
    "options",
    [{"warmup": -1}, {"min_runs": 0}, {"min_runs": 5, "max_runs": 4}, {"budget_s": -1.0}, {"max_spread": 0.5}],
)
def test_invalid_options(options):
    with pytest.raises(InvalidConfigError, match="min_runs"):
        measure_latency(lambda: None, **options)


def test_fixed_threads_sets_and_restores():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with fixed_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), fixed_threads(target):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_fixed_threads_none_leaves_setting():
    before = torch.get_num_threads()
    with fixed_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


def test_fixed_threads_rejects_zero():
    with pytest.raises(InvalidConfigError, match=">= 1"), fixed_threads(0):
        pass
