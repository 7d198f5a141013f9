"""The digits-cnn example: shipped weights, data splits, tracing, training."""

import pytest
import torch
from safetensors.torch import load_file

from slimkit.core.data import TensorData
from slimkit.core.errors import SlimkitError
from slimkit.models import digits


@pytest.fixture(scope="module")
def splits():
    return digits.digits_data()


@pytest.fixture(scope="module")
def model():
    return digits.load_digits_cnn()


def _rows(data: TensorData) -> set[bytes]:
    return {row.numpy().tobytes() for row in data.x.flatten(1)}


def test_shipped_model_is_accurate(model, splits):
    assert not model.training
    assert digits.evaluate(model, splits.test) >= 0.98


def test_parameter_count_in_range(model):
    assert 150_000 <= sum(p.numel() for p in model.parameters()) <= 300_000


def test_split_sizes_shapes_and_types(splits):
    assert splits.metric == "accuracy"
    sizes = {name: len(getattr(splits, name).x) for name in ("train", "calibration", "test")}
    assert sizes == {"train": 1797 - 450 - 200, "calibration": 200, "test": 450}
    for data in (splits.train, splits.calibration, splits.test):
        assert data.x.shape[1:] == (1, 32, 32) and data.x.dtype == torch.float32
        assert data.y.dtype == torch.int64 and set(data.y.tolist()) == set(range(10))
    x, y = next(iter(splits.train))
    assert x.shape == (64, 1, 32, 32) and y.shape == (64,)


def test_splits_are_disjoint(splits):
    test, calibration, train = _rows(splits.test), _rows(splits.calibration), _rows(splits.train)
    assert len(test) == 450 and len(calibration) == 200 and len(train) == 1147
    assert not test & train and not test & calibration and not calibration & train


def test_data_is_normalized(splits):
    x = torch.cat([splits.train.x, splits.calibration.x, splits.test.x])
    assert abs(float(x.mean())) < 0.1 and 0.8 < float(x.std()) < 1.2


def test_data_is_deterministic(splits):
    again = digits.digits_data(batch_size=16)
    assert again.train.batch_size == 16
    for name in ("train", "calibration", "test"):
        assert torch.equal(getattr(again, name).x, getattr(splits, name).x)
        assert torch.equal(getattr(again, name).y, getattr(splits, name).y)


def test_example_inputs_are_seeded():
    (a,), (b,) = digits.example_inputs(), digits.example_inputs()
    assert a.shape == (1, 1, 32, 32) and torch.equal(a, b)


def test_traceable_by_fx_and_export(model):
    (x,) = digits.example_inputs()
    expected = model(x)
    traced = torch.fx.symbolic_trace(model)
    exported = torch.export.export(model, (x,)).module()
    torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-5)


def test_blocks_have_both_shortcut_kinds(model):
    blocks = [m for m in model.modules() if isinstance(m, digits.ResidualBlock)]
    kinds = {type(block.shortcut).__name__ for block in blocks}
    assert kinds == {"Identity", "Sequential"}


def test_missing_weights_raise_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(digits, "weights_path", lambda: tmp_path / "absent.safetensors")
    with pytest.raises(SlimkitError, match="python -m slimkit.models.digits"):
        digits.load_digits_cnn()
    assert isinstance(digits.load_digits_cnn(pretrained=False), digits.DigitsCNN)


def test_save_weights_roundtrip(model, tmp_path):
    path = digits.save_weights(model, tmp_path / "w" / "digits.safetensors")
    header = int.from_bytes(path.read_bytes()[:8], "little")
    assert path.read_bytes()[8:9] == b"{" and header < path.stat().st_size
    loaded = load_file(str(path))
    assert loaded.keys() == model.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_training_is_deterministic():
    a, b = digits.train_digits(epochs=1, seed=3), digits.train_digits(epochs=1, seed=3)
    assert not a.training
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name


@pytest.mark.slow
def test_entry_point_trains_an_accurate_model(tmp_path, splits, capsys):
    out = tmp_path / "digits_cnn.safetensors"
    digits.main(["--out", str(out)])
    assert "test accuracy" in capsys.readouterr().out
    model = digits.DigitsCNN()
    model.load_state_dict(load_file(str(out)))
    assert digits.evaluate(model, splits.test) >= 0.98
