"""`sk.sensitivity` on the bundled digits CNN: per-layer rows, the cache, bad inputs."""

import copy
import importlib

import pytest
import torch

import slimkit as sk
from slimkit.core.errors import InvalidConfigError
from slimkit.search import Cache, sensitivity

sensitivity_module = importlib.import_module("slimkit.search.sensitivity")


def test_exported_from_slimkit():
    assert sk.sensitivity is sensitivity
    assert sk.search.sensitivity is sensitivity


def test_fewer_bits_hurt_more_and_save_more(fc_table):
    table = fc_table
    rows = {r.setting.label: r for r in table.rows}
    assert set(rows) == {"int2", "int4", "int8"}
    assert {r.setting.unit for r in table.rows} == {"fc"}  # the only Linear; convs are pruned
    assert rows["int2"].drop > rows["int4"].drop > rows["int8"].drop >= -1e-9
    assert rows["int2"].bytes_saved > rows["int4"].bytes_saved > rows["int8"].bytes_saved > 0
    assert table.metric == "cosine" and table.baseline == pytest.approx(1.0, abs=1e-6)


def test_pruning_rows_per_group(small):
    model, data = small
    table = sensitivity(model, data, ("prune",), ratios=(0.5,), include="stages.2.0.*", max_batches=1)
    assert [r.setting.unit for r in table.rows] == ["stages.2.0.conv1", "stages.2.0.conv2+stages.2.0.shortcut.0"]
    assert all(r.bytes_saved > 0 for r in table.rows)
    assert table.metric == "accuracy"  # the data's own metric, on the calibration split


def test_rerun_from_the_cache_evaluates_nothing(small, tmp_path, monkeypatch):
    model, data = small
    calls = []
    real = sensitivity_module.evaluate
    monkeypatch.setattr(sensitivity_module, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    options = dict(techniques=("quantize",), bits=(8,), max_batches=1, cache=tmp_path / "cache")
    first = sensitivity(model, data, **options)
    assert first.measured == len(calls) == 2  # the baseline and one setting
    again = sensitivity(model, data, **options)  # a fresh Cache object on the same folder
    assert again.measured == 0 and len(calls) == 2
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in first.rows]
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.fc.bias += 1e-3
    assert sensitivity(changed, data, **options).measured == 2  # other weights: measured again


def test_memory_cache_object_is_shared(small):
    model, data = small
    cache = Cache()
    sensitivity(model, data, ("quantize",), bits=(4,), max_batches=1, cache=cache)
    assert len(cache) == 2
    assert sensitivity(model, data, ("quantize",), bits=(4,), max_batches=1, cache=cache).measured == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"techniques": ("distill",)}, "techniques"),
        ({"bits": (1,)}, "bits"),
        ({"ratios": (1.0,)}, "ratios"),
        ({"include": "nothing.matches.*"}, "no layer to score"),
        ({"max_batches": 0}, "max_batches"),
    ],
)
def test_bad_inputs_raise_one_clear_error(small, options, message):
    model, data = small
    with pytest.raises(InvalidConfigError, match=message):
        sensitivity(model, data, **{"techniques": ("quantize",), **options})


def test_cache_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidConfigError, match="is a file"):
        Cache(tmp_path / "f")


def test_svd_rows_share_the_layer_slot_with_bits(small):
    model, data = small
    table = sensitivity(model, data, ("quantize", "decompose"), metric="fidelity", bits=(4,), ranks=(0.25, 0.5),
                        group_size=None, max_batches=1)  # fmt: skip
    assert [r.setting.label for r in table.rows] == ["int4", "svd 25%", "svd 50%"]
    assert list(table.slots()) == ["layer fc"]  # a plan takes at most one of them for fc
    svd = table.row("decompose:svd(rank=0.25)@fc")
    assert svd.drop > table.row("decompose:svd(rank=0.5)@fc").drop
    assert svd.macs_saved > 0 and svd.bytes_saved > 0
