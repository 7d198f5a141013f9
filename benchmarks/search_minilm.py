"""Budgeted compression of all-MiniLM-L6-v2: mixed precision under a size cap, int8 with fallback.

    PYTHONPATH=src .venv/bin/python benchmarks/search_minilm.py [--only mixed|fallback] [--max-mb 17]

1. ``mixed``: `sk.sensitivity` (weight-only 4 and 8 bits, group 128, every Linear and
   Embedding, scored by cosine on the calibration split) then `allocate` at the size cap:
   size on disk (`sk.save`), mean and min cosine on the held-out test sentences, beside
   the uniform settings (int8-dynamic, weight-only 8 and 4 bits everywhere).
2. ``fallback``: int8-static everywhere beside `sk.search.fallback` at a 0.01 cosine budget
   (mean cosine >= 0.99 on the calibration split): the layers kept in float, the figures
   on the test split.

Both sections select on the calibration split only; the test split is scored once, at the end.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import slimkit as sk
from slimkit.search import allocate, fallback, sensitivity
from slimkit.search.allocate import saved_bytes

console = Console(width=140)


def cosines(model: nn.Module, reference: nn.Module, data) -> torch.Tensor:
    """Per-sentence cosine of ``model``'s embeddings to ``reference``'s, in float64."""
    with torch.no_grad():
        pairs = [(model(**batch), reference(**batch)) for batch in data]
    out, ref = (torch.cat(side).double() for side in zip(*pairs, strict=True))
    return torch.nn.functional.cosine_similarity(out, ref, dim=1)


def show(title: str, rows: list[list[str]]) -> None:
    table = Table(title=title)
    for column in ("model", "MB on disk", "mean cos", "min cos", "note"):
        table.add_column(column, justify="left" if column in ("model", "note") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def row(name: str, model: nn.Module, reference: nn.Module, data, note: str = "") -> list[str]:
    cos = cosines(model, reference, data.test)
    return [name, f"{saved_bytes(model) / 1e6:.2f}", f"{cos.mean():.4f}", f"{cos.min():.4f}", note]


def bench_mixed(model: nn.Module, data, max_mb: float) -> None:
    started = time.perf_counter()
    table = sensitivity(model, data, ("quantize",), metric="fidelity", bits=(4, 8), group_size=128, max_batches=2)
    original = saved_bytes(model)
    result = allocate(model, data, table, max_size_ratio=max_mb * 1e6 / original, metric="fidelity", max_batches=2)
    seconds = time.perf_counter() - started
    four = sorted(s.unit for s in result.settings if s.label == "int4")
    rows = [
        row("fp32", model, model, data),
        row("int8-dynamic (all Linears)", sk.quantize(model, "int8-dynamic"), model, data),
        row("weight-only 8b g128 (all)", sk.quantize(model, "weight-only", bits=8, group_size=128), model, data),
        row("weight-only 4b g128 (all)", sk.quantize(model, "weight-only", bits=4, group_size=128), model, data),
        row(f"allocate, <= {max_mb:g} MB", result.model, model, data,
            f"{len(four)} of {len(result.settings)} layers at 4 bits, met={result.met}; {seconds:.0f} s"),
    ]  # fmt: skip
    show(f"MiniLM mixed precision at <= {max_mb:g} MB (test split, {len(data.test.sentences)} sentences)", rows)
    console.print("4 bits: " + ", ".join(four))


def bench_fallback(model: nn.Module, data, budget: float) -> None:
    started = time.perf_counter()
    result = fallback(model, data, max_metric_drop=budget, method="int8-static", metric="fidelity")
    seconds = time.perf_counter() - started
    rows = [
        row("int8-static (all)", sk.quantize(model, "int8-static", data=data.calibration), model, data,
            f"calibration-split drop {result.full_drop:.4f}"),
        row(f"fallback, drop <= {budget:g}", result.model, model, data,
            f"{len(result.float_layers)} of {len(result.float_layers) + len(result.quantized)} float "
            f"({result.drop:.4f} on calibration); {len(result.probes) + len(result.ranking)} models scored; "
            f"{seconds:.0f} s"),
    ]  # fmt: skip
    show("MiniLM int8-static with accuracy-aware fallback (test split)", rows)
    console.print("kept in float, most sensitive first: " + ", ".join(result.float_layers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("mixed", "fallback"), default=None)
    parser.add_argument("--max-mb", type=float, default=17.0, help="size cap of the mixed-precision model")
    parser.add_argument("--max-drop", type=float, default=0.01, help="cosine budget of the fallback")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    model, data = sk.load("example:minilm"), sk.load_data("example:sentences")
    if args.only in (None, "mixed"):
        bench_mixed(model, data, args.max_mb)
    if args.only in (None, "fallback"):
        bench_fallback(model, data, args.max_drop)


if __name__ == "__main__":
    main()
