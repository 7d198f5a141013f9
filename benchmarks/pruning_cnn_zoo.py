"""``channels`` 0.5 on the vision zoo, slimkit vs Torch-Pruning (``pruning.py --only cnn-zoo``).

    PYTHONPATH=src .venv/bin/python benchmarks/pruning.py --only cnn-zoo

The models and inputs of ``tests/zoo/test_pruning_cnn_zoo.py`` (`cnn_zoo`: random init,
torchvision through the test shim, 1x3x64x64 images; ViT and Swin in small configs at
32x32). Torch-Pruning: ``MetaPruner``, L1 magnitude, ratio 0.5, the last conv/linear layer
(the classifier) ignored. MACs by torch's flop counter (`slimkit.measure.count_macs`).
"""

from __future__ import annotations

import contextlib
import copy
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import slimkit as sk
from slimkit.core.errors import first_line
from slimkit.measure import count_macs, count_params

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "zoo"))
import cnn_zoo as zoo  # noqa: E402  (the test's zoo: same models, same inputs)

MODELS = [
    "resnet18", "resnet50", "mobilenet_v2", "squeezenet1_1", "densenet121", "googlenet", "mnasnet0_5",
    "resnext50_32x4d", "regnet_x_400mf", "convnext_tiny", "mobilenet_v3_small", "efficientnet_b0",
    "deeplabv3_mobilenet_v3_large", "shufflenet_v2_x1_0", "vit", "swin", "bnact_net",
]  # fmt: skip
SIZES = {"vit": 32, "swin": 32}
LIMIT_S = 300
"""Longest a pruner may take on one model (Torch-Pruning does not finish on Swin)."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise `TimeoutError` in the block after ``seconds`` (main thread, Unix)."""

    def stop(*_):
        raise TimeoutError(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _cells(model: nn.Module, make, x: tuple[torch.Tensor]) -> list[str]:
    """params and MACs ratios and seconds of ``make()``, or the error's first line."""
    start = time.perf_counter()
    try:
        with time_limit(LIMIT_S):
            pruned = make()
        with torch.no_grad():
            pruned(*x)
    except Exception as exc:  # a peer failing on a model is a result to print, not a crash
        return [f"fails: {type(exc).__name__}: {first_line(exc)[:60]}", "", ""]
    params = count_params(pruned) / count_params(model)
    macs = count_macs(pruned, x).total / count_macs(model, x).total
    return [f"{params:.3f}x", f"{macs:.3f}x", f"{time.perf_counter() - start:.1f}"]


def cnn_zoo_benchmark(console: Console, models: list[str] | None = None) -> None:
    """Print the table: one row per model (``models``, default all), slimkit and Torch-Pruning side by side."""
    from torchvision_shim import import_torchvision

    import_torchvision()
    table = Table(title="channels 0.5 (L1, per layer): params / MACs of the pruned model")
    for col in ["model", "slimkit params", "slimkit MACs", "s", "Torch-Pruning params", "Torch-Pruning MACs", "s"]:
        table.add_column(col, justify="right")
    for name in models or MODELS:
        torch.manual_seed(0)
        model = getattr(zoo, name)().eval()
        x = (zoo.image(SIZES.get(name, zoo.SIZE)),)
        ours = _cells(model, lambda m=model, x=x: sk.prune(m, "channels", ratio=0.5, example_inputs=x), x)
        theirs = _cells(model, lambda m=model, x=x: zoo.torch_pruning(copy.deepcopy(m), x[0]), x)
        table.add_row(name, *ours, *theirs)
        console.print(f"{name}: {ours} {theirs}")
    console.print(table)
