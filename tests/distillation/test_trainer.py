"""The shared Trainer: learning, best-state, resume, NaN handling, early stop, options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from slimkit.core.data import TensorData
from slimkit.core.errors import DataError, InvalidConfigError
from slimkit.distillation import NonFiniteLossError, StopTraining, Trainer, TrainEvent, finetune
from slimkit.measure import evaluate


def _data(n: int = 192, seed: int = 0) -> tuple[TensorData, TensorData]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 64, 10, generator=gen)
    y = (x[:, :3] @ torch.tensor([1.0, -1.0, 0.5]) > 0).long() + (x[:, 3] > 0.8).long()
    return TensorData(x[:n], y[:n], 16), TensorData(x[n:], y[n:], 32)


class Net(nn.Module):
    """Dropout and batch norm, so RNG and buffers matter for exact resume."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _net(seed: int = 1) -> Net:
    torch.manual_seed(seed)
    return Net()


@pytest.mark.slow
def test_finetune_improves_accuracy_and_returns_same_model_in_eval_mode() -> None:
    train, test = _data()
    model = _net()
    before = evaluate(model, test, "accuracy")["accuracy"]
    out = finetune(model, train, epochs=4, eval_data=test, lr=1e-2)
    assert out is model
    assert not model.training
    assert evaluate(model, test, "accuracy")["accuracy"] >= before + 0.2


@pytest.mark.slow
def test_best_weights_are_returned_with_eval_data() -> None:
    train, test = _data()
    model = _net()
    trainer = Trainer(model, epochs=4, lr=1e-2)
    trainer.fit(train, test)
    scores = [row["accuracy"] for row in trainer.history]
    assert trainer.best_score == max(scores)
    assert evaluate(model, test, "accuracy")["accuracy"] == pytest.approx(max(scores))


class _InterruptAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == "step" and event.step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("stop_step", [12, 17])  # end of epoch 1 (12 batches) and mid-epoch 2
@pytest.mark.slow
def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path: Path, stop_step: int) -> None:
    train, test = _data()
    options = dict(epochs=3, lr=3e-3, weight_decay=0.01, warmup_steps=4, grad_clip=5.0, seed=7)
    reference = Trainer(_net(), **options)
    reference.fit(train, test)

    ckpt_dir = str(tmp_path / "ckpt")
    first = Trainer(_net(), checkpoint_dir=ckpt_dir, callbacks=[_InterruptAt(stop_step)], **options)
    with pytest.raises(KeyboardInterrupt):
        first.fit(train, test)
    assert (tmp_path / "ckpt" / "latest.json").is_file()

    fresh = _net(seed=99)  # different init: everything must come from the checkpoint
    resumed = Trainer(fresh, checkpoint_dir=ckpt_dir, resume=True, **options)
    resumed.fit(train, test)
    assert resumed.step == reference.step == 36
    for (name, a), b in zip(reference.model.state_dict().items(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=name)
    assert resumed.best_score == pytest.approx(reference.best_score)


def test_checkpoint_folder_holds_only_safetensors_and_json(tmp_path: Path) -> None:
    train, test = _data()
    finetune(_net(), train, epochs=2, eval_data=test, checkpoint_dir=str(tmp_path))
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "best.json",
        "best.safetensors",
        "latest.json",
        "step-24/model.safetensors",
        "step-24/optimizer.safetensors",
        "step-24/rng.safetensors",
        "step-24/trainer.json",
    ]
    assert json.loads((tmp_path / "step-24" / "trainer.json").read_text())["progress"]["epoch"] == 2


def test_nan_loss_stops_names_the_step_and_restores_best(tmp_path: Path) -> None:
    train, test = _data()
    model = _net()

    def poison(event: TrainEvent) -> None:
        if event.kind == "step" and event.step == 30:
            with torch.no_grad():
                model.head.weight.fill_(float("nan"))

    trainer = Trainer(model, epochs=4, lr=1e-2, checkpoint_dir=str(tmp_path), callbacks=[poison])
    with pytest.raises(NonFiniteLossError, match="step 31") as info:
        trainer.fit(train, test)
    assert info.value.step == 31
    assert torch.isfinite(model.head.weight).all()
    assert evaluate(model, test, "accuracy")["accuracy"] == pytest.approx(trainer.best_score)
    assert (tmp_path / "best.safetensors").is_file()


