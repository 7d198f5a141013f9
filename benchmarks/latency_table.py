"""How well a latency table predicts real latency: the error `search --latency-table` works with.

    PYTHONPATH=src .venv/bin/python benchmarks/latency_table.py [--table T] [--save T] [--quick | --digits-grid]

1. Measures a latency table here (`measure_table`: the generic grid, ``--quick``'s coarse one,
   or ``--digits-grid``: the digits CNN's own layer shapes, as ``slimkit bench example:digits-cnn
   --lut`` measures; ``--table`` reads one instead), onnxruntime, 1 thread, batch 1.
2. For 20 models (the digits CNN as trained, pruned, Tucker-decomposed and int8-static; the
   test zoo's residual, inverted-residual (depthwise), grouped-conv and attention models; an
   MLP; some int8-static; the MLP and attention as int8-dynamic and 4-bit weight-only; a
   2-layer transformers BERT, fp32 and int8-dynamic) predicts the batch-1 latency with the
   table and really measures it on onnxruntime here, the way the grid is timed
   (`latency_grid.time_interleaved`: every model once per round, ``--rounds`` rounds, the 10th
   percentile of the fastest round kept).
3. Prints real ms, predicted ms and the error per model, then the mean absolute % error and
   Spearman's rank correlation between prediction and reality (the search needs the order).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr
from torch import nn

import slimkit as sk
from slimkit.models.testing import GroupedConvNet, InvertedResidual, ResidualNet, TinyAttention
from slimkit.search.latency_grid import QUICK_GRID, deploy, time_interleaved
from slimkit.search.latency_table import LatencyTable, measure_table

console = Console(width=140)
Build = Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]


def _int8(model: nn.Module, x: torch.Tensor) -> nn.Module:
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn((8, *x.shape[1:]), generator=generator) for _ in range(4)]
    return sk.quantize(model, "int8-static", data=calibration)


def _image(channels: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(0))


def _seeded(factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return factory().eval()


def _bert() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A 2-layer BERT encoder (width 128, 4 heads, 32 tokens) with seeded random weights."""
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512, vocab_size=1000
    )
    ids = torch.randint(0, 1000, (1, 32), generator=torch.Generator().manual_seed(0))
    return transformers.BertModel(config).eval(), (ids,)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def models() -> dict[str, Build]:
    """Name -> builder of (model, batch-1 inputs)."""
    digits, x = sk.load("example:digits-cnn"), _image(1)
    pruned = {r: sk.prune(digits, "channels", ratio=r, example_inputs=(x,)) for r in (0.25, 0.5)}
    zoo = {
        "residual w32": (_seeded(lambda: ResidualNet(width=32)), _image()),
        "inverted-residual c32 (depthwise)": (_seeded(lambda: InvertedResidual(channels=32)), _image()),
        "grouped-conv w64 g8": (_seeded(lambda: GroupedConvNet(width=64, groups=8)), _image()),
        "mlp 256-512-512-10": (_seeded(_mlp), torch.randn(1, 256, generator=torch.Generator().manual_seed(0))),
    }
    attention = _seeded(lambda: TinyAttention(dim=64, heads=4, ffn=256, seq=16))
    tokens = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(0))
    mlp, features = zoo["mlp 256-512-512-10"]
    bert, ids = _bert()
    return {
        "digits-cnn": lambda: (digits, (x,)),
        "digits-cnn int8": lambda: (_int8(digits, x), (x,)),
        "digits-cnn pruned 25%": lambda: (pruned[0.25], (x,)),
        "digits-cnn pruned 50%": lambda: (pruned[0.5], (x,)),
        "digits-cnn pruned 50% int8": lambda: (_int8(pruned[0.5], x), (x,)),
        "digits-cnn tucker macs:0.5": lambda: (sk.decompose(digits, "tucker", rank="macs:0.5"), (x,)),
        **{name: (lambda m=m, i=i: (m, (i,))) for name, (m, i) in zoo.items()},
        "residual w32 int8": lambda: (_int8(*zoo["residual w32"]), (zoo["residual w32"][1],)),
        "inverted-residual c32 int8": lambda: (
            _int8(*zoo["inverted-residual c32 (depthwise)"]),
            (zoo["inverted-residual c32 (depthwise)"][1],),
        ),
        "mlp int8": lambda: (_int8(*zoo["mlp 256-512-512-10"]), (zoo["mlp 256-512-512-10"][1],)),
        "mlp int8-dynamic": lambda: (sk.quantize(mlp, "int8-dynamic"), (features,)),
        "mlp weight-only 4-bit": lambda: (sk.quantize(mlp, "weight-only"), (features,)),
        "attention d64 seq16": lambda: (attention, (tokens,)),
        "attention int8-dynamic": lambda: (sk.quantize(attention, "int8-dynamic"), (tokens,)),
        "attention weight-only 4-bit": lambda: (
            sk.quantize(attention, "weight-only", granularity="group:64"),
            (tokens,),
        ),
        "bert 2x128 seq32": lambda: (bert, ids),
        "bert 2x128 seq32 int8-dynamic": lambda: (sk.quantize(bert, "int8-dynamic"), ids),
    }


def _table(args: argparse.Namespace) -> LatencyTable:
    if args.table:
        return LatencyTable.load(args.table)
    start = time.perf_counter()
    seed = {"model": sk.load("example:digits-cnn"), "example_inputs": _image(1)} if args.digits_grid else {}
    table = measure_table("onnxruntime", 1, grid=QUICK_GRID if args.quick else None, **seed)
    console.print(f"measured the table ({len(table.grid)} grid models) in {time.perf_counter() - start:.0f} s; "
                  f"fit error on its own grid {table.fit_mape:.1f}%")  # fmt: skip
    if args.save:
        table.save(args.save)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", help="read this latency table instead of measuring one")
    parser.add_argument("--save", help="write the measured table here")
    parser.add_argument("--quick", action="store_true", help="the coarse grid (2 points per layer class)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds over the models")
    parser.add_argument("--digits-grid", action="store_true", help="the grid of the digits CNN's own layer shapes")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    table = _table(args)
    shown = Table(title=f"latency table predictions vs onnxruntime here: {table.describe()}")
    for col in ("model", "real ms", "predicted ms", "error", "approximated ops"):
        shown.add_column(col, justify="left" if col in ("model", "approximated ops") else "right")
    built = {name: build() for name, build in models().items()}
    predictions = {name: table.predict(model, inputs) for name, (model, inputs) in built.items()}
    with tempfile.TemporaryDirectory(prefix="slimkit-lut-bench-") as tmp:
        deployed = [deploy(m, i, "onnxruntime", Path(tmp) / str(k)) for k, (m, i) in enumerate(built.values())]
        timings = time_interleaved(deployed, threads=1, budget_s=0.5, rounds=args.rounds)
    real = [t.fast_ms for t in timings]
    predicted = [p.total_ms for p in predictions.values()]
    for (name, prediction), ms in zip(predictions.items(), real, strict=True):
        error = (prediction.total_ms - ms) / ms
        shown.add_row(
            name, f"{ms:.3f}", f"{prediction.total_ms:.3f}", f"{error:+.0%}", str(len(prediction.approximated))
        )
    errors = torch.tensor([abs(p - r) / r for p, r in zip(predicted, real, strict=True)])
    rho = spearmanr(real, predicted).statistic
    shown.caption = (
        f"mean absolute error {errors.mean():.1%} (median {errors.median():.1%}, max {errors.max():.1%}); "
        f"Spearman rank correlation {rho:.3f} over {len(real)} models"
    )
    console.print(shown)


if __name__ == "__main__":
    main()
