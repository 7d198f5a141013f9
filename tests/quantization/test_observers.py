import numpy as np
import pytest
import torch

from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.quantization.observers import (
    EntropyObserver,
    MinMaxObserver,
    MovingAverageObserver,
    MSEObserver,
    PercentileObserver,
    make_observer,
)
from slimkit.quantization.primitives import QuantSpec


def batches(n=4, seed=0, rows=16):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, 8, generator=g) * (i + 1) + i for i in range(n)]


def np_qdq(x, lo, hi, spec):
    scale, zp = spec.qparams(torch.tensor(lo), torch.tensor(hi))
    s, z = float(scale), int(zp)
    qmin, qmax = spec.range
    return (np.clip(np.round(x / s) + z, qmin, qmax) - z) * s


def test_minmax_per_tensor_and_per_channel():
    data = batches()
    obs, per_ch = MinMaxObserver(), MinMaxObserver(QuantSpec(axis=1))
    for b in data:
        obs.observe(b)
        per_ch.observe(b)
    stacked = np.concatenate([b.numpy() for b in data])
    lo, hi = obs.clip_range()
    assert float(lo) == stacked.min() and float(hi) == stacked.max()
    np.testing.assert_array_equal(per_ch.clip_range()[1].numpy(), stacked.max(0))
    scale, zp = obs.qparams()
    assert abs(float(scale) - (stacked.max() - min(stacked.min(), 0)) / 255) < 1e-6


def test_moving_average_matches_numpy_ema():
    data = batches(6)
    obs = MovingAverageObserver(momentum=0.3)
    lo = hi = None
    for b in data:
        obs.observe(b)
        blo, bhi = b.numpy().min(), b.numpy().max()
        lo = blo if lo is None else lo + 0.3 * (blo - lo)
        hi = bhi if hi is None else hi + 0.3 * (bhi - hi)
    assert np.isclose(float(obs.clip_range()[0]), lo, rtol=1e-5)
    assert np.isclose(float(obs.clip_range()[1]), hi, rtol=1e-5)


def test_percentile_matches_numpy_within_a_bin():
    data = batches(5, rows=4000)  # dense tails: sample spacing below a bin width
    obs = PercentileObserver(percentile=99.0)
    for b in data:
        obs.observe(b)
    stacked = np.concatenate([b.numpy().ravel() for b in data])
    lo, hi = obs.clip_range()
    width = (stacked.max() - stacked.min()) / obs.bins
    assert abs(float(hi) - np.percentile(stacked, 99.0)) <= 2 * width
    assert abs(float(lo) - np.percentile(stacked, 1.0)) <= 2 * width


def test_mse_clip_is_near_the_numpy_brute_force_optimum():
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(20000, generator=g), torch.tensor([40.0, -35.0])])  # heavy outliers
    spec = QuantSpec(bits=4, symmetric=False, signed=False)
    obs = MSEObserver(spec)
    obs.observe(x)
    xs = x.double().numpy()
    errors = [np.mean((np_qdq(xs, xs.min() * r, xs.max() * r, spec) - xs) ** 2) for r in np.linspace(0.2, 1, 100)]
    lo, hi = obs.clip_range()
    chosen = np.mean((np_qdq(xs, float(lo), float(hi), spec) - xs) ** 2)
    assert chosen <= min(errors) * 1.05
    assert chosen < errors[-1] / 2  # much better than plain min-max


def np_kl_threshold(hist, levels, stride):
    best, best_kl = len(hist), np.inf
    for i in range(levels, len(hist) + 1, stride):
        p = hist[:i].astype(np.float64).copy()
        p[-1] += hist[i:].sum()
        chunks = np.array_split(np.arange(i), [int(np.ceil(k * i / levels)) for k in range(1, levels)])
        q = np.zeros(i)
        for c in chunks:
            nz = hist[c] > 0
            if nz.any():
                q[c[nz]] = hist[c].sum() / nz.sum()
        p, q = p / p.sum(), q / q.sum()
        q[(q == 0) & (p > 0)] = 1e-4
        q = q / q.sum()
        m = p > 0
        kl = float(np.sum(p[m] * np.log(p[m] / q[m])))
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def test_entropy_threshold_matches_numpy_reference():
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(50000, generator=g), torch.tensor([30.0])])
    obs = EntropyObserver(bins=512, stride=4)
    obs.observe(x)
    i = np_kl_threshold(obs.hist.numpy(), 128, 4)
    lo, hi = obs.clip_range()
    assert np.isclose(float(hi), obs.lo + i * obs.width) and float(lo) == -float(hi)
    assert float(hi) < 10  # clips the outlier


@pytest.mark.parametrize("name", ["minmax", "moving-average", "percentile", "mse", "entropy"])
def test_every_observer_rejects_nan_and_needs_data(name):
    obs = make_observer(name)
    with pytest.raises(DataError, match="saw no data"):
        obs.qparams()
    with pytest.raises(DataError, match="NaN or Inf"):
        obs.observe(torch.tensor([1.0, float("nan")]))
    obs.observe(torch.randn(100))
    scale, _ = obs.qparams()
    assert float(scale) > 0


def test_unknown_observer():
    with pytest.raises(InvalidConfigError, match="valid observers"):
        make_observer("kl")


def test_a_registered_observer_is_used_by_int8_static():
    import slimkit as sk
    from slimkit.quantization.observers import OBSERVERS, MinMaxObserver, register_observer

    @register_observer
    class HalfRange(MinMaxObserver):
        """Clips every range to half of min-max (so its effect on the scales is visible)."""

        name = "half-range"

        def clip_range(self):
            lo, hi = super().clip_range()
            return lo / 2, hi / 2

    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
        data = [(torch.randn(16, 8), torch.zeros(16, dtype=torch.long))]
        plain = sk.quantize(model, "int8-static", data=data, observer="minmax")
        halved = sk.quantize(model, "int8-static", data=data, observer="half-range")
        assert sk.get_record(halved).transforms[-1].config["observer"] == "half-range"
        scale = lambda m: [b for n, b in m.named_buffers() if "input_scale" in n or "act_scale" in n]  # noqa: E731
        assert scale(plain), "int8-static stores activation scales"
        for a, b in zip(scale(plain), scale(halved), strict=True):
            torch.testing.assert_close(b, a / 2, rtol=1e-2, atol=1e-8)
    finally:
        OBSERVERS.pop("half-range", None)
    with pytest.raises(InvalidConfigError, match="half-range"):
        sk.quantize(model, "int8-static", data=data, observer="half-range")


def test_register_observer_refuses_a_class_without_a_name():
    from slimkit.quantization.observers import Observer, register_observer

    with pytest.raises(InvalidConfigError, match="Observer subclass with a name"):
        register_observer(Observer)
    with pytest.raises(InvalidConfigError, match="Observer subclass"):
        register_observer(dict)
