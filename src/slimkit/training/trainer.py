"""The `Trainer` shared by every fine-tuning step (distillation, QAT, recovery after pruning)."""

from __future__ import annotations

import contextlib
import math
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.data import Batch, iter_batches
from slimkit.core.device import resolve_device
from slimkit.core.errors import DataError, SlimkitError
from slimkit.measure.metrics import evaluate
from slimkit.training import checkpoint as ckpt
from slimkit.training import distributed as ddp
from slimkit.training.config import TrainConfig
from slimkit.training.objective import TaskObjective, teacher_objectives
from slimkit.training.order import count_batches, epoch_batches, rank_batches
from slimkit.training.progress import TrainProgress
from slimkit.training.schedule import build_optimizer, lr_factor, set_lr


class NonFiniteLossError(SlimkitError):
    """The loss became NaN/Inf; the model was restored to the best (or last good) weights.

    Attributes:
        step: the optimizer step (1-based) whose loss was not finite.
    """

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class StopTraining(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raise from a callback to end training cleanly after the current step."""


@dataclass
class _Run:
    """The objects of one `Trainer.fit` call."""

    data: Iterable[Any]
    eval_data: Iterable[Any] | None
    objective: nn.Module
    engine: nn.Module
    teacher: Any
    optimizer: torch.optim.Optimizer
    scaler: Any
    autocast: Callable[[], Any]
    total: int
    per_epoch: int
    bar: TrainProgress | None = None


@dataclass
class TrainEvent:
    """What callbacks receive after every step (``kind="step"``) and evaluation (``"epoch"``)."""

    kind: str
    epoch: int
    step: int
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)


Callback = Callable[[TrainEvent], None]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Trains ``model`` in place on a task loss, or distills ``teacher`` into it.

    Args:
        model: the student; trained in place and returned by `fit` (same object).
        config: a `TrainConfig`; ``**options`` override its fields.
        teacher: frozen model to distill from (never trained; its train/eval flags are restored).
        distill: a distillation config (`KD`, `Hints`, ...) or method name; ``"kd"`` when a
            teacher is given without one.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:N"``.
        callbacks: called with a `TrainEvent` after each step and evaluation; may raise
            `StopTraining` (or ``KeyboardInterrupt``, which checkpoints first).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        *,
        teacher: nn.Module | None = None,
        distill: str | Config | dict[str, Any] | None = None,
        device: str | torch.device = "auto",
        callbacks: Sequence[Callback] = (),
        **options: Any,
    ):
        base = config or TrainConfig()
        self.config: TrainConfig = base.with_options(**options) if options else base  # type: ignore[assignment]
        self.model, self.teacher = model, teacher
        self.distill = teacher_objectives().config(distill) if teacher is not None else None
        self.callbacks = list(callbacks)
        self.dist = ddp.from_env(resolve_device(device))
        self.device = ddp.local_device(resolve_device(device), self.dist)
        self.history: list[dict[str, float]] = []
        self.best_score: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.step = self.epoch = 0

    # ------------------------------------------------------------------ public

    def fit(self, data: Iterable[Any], eval_data: Iterable[Any] | None = None) -> nn.Module:
        """Train, evaluating on ``eval_data`` after every epoch.

        Returns:
            The model (same object) in eval mode, holding the best weights by the eval
            metric when ``eval_data`` is given, else the final ones.

        Raises:
            DataError: unusable data (empty, no targets and no teacher, ...).
            NonFiniteLossError: the loss became NaN/Inf (the model holds the best weights).
        """
        cfg = self.config
        first = next(iter_batches(data, self.device, limit=1))
        seed_everything(cfg.seed)
        self.model.to(self.device)
        objective, teacher = self._objective()
        try:
            objective.prepare(first, teacher)
            objective.to(self.device)
            self.metric = self._metric(eval_data, teacher)
            per_epoch = ddp.shard_count(count_batches(data), self.dist)
            if per_epoch == 0:
                raise DataError(f"the data has fewer batches than the {self.dist.world} training processes")
            total = cfg.steps or cfg.epochs * per_epoch
            if teacher is not None and cfg.cache_teacher:
                teacher.cache(per_epoch)
            optimizer = build_optimizer(objective.parameters(), cfg)
            skip, bad_evals = self._resume(objective, optimizer)
            self.good_state = ckpt.cpu_state(self.model)
            engine = ddp.wrap(objective, self.device, self.dist, cfg.find_unused_parameters)
            run = _Run(data, eval_data, objective, engine, teacher, optimizer, *self._amp(), total, per_epoch)
            with TrainProgress(total, not cfg.quiet and self.dist.is_main) as run.bar:
                self._loop(run, skip, bad_evals)
        finally:
            objective.close()
            if teacher is not None:
                teacher.close()
                self._teacher_flags()
        if eval_data is not None and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.model.eval()

    # ------------------------------------------------------------------ the loop

    def _loop(self, run: _Run, skip: int, bad_evals: int) -> None:
        cfg, stop = self.config, False
        try:
            while self.step < run.total and not stop:
                run.objective.train()
                order = epoch_batches(run.data, self.epoch, cfg.seed, cfg.shuffle)
                losses = []
                for item in rank_batches(order, self.dist.rank, self.dist.world, run.per_epoch, skip):
                    batch = next(iter_batches([item], self.device))
                    set_lr(run.optimizer, cfg.lr * lr_factor(self.step, run.total, cfg))
                    loss = self._train_step(run, batch)
                    if not math.isfinite(loss):
                        self._diverged(loss)
                    self.step, skip = self.step + 1, skip + 1
                    losses.append(loss)
                    run.bar.advance(self.step, loss, self.epoch)
                    stop = self._notify(TrainEvent("step", self.epoch, self.step, loss))
                    if stop or self.step >= run.total:
                        break
                metrics, improved = self._end_epoch(run, losses)
                bad_evals = 0 if improved else bad_evals + 1
                self.epoch, skip = self.epoch + 1, 0
                self._checkpoint(run, skip, bad_evals)
                stop = self._notify(TrainEvent("epoch", self.epoch, self.step, metrics["loss"], metrics)) or stop
                if cfg.patience and bad_evals >= cfg.patience:
                    run.bar.log(f"early stop: no improvement in {bad_evals} evaluations")
                    break
        except KeyboardInterrupt:
            self._checkpoint(run, skip, bad_evals)
            raise

    def _train_step(self, run: _Run, batch: Batch) -> float:
        run.optimizer.zero_grad(set_to_none=True)
        with run.autocast():
            teacher_out = run.teacher(batch) if run.teacher is not None else None
            loss, _ = run.engine(batch, teacher_out)
        if ddp.any_flag(not bool(torch.isfinite(loss)), self.device, self.dist):
            return math.nan if torch.isfinite(loss) else float(loss.detach())
        run.scaler.scale(loss).backward()
        if self.config.grad_clip:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.engine.parameters(), self.config.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        return float(loss.detach())

    def _end_epoch(self, run: _Run, losses: list[float]) -> tuple[dict[str, float], bool]:
        loss = float(np.mean(losses)) if losses else math.nan
        row = {"epoch": float(self.epoch + 1), "step": float(self.step), "loss": loss}
        self.history.append(row)
        if run.eval_data is None:
            self.good_state = ckpt.cpu_state(self.model)
            return row, True
        reference = run.teacher.model if run.teacher else None
        limit = self.config.eval_limit
        row.update(evaluate(self.model, run.eval_data, self.metric, reference, self.device, limit))
        score = row["accuracy" if self.metric == "accuracy" else "cosine"]
        improved = self.best_score is None or score > self.best_score
        if improved:
            self.best_score, self.best_state = score, ckpt.cpu_state(self.model)
            self.good_state = self.best_state
            if self.config.checkpoint_dir and self.dist.is_main:
                ckpt.save_best(self.config.checkpoint_dir, self.best_state, {"score": score, "epoch": self.epoch + 1})
        run.bar.metric = f"{self.metric} {score:.4f}"
        run.bar.log(f"epoch {self.epoch + 1}: loss {loss:.4f}  {self.metric} {score:.4f}")
        return row, improved

    def _diverged(self, loss: float) -> None:
        self.model.load_state_dict(self.good_state)
        what = "the best weights so far" if self.best_state is not None else "the weights of the last completed epoch"
        raise NonFiniteLossError(
            f"the training loss became {loss} at step {self.step + 1} (epoch {self.epoch + 1}); training stopped and "
            f"the model holds {what}. Lower lr or set grad_clip.",
            self.step + 1,
        )

    # ------------------------------------------------------------------ helpers

    def _notify(self, event: TrainEvent) -> bool:
        """Run the callbacks; True when one asked to stop."""
        try:
            for callback in self.callbacks:
                callback(event)
        except StopTraining:
            return True
        return False

    def _objective(self) -> tuple[nn.Module, Any]:
        """The module to optimize and the teacher's runner (None without a teacher)."""
        if self.teacher is None:
            return TaskObjective(self.model), None
        self._flags = [(m, m.training) for m in self.teacher.modules()]
        self.teacher.to(self.device).eval()
        return teacher_objectives().build(self.model, self.teacher, self.distill)

    def _teacher_flags(self) -> None:
        for module, training in self._flags:
            module.training = training

    def _metric(self, eval_data: Iterable[Any] | None, teacher: Any) -> str:
        if eval_data is None:
            return ""
        has_targets = next(iter_batches(eval_data, limit=1)).target is not None
        metric = self.config.metric or ("accuracy" if has_targets else "fidelity")
        if metric == "fidelity" and teacher is None:
            raise DataError("eval_data has no targets: give batches with targets, or a teacher to measure fidelity to")
        return metric

    def _amp(self) -> tuple[Any, Callable[[], Any]]:
        use = self.config.amp and self.device.type == "cuda"
        if self.config.amp and not use:
            warnings.warn("amp=True needs a CUDA device; training in float32", stacklevel=3)
        if not use:
            return torch.amp.GradScaler("cpu", enabled=False), contextlib.nullcontext
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        return scaler, lambda: torch.autocast("cuda", dtype=dtype)

    def _progress(self, skip: int, bad_evals: int) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "skip": skip,
            "bad_evals": bad_evals,
            "best_score": self.best_score,
            "history": self.history,
        }

    def _checkpoint(self, run: _Run, skip: int, bad_evals: int) -> None:
        if self.config.checkpoint_dir and self.dist.is_main:
            state, progress = ckpt.cpu_state(run.objective), self._progress(skip, bad_evals)
            ckpt.save_checkpoint(self.config.checkpoint_dir, self.step, state, run.optimizer.state_dict(), progress)

    def _resume(self, objective: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int]:
        cfg = self.config
        if not cfg.resume:
            return 0, 0
        if not cfg.checkpoint_dir:
            raise DataError("resume=True needs checkpoint_dir: the folder the interrupted run wrote")
        found = ckpt.load_checkpoint(cfg.checkpoint_dir)
        if found is None:
            warnings.warn(f"no checkpoint in {cfg.checkpoint_dir}; starting from the beginning", stacklevel=3)
            return 0, 0
        objective.load_state_dict(found["model"])
        optimizer.load_state_dict(found["optimizer"])
        p = found["progress"]
        self.epoch, self.step, self.best_score, self.history = p["epoch"], p["step"], p["best_score"], p["history"]
        best = ckpt.load_best(cfg.checkpoint_dir)
        if best is not None:
            self.best_state = best[0]
        return p["skip"], p["bad_evals"]

