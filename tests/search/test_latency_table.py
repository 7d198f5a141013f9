"""Latency look-up tables: the fit, the per-layer prediction, the JSON file, search and CLI use."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import slimkit as sk
from slimkit.core.errors import InvalidConfigError, UnsafeFileError
from slimkit.pipeline.recipe import Target
from slimkit.search import latency_grid
from slimkit.search.latency_grid import GridPoint, GridRow, model_grid
from slimkit.search.latency_ops import op_features, walk
from slimkit.search.latency_table import LatencyTable, fit, predict_latency, table_for
from slimkit.search.runner import Evaluator

FEATURES = ("overhead", "conv2d/fp32:layers", "conv2d/fp32:mmacs", "conv2d/fp32:present", "elementwise:ops",
            "elementwise:kelements")  # fmt: skip
DESIGN = [  # full column rank: overhead from the add chains, per layer from chains of 1 and 3
    {"overhead": 1, "elementwise:ops": 1, "elementwise:kelements": 1},
    {"overhead": 1, "elementwise:ops": 8, "elementwise:kelements": 8},
    {"overhead": 1, "elementwise:ops": 1, "elementwise:kelements": 64},
    *({"overhead": 1, "conv2d/fp32:present": 1, "conv2d/fp32:layers": n, "conv2d/fp32:mmacs": m}
      for n, m in ((1, 0.3), (3, 7.0), (1, 9.0), (3, 1.0))),
]  # fmt: skip


def _dot(coefficients, features):
    return sum(coefficients[k] * v for k, v in features.items())


def _row(name, features, ms):
    return GridRow(name=name, features={k: float(v) for k, v in features.items()}, fast_ms=ms, p50_ms=ms, runs=30)


def _table(coefficients, runtime="onnxruntime", rows=()):
    return LatencyTable(
        runtime=runtime, threads=1, machine={"platform": "test"}, created="2026-01-01T00:00:00+00:00",
        coefficients_ms=coefficients, grid=list(rows), fit_mape=0.0,
    )  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=len(FEATURES), max_size=len(FEATURES)))
def test_fit_recovers_the_coefficients_of_exact_timings(values):
    known = dict(zip(FEATURES, values, strict=True))
    known["overhead"] += 0.01  # every latency positive
    rows = [_row(str(i), f, _dot(known, f)) for i, f in enumerate(DESIGN)]
    fitted = fit(rows)
    assert set(fitted) == set(FEATURES)
    for name in FEATURES:
        assert fitted[name] == pytest.approx(known[name], rel=1e-6, abs=1e-9)


def test_fit_refuses_no_rows():
    with pytest.raises(InvalidConfigError, match="at least one"):
        fit([])


class Small(nn.Module):
    """conv-bn-relu, depthwise conv-relu, a residual add and relu, pooling, a linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.relu(self.bn(self.conv(x)))
        z = torch.relu(self.dw(y))  # fused: a function on a layer's output
        z = torch.relu(z + y)  # an add, then an unfused activation
        return self.fc(self.drop(torch.flatten(self.pool(z), 1)))


COEFFICIENTS = {
    "overhead": 0.02, "conv2d/fp32:layers": 0.004, "conv2d/fp32:mmacs": 0.03, "conv2d/fp32:present": 0.01,
    "depthwise/fp32:layers": 0.003, "depthwise/fp32:mmacs": 0.2, "depthwise/fp32:present": 0.002,
    "linear/fp32:layers": 0.001, "linear/fp32:mmacs": 0.1, "linear/fp32:present": 0.005,
    "elementwise:ops": 0.002, "elementwise:kelements": 0.0005,
}  # fmt: skip
X = torch.randn(1, 3, 8, 8)


def test_prediction_sums_the_layers_as_counted_by_hand():
    model = Small().eval()
    ops = walk(model, (X,))
    assert [(op.name, op.kind) for op in ops] == [
        ("conv", "conv2d"), ("bn", "fused"), ("relu", "fused"), ("dw", "depthwise"), ("fn:relu", "fused"),
        ("fn:add", "elementwise"), ("fn:relu", "elementwise"), ("pool", "elementwise"), ("fc", "linear"),
    ]  # fmt: skip
    conv, dw, fc = 64 * 8 * 3 * 9, 64 * 8 * 9, 8 * 4  # output positions x channels x (cin / groups) x kernel
    assert [op.macs for op in ops if op.is_layer] == [conv, dw, fc]
    c = COEFFICIENTS
    by_hand = (
        c["overhead"]
        + c["conv2d/fp32:present"] + c["conv2d/fp32:layers"] + c["conv2d/fp32:mmacs"] * conv / 1e6
        + c["depthwise/fp32:present"] + c["depthwise/fp32:layers"] + c["depthwise/fp32:mmacs"] * dw / 1e6
        + c["linear/fp32:present"] + c["linear/fp32:layers"] + c["linear/fp32:mmacs"] * fc / 1e6
        + 3 * c["elementwise:ops"] + c["elementwise:kelements"] * 3 * 512 / 1e3  # add, relu, pool (reads 512)
    )  # fmt: skip
    prediction = predict_latency(model, _table(COEFFICIENTS), (X,))
    assert prediction.total_ms == pytest.approx(by_hand)
    assert sum(prediction.by_kind().values()) == pytest.approx(by_hand)
    assert prediction.approximated == []


