"""The rich progress bar of a training run (silent when quiet or not on rank 0)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """Shows steps done of ``total`` with the running loss and the last metric."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self._bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
            disable=not enabled,
        )
        self._task = self._bar.add_task("train", total=total, info="")
        self.metric = ""

    def __enter__(self) -> TrainProgress:
        self._bar.start()
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._bar.stop()

    def advance(self, step: int, loss: float, epoch: int) -> None:
        """Move to ``step`` and show the loss."""
        self._bar.update(self._task, completed=step, info=f"epoch {epoch + 1}  loss {loss:.4f}  {self.metric}")

    def log(self, text: str) -> None:
        """Print a line above the bar."""
        if self.enabled:
            self._bar.console.print(text)
