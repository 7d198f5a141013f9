import numpy as np
import pytest
import torch

from slimkit.core.data import DataSplits
from slimkit.core.errors import DataError, InvalidConfigError, UnsafeFileError, UnsupportedModelError
from slimkit.core.record import get_record
from slimkit.core.specs import load_data, load_model


def test_factory_spec_records_source():
    model = load_model("slimkit.models.testing:GroupedConvNet")
    assert type(model).__name__ == "GroupedConvNet"
    assert get_record(model).source == "slimkit.models.testing:GroupedConvNet"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("example:nope", r"unknown example 'nope'.*digits-cnn"),
        ("no/such/dir", "does not exist"),
        ("missing.pt2", "does not exist"),
        ("just words", "malformed model spec"),
        ("nosuchpkg.mod:build", "cannot import module 'nosuchpkg.mod'"),
        ("slimkit.models.testing:Nope", "has no attribute 'Nope'"),
        ("slimkit.models.testing:ZOO", "not callable"),
        ("slimkit.core.data:DataSplits", "callable without arguments"),
    ],
)
def test_bad_model_specs(spec, message):
    with pytest.raises(InvalidConfigError, match=message):
        load_model(spec)


def test_non_module_factory(tmp_path):
    with pytest.raises(InvalidConfigError, match="not a torch.nn.Module"):
        load_model("slimkit.core.record:Record")


def test_artifact_and_weights_only_files(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(UnsupportedModelError, match="deployed artifact"):
        load_model(tmp_path / "m.onnx")
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(InvalidConfigError, match="--weights"):
        load_model(tmp_path / "w.safetensors")
    with pytest.raises(InvalidConfigError, match="not a slimkit output folder"):
        load_model(tmp_path)


def test_npz_data(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    y = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    splits = load_data(str(tmp_path / "d.npz"), batch_size=4)
    assert isinstance(splits, DataSplits) and splits.metric == "accuracy"
    xb, yb = next(iter(splits.test))
    torch.testing.assert_close(xb, torch.from_numpy(x[:4]))
    assert yb.dtype == torch.int64


def test_npz_without_x_and_with_pickles(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.ones(3))
    with pytest.raises(DataError, match="needs 'x'"):
        load_data(str(tmp_path / "d.npz"))
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UnsafeFileError, match="pickled"):
        load_data(str(tmp_path / "p.npz"))
    (tmp_path / "t.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(str(tmp_path / "t.npz"))


def _pairs():
    return torch.ones(4, 2), torch.zeros(4)


def test_function_data_spec(monkeypatch):
    import sys
    import types

    mod = types.ModuleType("userdata_mod")
    mod.pairs = _pairs
    monkeypatch.setitem(sys.modules, "userdata_mod", mod)
    splits = load_data("userdata_mod:pairs")
    xb, yb = next(iter(splits.train))
    assert xb.shape == (4, 2) and yb.dtype == torch.int64


@pytest.mark.parametrize("spec", ["example:nope", "nothing here", "missing.npz", "a/b.csv"])
def test_bad_data_specs(spec):
    with pytest.raises(InvalidConfigError):
        load_data(spec)
