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


def _rows(data):
    return torch.cat([b[0] for b in data])


def test_npz_data_is_split_80_10_10_seeded_and_disjoint(tmp_path):
    x = np.arange(200, dtype=np.float32).reshape(50, 4)
    y = np.arange(50) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    splits = load_data(str(tmp_path / "d.npz"), batch_size=4)
    assert isinstance(splits, DataSplits) and splits.metric == "accuracy"
    train, cal, test = (_rows(s)[:, 0].tolist() for s in (splits.train, splits.calibration, splits.test))
    assert (len(train), len(cal), len(test)) == (40, 5, 5)
    assert sorted(train + cal + test) == sorted(x[:, 0].tolist())  # disjoint, nothing lost
    again = load_data(str(tmp_path / "d.npz"), batch_size=4)
    assert _rows(again.test)[:, 0].tolist() == test  # seeded: the same split every run
    xb, yb = next(iter(splits.test))
    assert yb.dtype == torch.int64 and torch.equal(yb, (xb[:, 0] / 4).long() % 3)  # labels follow their rows


def test_npz_explicit_splits_are_used_as_given(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        x_train=np.zeros((6, 2), np.float32), y_train=np.zeros(6, np.int64),
        x_test=np.ones((3, 2), np.float32), y_test=np.ones(3, np.int64),
    )  # fmt: skip
    splits = load_data(str(tmp_path / "d.npz"))
    assert len(_rows(splits.train)) == 6 and len(_rows(splits.test)) == 3
    assert bool((_rows(splits.test) == 1).all())


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (np.array([0.5, 1, 2, 0]), "non-integer"),
        (np.zeros((4, 2), np.int64), "1-D"),
        (np.array([0, -1, 1, 2]), "negative"),
        (np.array(["a", "b", "c", "d"]), "numeric"),
    ],
)
def test_npz_bad_labels_are_refused(tmp_path, y, message):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=y)
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "d.npz"))


def test_npz_header_declaring_a_huge_array_is_refused_before_allocation(tmp_path):
    import zipfile

    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 4), np.float32))
    header["shape"] = (10**12, 4)
    member = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(b"\0" * 32)
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("x.npy", member.getvalue())
    with pytest.raises(UnsafeFileError, match="more than the file holds"):
        load_data(str(tmp_path / "d.npz"))


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
    assert xb.shape == (2, 2) and yb.dtype == torch.int64  # (x, y) pairs are split like .npz: 2/1/1


@pytest.mark.parametrize("spec", ["example:nope", "nothing here", "missing.npz", "a/b.csv"])
def test_bad_data_specs(spec):
    with pytest.raises(InvalidConfigError):
        load_data(spec)
