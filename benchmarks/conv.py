"""Convolution acceleration benchmark: Winograd vs torch's conv2d, and fuse/separable on digits-cnn.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/conv.py [--quick] [--epochs N]`` (default 10 epochs)

Every speed figure is a ratio of two interleaved timings in this one process (lower
quartile of repeated calls), since absolute times on a shared machine are noise.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.fx.experimental.optimization import fuse as fx_fuse

import slimkit as sk
from slimkit.conv import SeparableConv2d, WinogradConv2d
from slimkit.conv.timing import ab_timing
from slimkit.measure import count_macs, evaluate

console = Console()

BATCH1 = [(16, 32), (16, 64), (32, 32), (64, 16), (64, 32), (64, 64), (128, 8), (128, 16), (128, 32)]
BATCH1 += [(256, 8), (256, 16), (256, 32)]
BATCH16 = [(16, 32), (32, 32), (64, 8), (64, 16), (64, 32), (128, 8), (128, 16), (256, 8), (256, 16)]
GRID = [(1, c, s) for c, s in BATCH1] + [(16, c, s) for c, s in BATCH16]
"""(batch, channels in = out, spatial size): 21 shapes of 3x3, padding-1 convolutions."""


def winograd_grid(device: torch.device, quick: bool) -> Table:
    """Speed of F(2x2,3x3) and F(4x4,3x3) against F.conv2d per shape, with the multiplication ratio."""
    table = Table(title=f"Winograd vs torch.nn.functional.conv2d on {device.type} ({torch.get_num_threads()} threads)")
    for col in ("batch", "C", "HxW", "F(2) speed", "F(2) mults", "F(4) speed", "F(4) mults", "F(4) rel err"):
        table.add_column(col, justify="right")
    faster = 0
    shapes = GRID[::3] if quick else GRID
    for batch, channels, size in shapes:
        conv = nn.Conv2d(channels, channels, 3, padding=1).to(device)
        x = torch.randn(batch, channels, size, size, device=device)
        row = [str(batch), str(channels), f"{size}x{size}"]
        best = 0.0
        for tile in (2, 4):
            layer = WinogradConv2d.from_conv(conv, tile)
            direct_ms, wino_ms = ab_timing(
                lambda conv=conv, x=x: F.conv2d(x, conv.weight, conv.bias, padding=1),
                lambda layer=layer, x=x: layer(x),
                device=device,
                repeats=7 if quick else 11,
            )
            direct_macs = batch * channels * channels * 9 * size * size
            speed = direct_ms / wino_ms
            best = max(best, speed)
            row += [f"{speed:.2f}x", f"{direct_macs / layer.elementwise_multiplications(size, size, batch):.2f}x"]
        with torch.no_grad():
            ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
            err = float((layer(x).double() - ref).norm() / ref.norm())
        row.append(f"{err:.1e}")
        faster += best > 1.0
        table.add_row(*row, style="green" if best > 1.0 else None)
    table.caption = (
        f"speed = conv2d time / Winograd time (>1: Winograd faster); faster on {faster}/{len(shapes)} shapes"
    )
    return table


def _latency_ratio(a: nn.Module, b: nn.Module, x: torch.Tensor, repeats: int = 41) -> tuple[float, float]:
    return ab_timing(lambda: a(x), lambda: b(x), repeats=repeats)


def digits_fuse(model: nn.Module, splits: sk.DataSplits) -> Table:
    """fuse vs torch.fx's conv-bn fusion: accuracy and batch-1 latency against the original."""
    x = next(iter(splits.test))[0][:1]
    fused = sk.accelerate(model, "fuse", example_inputs=(x,))
    peer = fx_fuse(copy.deepcopy(model))
    state = sk.explain(fused).details
    table = Table(title="digits-cnn: fuse (batch 1, CPU)")
    for col in ("model", "test accuracy", "max |logit diff|", "latency vs original"):
        table.add_column(col, justify="right")
    base = evaluate(model, splits.test, "accuracy")["accuracy"]
    with torch.no_grad():
        ref = model(x)
    table.add_row("original", f"{base:.4f}", "0", "1.00x")
    for name, candidate in (("slimkit fuse", fused), ("torch.fx fuse (peer)", peer)):
        acc = evaluate(candidate, splits.test, "accuracy")["accuracy"]
        with torch.no_grad():
            diff = float((candidate(x) - ref).abs().max())
        before, after = _latency_ratio(model, candidate, x)
        table.add_row(name, f"{acc:.4f}", f"{diff:.1e}", f"{after / before:.2f}x")
    table.caption = (
        f"slimkit: {len(state['folded'])} BN folded, {len(state['fused_relu'])} ReLU fused, "
        f"channels_last={state['channels_last']} ({state['channels_last_why']['reason']})"
    )
    return table


def _converted_macs(model: nn.Module, names: list[str], x: torch.Tensor) -> int:
    """MACs of the named layers for one forward on ``x``."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_pre_hook(lambda _m, a, n=n: seen.setdefault(n, a[0])) for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(count_macs(model.get_submodule(n), (seen[n],)).total for n in names)


def digits_separable(model: nn.Module, splits: sk.DataSplits, epochs: int) -> Table:
    """separable on the 3x3 convs: MACs of the converted layers and accuracy before/after fine-tuning."""
    x = next(iter(splits.test))[0][:1]
    init = sk.accelerate(model, "separable")
    tuned = sk.accelerate(model, "separable", data=splits.train, finetune={"epochs": epochs, "lr": 2e-3}).eval()
    names = list(sk.explain(init).details["converted"])
    assert all(isinstance(init.get_submodule(n), SeparableConv2d) for n in names)
    dense_macs = _converted_macs(model, names, x)
    sep_macs = _converted_macs(init, names, x)
    base = evaluate(model, splits.test, "accuracy")["accuracy"]
    table = Table(title=f"digits-cnn: separable on its {len(names)} 3x3 convs (rank 1)")
    for col in ("model", "MACs of converted layers", "model MACs", "test accuracy", "drop (pts)"):
        table.add_column(col, justify="right")
    total = count_macs(model, (x,)).total
    table.add_row("original", f"{dense_macs:,}", f"{total:,}", f"{base:.4f}", "0")
    for name, candidate in (("SVD init", init), (f"+ distillation ({epochs} epochs)", tuned)):
        acc = evaluate(candidate, splits.test, "accuracy")["accuracy"]
        row_total = count_macs(candidate, (x,)).total
        table.add_row(name, f"{sep_macs:,}", f"{row_total:,}", f"{acc:.4f}", f"{100 * (base - acc):.2f}")
    table.caption = f"converted layers: {dense_macs / sep_macs:.2f}x fewer MACs"
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a third of the grid, fewer repeats")
    parser.add_argument("--epochs", type=int, default=10, help="distillation epochs for separable")
    args = parser.parse_args()
    torch.manual_seed(0)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        console.print(winograd_grid(device, args.quick))
    model, splits = sk.load("example:digits-cnn"), sk.load_data("example:digits")
    console.print(digits_fuse(model, splits))
    console.print(digits_separable(model, splits, 2 if args.quick else args.epochs))


if __name__ == "__main__":
    main()