def test_int8_layers_are_priced_as_int8_or_listed_as_the_nearest():
    model = Small().eval()
    quantized = sk.quantize(model, "int8-static", data=[torch.randn(4, 3, 8, 8) for _ in range(2)])
    layers = [op for op in walk(quantized, (X,)) if op.is_layer]
    assert {op.precision for op in layers} == {"int8"}
    prediction = predict_latency(quantized, _table(COEFFICIENTS), (X,))  # no int8 rows: priced as fp32
    assert len(prediction.approximated) == len(layers)
    assert all("int8 not in the table, priced as" in line for line in prediction.approximated)
    assert prediction.total_ms == pytest.approx(predict_latency(model, _table(COEFFICIENTS), (X,)).total_ms, rel=0.2)


def test_layers_of_unknown_kinds_are_counted_as_the_nearest_and_listed():
    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.Flatten(), nn.Linear(48, 2)).eval()
    only_conv = {k: v for k, v in COEFFICIENTS.items() if not k.startswith(("linear", "depthwise"))}
    prediction = predict_latency(model, _table(only_conv), torch.randn(1, 4, 8))
    assert [op.kind for op, _ in prediction.costs] == ["conv2d", "conv2d"]
    assert prediction.approximated == [
        "0: Conv1d counted as conv2d", "2: linear/fp32 not in the table, priced as conv2d/fp32"
    ]  # fmt: skip
    assert all(ms > 0 for _, ms in prediction.costs)


def test_convolutions_off_the_channel_blocks_pay_an_extra_cost_per_mac():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 12, 3), nn.Conv2d(12, 12, 3, groups=12)).eval()
    ops = walk(model, (X,))
    assert [(op.key, op.aligned) for op in ops] == [
        ("conv2d/fp32", True), ("conv2d/fp32", False), ("depthwise/fp32", False)
    ]  # fmt: skip
    extra = {**COEFFICIENTS, "conv2d/fp32:unaligned_mmacs": 0.5}
    base, slower = (predict_latency(model, _table(c), (X,)).total_ms for c in (COEFFICIENTS, extra))
    assert slower - base == pytest.approx(0.5 * ops[1].macs / 1e6)