def test_early_stopping_with_patience() -> None:
    train, test = _data()
    calls = []
    trainer = Trainer(_net(), epochs=20, lr=1e-9, patience=2, callbacks=[calls.append])
    trainer.fit(train, test)
    assert len(trainer.history) == 3  # first eval sets the best; two more without improvement
    assert [e.kind for e in calls].count("epoch") == 3


def test_steps_option_and_stop_training_callback() -> None:
    train, _ = _data()
    trainer = Trainer(_net(), steps=30)
    trainer.fit(train)
    assert trainer.step == 30 and len(trainer.history) == 3  # 12 + 12 + 6

    def stop(event: TrainEvent) -> None:
        if event.step == 5:
            raise StopTraining

    trainer = Trainer(_net(), epochs=3, callbacks=[stop])
    trainer.fit(train)
    assert trainer.step == 5


def test_grad_clip_bounds_the_sgd_update() -> None:
    train, _ = _data()
    model = nn.Linear(10, 3)
    before = model.weight.detach().clone()
    finetune(model, train, steps=1, lr=0.5, optimizer="sgd", momentum=0.0, schedule="constant", grad_clip=1e-3)
    step = torch.cat([(model.weight - before).flatten()]).norm()
    assert 0 < float(step) <= 0.5 * 1e-3 + 1e-9


def test_seeded_runs_are_identical_and_seed_changes_them() -> None:
    train, _ = _data()
    a, b, c = (finetune(_net(), train, epochs=1, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_no_targets_and_no_teacher_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no targets and no teacher"):
        finetune(nn.Linear(4, 2), [torch.randn(8, 4)])


def test_resume_without_checkpoint_dir_and_bad_options() -> None:
    train, _ = _data()
    with pytest.raises(DataError, match="checkpoint_dir"):
        finetune(_net(), train, resume=True)
    with pytest.raises(InvalidConfigError, match="unknown option 'epochz'"):
        finetune(_net(), train, epochz=3)
    with pytest.raises(InvalidConfigError, match="schedule"):
        finetune(_net(), train, schedule="linear")


def test_resume_with_empty_folder_warns_and_trains(tmp_path: Path) -> None:
    train, _ = _data()
    with pytest.warns(UserWarning, match="no checkpoint"):
        finetune(_net(), train, resume=True, checkpoint_dir=str(tmp_path))


def test_amp_on_cpu_warns_and_trains_in_float32() -> None:
    train, _ = _data()
    with pytest.warns(UserWarning, match="CUDA"):
        model = finetune(_net(), train, amp=True)
    assert model.head.weight.dtype == torch.float32


def test_eval_without_targets_needs_a_teacher() -> None:
    train, _ = _data()
    with pytest.raises(DataError, match="eval_data has no targets"):
        finetune(_net(), train, eval_data=[torch.randn(4, 10)])


def _teacher_with_counter() -> tuple[nn.Module, list[int]]:
    teacher = _net(seed=7).eval()
    calls = [0]
    teacher.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return teacher, calls


@pytest.mark.parametrize("shuffle", [False, True])
def test_cached_teacher_runs_once_per_batch_and_changes_nothing(shuffle: bool) -> None:
    """Same weights as without the cache; the teacher runs once per distinct batch, and a
    cache that never hits (TensorData shuffled by sample) is dropped, not grown."""
    train, _ = _data()
    per_epoch, epochs = len(train), 3
    states, counts = [], []
    for cache in (False, True):
        teacher, calls = _teacher_with_counter()
        student = _net(seed=2)
        finetune(student, train, epochs=epochs, teacher=teacher, lr=1e-2, shuffle=shuffle, cache_teacher=cache)
        states.append(student.state_dict())
        counts.append(calls[0])
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name
    saved = counts[0] - counts[1]
    assert saved == (0 if shuffle else (epochs - 1) * per_epoch)


def test_batch_fingerprint_tells_inputs_apart() -> None:
    from slimkit.core.data import Batch

    x = torch.arange(12.0).reshape(3, 4)
    same = Batch((x.clone(),), target=torch.zeros(3))
    assert Batch((x,)).fingerprint() == same.fingerprint()  # the target is not an input
    changed = x.clone()
    changed[2, 3] += 1e-6
    others = [
        Batch((changed,)),
        Batch((x.double(),)),
        Batch((x.reshape(4, 3),)),
        Batch(kwargs={"x": x}),
        Batch((x, x)),
    ]
    prints = {Batch((x,)).fingerprint(), *(b.fingerprint() for b in others)}
    assert len(prints) == 1 + len(others)
