"""Fixtures of the CLI tests: a user's own project (a model package, its data and a metric)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

MODELS = '''
import torch
from torch import nn


class Net(nn.Module):
    """A small classifier with no example_inputs(): sample inputs must come from --data."""

    def __init__(self, width=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, 4)

    def forward(self, x):
        return self.head(self.features(x))


def trained_net():
    torch.manual_seed(0)
    return Net()


def small_net():
    torch.manual_seed(1)
    return Net(width=4)
'''

DATA = """
import torch


def splits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = (x[:, :, :4].mean((1, 2, 3)) > 0).long() + 2 * (x[:, :, :, :4].mean((1, 2, 3)) > 0).long()
    return x, y
"""

METRICS = '''
def error_rate(outputs, targets):
    """Share of wrong top-1 predictions: lower is better."""
    return float((outputs.argmax(-1) != targets).float().mean())


error_rate.higher_is_better = False


def mean_output(outputs, targets):
    """The mean logit: moves whenever the model changes (direction set by the caller)."""
    return float(outputs.double().mean())
'''


def write_project(root: Path) -> Path:
    """``root/mypkg`` with ``models`` (trained_net, small_net), ``data`` (splits) and ``metrics`` (error_rate)."""
    pkg = root / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name, text in (("models", MODELS), ("data", DATA), ("metrics", METRICS)):
        (pkg / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
    return pkg


@pytest.fixture
def own_project(tmp_path: Path) -> Path:
    """``tmp_path`` holding the user's ``mypkg`` package (run commands with cwd=tmp_path)."""
    write_project(tmp_path)
    return tmp_path


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*args) -> (exit code, stdout, stderr)`` of one ``slimkit`` command line."""
    from slimkit.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        captured = capsys.readouterr()
        return exc.value.code or 0, captured.out, captured.err

    return run
