import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from slimkit.core.data import (
    Batch,
    TensorData,
    batch_from_inputs,
    iter_batches,
    primary_output,
    resize_batch,
    run_model,
    to_batch,
)
from slimkit.core.errors import DataError


def test_batch_forms():
    x, y = torch.ones(2, 3), torch.tensor([0, 1])
    assert to_batch(x).args[0] is x and to_batch(x).target is None
    b = to_batch((x, y))
    assert b.args == (x,) and b.target is y
    b = to_batch(((x, x), y))
    assert len(b.args) == 2
    b = to_batch({"input_ids": x, "labels": y})
    assert set(b.kwargs) == {"input_ids"} and b.target is y
    b = to_batch(({"input_ids": x}, y))
    assert b.kwargs["input_ids"] is x and b.target is y
    with pytest.raises(DataError, match="cannot read a batch of type str"):
        to_batch("abc")


def test_dataloader_and_tensordata_agree():
    x, y = torch.randn(10, 3), torch.arange(10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    from_loader = [b.args[0] for b in iter_batches(loader)]
    from_tensordata = [b.args[0] for b in iter_batches(TensorData(x, y, batch_size=4))]
    assert len(from_loader) == len(from_tensordata) == 3 == len(TensorData(x, y, 4))
    for a, b in zip(from_loader, from_tensordata, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bad", [[], None, torch.ones(3), "file.npz", 3])
def test_bad_data_is_a_data_error(bad):
    with pytest.raises(DataError):
        list(iter_batches(bad))


def test_non_finite_data_is_rejected():
    with pytest.raises(DataError, match="NaN or Inf"):
        list(iter_batches([torch.tensor([[1.0, float("nan")]])]))
    with pytest.raises(DataError, match="NaN or Inf"):
        list(iter_batches([(torch.tensor([[float("inf")]]), torch.tensor([0]))]))


def test_tensordata_validation():
    with pytest.raises(DataError, match="empty"):
        TensorData(torch.empty(0, 3))
    with pytest.raises(DataError, match="must match"):
        TensorData(torch.ones(3, 2), torch.ones(2))


def test_limit_and_device():
    batches = list(iter_batches([torch.ones(1)] * 5, device="cpu", limit=2))
    assert len(batches) == 2


def test_run_model_wrong_shape_is_one_clear_error():
    model = nn.Linear(4, 2)
    with pytest.raises(DataError, match=r"forward failed on inputs of shape \(3, 5\)"):
        run_model(model, Batch(args=(torch.ones(3, 5),)))


def test_primary_output():
    t = torch.ones(2)
    assert primary_output(t) is t
    assert primary_output((t, torch.zeros(1))) is t
    assert primary_output({"logits": t}) is t

    class Out:
        last_hidden_state = t

    assert primary_output(Out()) is t
    with pytest.raises(DataError):
        primary_output(3)


def test_batch_from_inputs():
    x = torch.ones(1, 2)
    assert batch_from_inputs(x).args == (x,)
    assert batch_from_inputs((x, x)).args == (x, x)
    assert batch_from_inputs({"a": x}).kwargs == {"a": x}
    with pytest.raises(DataError):
        batch_from_inputs(3)
    for empty in ((), [], {}):
        with pytest.raises(DataError, match="empty"):
            batch_from_inputs(empty)


@given(n=st.integers(1, 5), size=st.integers(1, 40))
def test_resize_batch_property(n, size):
    x = torch.arange(n * 3).reshape(n, 3)
    out = resize_batch(Batch(args=(x,), kwargs={"m": x}), size)
    assert out.args[0].shape == (size, 3) and out.kwargs["m"].shape == (size, 3)
    # rows are the original rows, cycled
    torch.testing.assert_close(out.args[0], x[torch.arange(size) % n])


def test_split_is_seeded_disjoint_and_complete():
    from slimkit.core.data import DataSplits

    x, y = torch.arange(30.0).unsqueeze(1), torch.arange(30) % 3
    splits = DataSplits.split(x, y, batch_size=100)
    parts = [next(iter(s)) for s in (splits.train, splits.calibration, splits.test)]
    sizes = [len(p[0]) for p in parts]
    assert sizes == [24, 3, 3]
    rows = torch.cat([p[0] for p in parts]).squeeze(1).sort().values
    assert torch.equal(rows, x.squeeze(1))
    assert all(torch.equal(p[1], p[0].squeeze(1).long() % 3) for p in parts)
    again = DataSplits.split(x, y, batch_size=100)
    assert torch.equal(next(iter(again.test))[0], parts[2][0])


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (torch.tensor([0, 10]), r"labels range 0\.\.10 but the model outputs 10 classes"),
        (torch.tensor([-1, 2]), r"labels range -1\.\.2"),
        (torch.tensor([0.0, 1.0]), "integer class indices"),
        (torch.zeros(2, 3, dtype=torch.long), "1-D"),
    ],
)
def test_check_targets_refuses_labels_that_do_not_fit(target, message):
    from slimkit.core.data import check_targets

    with pytest.raises(DataError, match=message):
        check_targets(torch.zeros(2, 10), target)
    check_targets(torch.zeros(2, 10), torch.tensor([0, 9]))  # in range: fine
