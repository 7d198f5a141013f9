"""MAC counts: slimkit vs PyTorch's own FlopCounterMode on the test zoo and the examples.

Run: .venv/bin/python benchmarks/profile_macs.py
Prints one row per model; the ratio column shows what torch's counter alone misses
(fused attention fast paths, CPU SDPA, LSTM kernels).
"""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from slimkit import models
from slimkit.measure import count_macs
from slimkit.models.testing import ZOO


def torch_macs(model: torch.nn.Module, inputs: tuple) -> int:
    """MACs as torch's FlopCounterMode reports them (FLOPs / 2)."""
    mode = FlopCounterMode(display=False)
    with torch.no_grad(), mode:
        model(*inputs)
    return mode.get_total_flops() // 2


def main() -> None:
    table = Table(title="MACs per forward (batch of the example inputs)")
    for col in ("model", "slimkit", "torch FlopCounterMode", "torch / slimkit"):
        table.add_column(col, justify="left" if col == "model" else "right")
    cases = [(name, factory(), None) for name, factory in ZOO.items()]
    cases += [
        (f"example:{n}", models.get_model(n), models.get_example(n).example_inputs()) for n in models.list_examples()
    ]
    for name, model, inputs in cases:
        inputs = inputs if inputs is not None else model.example_inputs()
        ours, theirs = count_macs(model.eval(), inputs).total, torch_macs(model.eval(), inputs)
        table.add_row(name, f"{ours:,}", f"{theirs:,}", f"{theirs / ours:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