class Products(nn.Module):
    """A projection, attention's two activation products, then a product with a weight of its own."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.weight = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        x = self.proj(x)
        scores = x @ x.transpose(-1, -2)
        context = torch.softmax(scores, dim=-1) @ x
        return torch.matmul(context, self.weight)


class Attention(nn.Module):
    def forward(self, q):
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)


def test_activation_products_are_matmuls_and_a_product_with_a_weight_is_linear():
    x = torch.randn(1, 2, 4, 8)  # 2 heads, 4 tokens, width 8
    ops = [op for op in walk(Products().eval(), (x,)) if op.is_layer]
    assert [(op.name, op.kind) for op in ops] == [("proj", "linear"), ("fn:matmul", "matmul"),
                                                  ("fn:matmul", "matmul"), ("fn:matmul", "linear")]  # fmt: skip
    assert [op.macs for op in ops] == [2 * 4 * 8 * 8, 2 * 4 * 8 * 4, 2 * 4 * 4 * 8, 2 * 4 * 8 * 8]
    assert [op.weights for op in ops] == [64, 0, 0, 64]  # a linear reads its 8x8 weights once for 8 rows
    assert op_features(ops[0])["linear/fp32:mweights"] == pytest.approx(64 / 1e6)
    (op,) = walk(Attention().eval(), (x,))
    assert op.kind == "matmul" and op.macs == 2 * (2 * 4 * 8 * 4)


@pytest.mark.parametrize("precision", ["int8-dynamic", "weight-only"])
def test_grid_linears_are_built_in_each_measured_precision(precision):
    model, x = latency_grid._prepared(GridPoint("linear", 128, 64, repeat=2, precision=precision))
    ops = walk(model, (x,))
    assert [(op.key, op.macs) for op in ops] == [(f"linear/{precision}", 128 * 64), (f"linear/{precision}", 64 * 64)]
    tokens, x16 = latency_grid._prepared(GridPoint("linear", 128, 64, size=16, precision=precision))
    assert x16.shape == (1, 16, 128)
    assert [(op.macs, op.weights) for op in walk(tokens, (x16,))] == [(16 * 128 * 64, 128 * 64)]
    with_class = {**COEFFICIENTS, f"linear/{precision}:layers": 0.002, f"linear/{precision}:mmacs": 0.05,
                  f"linear/{precision}:present": 0.001}  # fmt: skip
    prediction = predict_latency(model, _table(with_class), (x,))
    assert prediction.approximated == []
    by_hand = 0.02 + 0.001 + 2 * 0.002 + 0.05 * (128 * 64 + 64 * 64) / 1e6
    assert prediction.total_ms == pytest.approx(by_hand)


def test_grid_product_chains_alternate_scores_and_context():
    point = GridPoint("matmul", 16, 32, size=4, repeat=3)
    model, x = point.build()
    assert x.shape == (1, 4, 32, 16)
    ops = walk(model, (x,))
    assert [(op.key, op.macs) for op in ops] == [("matmul/fp32", 3 * 4 * 32 * 16 * 32)]  # one unit: the chain
    assert model(x).shape == (1, 4, 32, 32)  # scores, context, scores
    assert point.name == "matmul/fp32 4 heads x 32 tokens x 16 x3"
    assert {p.kind for p in latency_grid.QUICK_GRID} >= {"matmul", "linear"}
    assert {p.precision for p in latency_grid.DEFAULT_GRID if p.kind == "linear"} == {
        "fp32", "int8", "int8-dynamic", "weight-only"
    }  # fmt: skip


def test_the_model_seeds_the_grid_with_its_layers_at_full_and_half_width():
    points = model_grid(Small().eval(), (X,))
    assert GridPoint("conv2d", 3, 8, 3, 8, 1) in points and GridPoint("conv2d", 3, 8, 3, 8, 1, 1, "int8") in points
    assert GridPoint("depthwise", 8, 8, 3, 8, 1, repeat=2) in points  # 8 channels: half is still 8 (multiple of 8)
    assert GridPoint("linear", 8, 4) in points
    assert any(p.kind == "elementwise" for p in points)


@pytest.fixture
def saved(tmp_path):
    rows = [_row(str(i), f, _dot(dict.fromkeys(FEATURES, 0.01), f)) for i, f in enumerate(DESIGN)]
    table = LatencyTable.from_rows(rows, "onnxruntime", 1)
    return table, table.save(tmp_path / "lut" / "table.json")


def test_the_json_file_round_trips(saved):
    table, path = saved
    assert LatencyTable.load(path) == table
    data = json.loads(path.read_text())
    assert data["format"] == "slimkit-latency-table" and data["version"] == 1 and len(data["grid"]) == len(DESIGN)
    assert data["machine"]["processor"] and data["runtime"] == "onnxruntime" and data["fit_mape"] < 1e-6


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda text: text[: len(text) // 2], UnsafeFileError, "not valid JSON"),
        (lambda text: "\x00\x01garbage", UnsafeFileError, "corrupt or truncated"),
        (lambda text: text.replace('"version": 1', '"version": 2'), InvalidConfigError, "version 2 latency table"),
        (lambda text: "[1, 2]", InvalidConfigError, "not a slimkit latency table"),
        (lambda text: text.replace('"threads"', '"thread"'), InvalidConfigError, "threads"),
    ],
)
def test_a_bad_file_gives_one_clear_error(saved, edit, error, message):
    _, path = saved
    path.write_text(edit(path.read_text()))
    with pytest.raises(error, match=message):
        LatencyTable.load(path)


def test_a_missing_file_or_a_folder_is_refused(tmp_path):
    with pytest.raises(InvalidConfigError, match="does not exist"):
        LatencyTable.load(tmp_path / "none.json")
    with pytest.raises(InvalidConfigError, match="is a folder"):
        _table(COEFFICIENTS).save(tmp_path)


def test_a_table_for_another_runtime_is_refused(small, saved):
    _, path = saved
    with pytest.raises(InvalidConfigError, match="measured on onnxruntime, but the search targets torch"):
        table_for(path, "torch")
    model, data = small
    with pytest.raises(InvalidConfigError, match="measured on torch"):
        sk.search(model, data, target="onnxruntime", trials=1, latency_table=_table(COEFFICIENTS, runtime="torch"))


@pytest.mark.slow
def test_the_evaluator_reports_the_tables_prediction(small, tmp_path):
    model, data = small
    table = _table(COEFFICIENTS, runtime="torch")
    evaluator = Evaluator(model, Target(runtime="torch"), data, data.calibration, None, "accuracy", True)
    measured = evaluator.measure(model, data, tmp_path, None)
    evaluator.latency_table = table
    predicted = evaluator.measure(model, data, tmp_path, None)
    assert predicted.latency_ms == pytest.approx(table.predict_ms(model, None, data))
    assert (predicted.size_bytes, predicted.metric) == (measured.size_bytes, measured.metric)


@pytest.mark.slow
def test_cli_bench_lut_writes_a_table(tmp_path, monkeypatch):
    from slimkit.cli import main

    tiny = (GridPoint("conv2d", 4, 8, 3, 8), GridPoint("linear", 16, 16, repeat=2), GridPoint("elementwise", 4, size=8))
    monkeypatch.setattr(latency_grid, "QUICK_GRID", tiny)
    path = tmp_path / "device" / "lut.json"
    with pytest.raises(SystemExit) as done:
        main(["bench", "--lut", str(path), "--quick", "--quiet"])
    assert done.value.code in (0, None)
    table = LatencyTable.load(path)
    assert (
        table.runtime == "onnxruntime" and table.threads == 1 and [r.name for r in table.grid] == [p.name for p in tiny]
    )
    assert all(0 < r.fast_ms <= r.p50_ms for r in table.grid) and set(table.layer_classes) == {
        "conv2d/fp32",
        "linear/fp32",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "--lut", "{tmp}"], "is a folder"),
        (["bench", "--lut", "{tmp}/t.json", "--runtime", "torch,onnxruntime"], "one runtime"),
        (["bench", "--lut", "{tmp}/t.json", "--batch-sizes", "1,8"], "batch 1"),
        (["bench"], "needs a MODEL"),
        (["search", "example:digits-cnn", "--data", "example:digits", "--latency-table", "{tmp}/none.json",
          "--out", "{tmp}/found"], "does not exist"),
    ],
)  # fmt: skip
def test_cli_bad_lut_use_exits_2(tmp_path, capsys, args, message):
    from slimkit.cli import main

    with pytest.raises(SystemExit) as done:
        main([arg.format(tmp=tmp_path) for arg in args])
    assert done.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "found").exists()


@pytest.mark.slow
def test_search_with_a_table_reports_predicted_latency(digits, tmp_path):
    from slimkit.search import SearchSpace

    model, data = digits
    table = LatencyTable.from_rows([_row(str(i), f, _dot(dict.fromkeys(FEATURES, 0.01), f)) for i, f in
                                    enumerate(DESIGN)], "onnxruntime", 1)  # fmt: skip
    space = SearchSpace(prune_ratios=(0.0, 0.5), svd_fractions=(0.0,), quantize=("none", "int8-static"))
    result = sk.search(model, data, target="onnxruntime", trials=2, space=space, latency_table=table)
    assert result.latency.startswith("predicted by the latency table")
    assert result.original.latency_ms == pytest.approx(table.predict_ms(model, None, data))
    assert result.to_dict()["latency"] == result.latency


def test_the_walk_runs_in_eval_mode_and_leaves_the_model_as_it_was():
    model = Small().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ops = walk(model, (X,))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BatchNorm statistics untouched
    assert [op.kind for op in ops][1:3] == ["fused", "fused"]


def test_a_function_without_tensor_inputs_is_elementwise_work():
    class Fresh(nn.Module):  # a child module, so its own forward is not one unit
        def __init__(self):
            super().__init__()
            self.same = nn.Identity()

        def forward(self, x):
            return self.same(x) + torch.ones(1, 8)

    ops = walk(Fresh(), torch.randn(1, 8))
    assert [(op.name, op.kind, op.elements) for op in ops] == [
        ("fn:ones", "elementwise", 8),
        ("fn:add", "elementwise", 8),
    ]


def test_grid_points_the_runtime_refuses_are_left_out_and_listed(monkeypatch):
    from slimkit.core.errors import UnsupportedModelError
    from slimkit.search.latency_table import measure_table

    def refusing(model, inputs, runtime, folder, threads):
        if any(type(m).__name__ == "QDQLayer" for m in model.modules()):
            raise UnsupportedModelError("no int8 on this runtime")
        return real(model, inputs, runtime, folder, threads)

    real = latency_grid.deploy
    monkeypatch.setattr(latency_grid, "deploy", refusing)
    grid = [GridPoint("conv2d", 4, 8, 3, 8), GridPoint("conv2d", 8, 8, 3, 8, precision="int8"),
            GridPoint("elementwise", 4, size=8)]  # fmt: skip
    table = measure_table("torch", 1, grid=grid, budget_s=0.01)
    assert table.skipped == ["conv2d/int8 8->8 k3 s1 @8 x1: no int8 on this runtime"]
    assert table.layer_classes == ("conv2d/fp32",) and len(table.grid) == 2
