import itertools
import math

import pytest
from matplotlib.text import Annotation

from slimkit.report import plots
from slimkit.report.units import SizeUnit


@pytest.mark.parametrize(
    ("sizes", "name", "shown"),
    [
        ([24_817, 5_722], "KiB", ["24.24 KiB", "5.59 KiB"]),
        ([24_817, 25_000], "KiB", ["24.2 KiB", "24.4 KiB"]),
        ([3_000_000, 900_000], "MiB", ["2.861 MiB", "0.858 MiB"]),
        ([900, 120], "B", ["900 B", "120 B"]),
        ([2_000_000_000, None], "GiB", ["1.86 GiB", "n/a"]),
    ],
)
def test_one_size_unit_per_report(sizes, name, shown):
    unit = SizeUnit.for_sizes(sizes)
    assert unit.name == name and [unit.text(s) for s in sizes] == shown


def test_padded_range_does_not_start_at_zero():
    lo, hi = plots.padded_range([0.981, 0.975, 0.978])
    assert 0.97 < lo < 0.975 and 0.981 < hi < 0.99
    lo, hi = plots.padded_range([0.5, 0.5])  # flat: a small window, not a zero-height axis
    assert lo < 0.5 < hi and hi - lo < 0.1


def test_metric_axis_spans_the_kept_stages():
    values = [0.981, 0.978, 0.975, 0.12]
    fig = plots.metric_dots(
        ["a", "b", "c", "d"], values, kept=[True, True, True, False], metric="accuracy", reference=0.981, bound=0.971
    )
    lo, hi = fig.axes[0].get_xlim()
    assert 0.95 < lo < 0.971 and 0.981 < hi < 1.0  # the budget line and every kept dot in view, 0 is not
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0.1200 (off scale)" in texts  # the far discarded value is still given
    fig = plots.metric_vs_size(
        [24.2, 10.1, 7.4, 5.6], values, ["a", "b", "c", "d"], kept=[1, 1, 1, 0], metric="acc", unit="KiB"
    )
    lo, hi = fig.axes[0].get_ylim()
    assert 0.9 < lo < 0.975 and 0.981 < hi < 1.05


def _no_overlaps(fig):
    ax = fig.axes[0]
    labels = [t for t in ax.texts if isinstance(t, Annotation)]
    boxes = [plots.text_extent(t) for t in labels]
    frame = ax.get_window_extent()
    for box in boxes:
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1 and frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1
    for (a, la), (b, lb) in itertools.combinations(zip(boxes, labels, strict=True), 2):
        assert not a.overlaps(b), f"labels overlap: {la.get_text()!r} and {lb.get_text()!r}"
    return [t.get_text() for t in labels]


def test_scatter_labels_do_not_overlap():
    sizes = [24.2, 10.1, 10.1, 9.8, 9.9, 7.4, 7.5, 5.6]
    metrics = [0.9811, 0.9702, 0.9702, 0.9705, 0.9699, 0.9690, 0.9688, 0.9500]
    labels = [
        "original",
        "1 prune:channels",
        "2 finetune",
        "3 fuse",
        "4 decompose:svd",
        "5 quantize:fp16",
        "6 quantize:int8-static",
        "7 prune:channels",
    ]
    fig = plots.metric_vs_size(sizes, metrics, labels, kept=[True] * 7 + [False], metric="accuracy", unit="KiB")
    texts = _no_overlaps(fig)
    assert "1 prune:channels, 2 finetune" in texts  # one spot, one label
    assert len(texts) == 7


def test_scatter_labels_stay_apart_when_crowded():
    n = 12
    sizes = [10 + 0.05 * i for i in range(n)]
    metrics = [0.9 + 0.0001 * math.sin(i) for i in range(n)]
    fig = plots.metric_vs_size(sizes, metrics, [f"{i} stage" for i in range(n)], metric="accuracy", unit="KiB")
    assert len(_no_overlaps(fig)) == n
