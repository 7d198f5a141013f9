"""Budgeted compression of all-MiniLM-L6-v2: mixed precision under a size cap, int8 with fallback.

    PYTHONPATH=src .venv/bin/python benchmarks/search_minilm.py [--only mixed|fallback|search] [--max-mb 17]

1. ``mixed``: `sk.sensitivity` (weight-only 4 and 8 bits, group 128, every Linear and
   Embedding, scored by cosine on the calibration split) then `allocate` at the size cap:
   size on disk (`sk.save`), mean and min cosine on the held-out test sentences, beside
   the uniform settings (int8-dynamic, weight-only 8 and 4 bits everywhere). Twice: with
   every row measured, and with the rows estimated by the Fisher proxy
   (``estimate="fisher"``), with the agreement of the two tables.
2. ``fallback``: int8-static everywhere beside `sk.search.fallback` at a 0.01 cosine budget
   (mean cosine >= 0.99 on the calibration split): the layers kept in float, the figures
   on the test split.

3. ``search``: `sk.search` with ``mixed`` among the quantization choices (beside int8-dynamic
   and uniform weight-only) at a 0.005 cosine budget: the size/latency front on onnxruntime.

Every section selects on the calibration split only; the test split is scored once, at the end.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import rankdata as scipy_rankdata
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


def allocated(model: nn.Module, data, max_mb: float, estimate: str) -> tuple[object, object, float, float]:
    """The sensitivity table (``estimate``), the allocation at the cap, and the seconds of each."""
    started = time.perf_counter()
    table = sensitivity(
        model,
        data,
        ("quantize",),
        metric="fidelity",
        bits=(4, 8),
        granularity="group:128",
        max_batches=2,
        estimate=estimate,
    )
    scored = time.perf_counter()
    cap = max_mb * 1e6 / saved_bytes(model)
    result = allocate(model, data, table, max_size_ratio=cap, metric="fidelity", max_batches=2)
    return table, result, scored - started, time.perf_counter() - scored


def bench_mixed(model: nn.Module, data, max_mb: float) -> None:
    rows = [
        row("fp32", model, model, data),
        row("int8-dynamic (all Linears)", sk.quantize(model, "int8-dynamic"), model, data),
        row(
            "weight-only 8b g128 (all)", sk.quantize(model, "weight-only", bits=8, granularity="group:128"), model, data
        ),
        row(
            "weight-only 4b g128 (all)", sk.quantize(model, "weight-only", bits=4, granularity="group:128"), model, data
        ),
    ]
    tables = {}
    for estimate in ("measure", "fisher"):
        table, result, scoring, allocating = allocated(model, data, max_mb, estimate)
        tables[estimate] = table
        four = sorted(s.unit for s in result.settings if s.label == "int4")
        note = (f"{len(four)} of {len(result.settings)} at 4 bits, met={result.met}; sensitivity {scoring:.0f} s "
                f"({table.measured} rows evaluated), allocation {allocating:.0f} s")  # fmt: skip
        rows.append(row(f"allocate <= {max_mb:g} MB, {estimate} table", result.model, model, data, note))
    show(f"MiniLM mixed precision at <= {max_mb:g} MB (test split, {len(data.test.sentences)} sentences)", rows)
    measured, estimated = ([r.drop for r in tables[k].rows] for k in ("measure", "fisher"))
    console.print(
        f"Fisher-estimated vs measured drops of {len(measured)} rows: Spearman {spearman(measured, estimated):.3f}, "
        f"median relative error {median_relative_error(measured, estimated):.1%} "
        f"(scale {tables['fisher'].scale['quantize']:.3g})"
    )


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (average ranks for ties)."""
    ranks = [torch.tensor(scipy_rankdata(x), dtype=torch.float64) for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def median_relative_error(truth: list[float], estimate: list[float], floor: float = 1e-4) -> float:
    """Median of ``|estimate - truth| / max(|truth|, floor)``."""
    t, e = torch.tensor(truth, dtype=torch.float64), torch.tensor(estimate, dtype=torch.float64)
    return float(((e - t).abs() / t.abs().clamp_min(floor)).median())


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


def bench_search(model: nn.Module, data, budget: float, trials: int) -> None:
    """`sk.search` with mixed precision among the choices: the front, measured on the test split."""
    space = sk.search.SearchSpace(
        quantize=("int8-dynamic", "weight-only", "mixed"), bits=(4, 8), prune_ratios=(0.0,), svd_fractions=(0.0,)
    )
    started = time.perf_counter()
    result = sk.search(model, data, target="onnxruntime", objectives=("size", "latency"),
                       constraints={"max_metric_drop": budget}, trials=trials, space=space)  # fmt: skip
    seconds = time.perf_counter() - started
    table = Table(title=f"MiniLM search, {trials} trials, cosine drop <= {budget:g} ({seconds:.0f} s)")
    for column in ("trial", "recipe", "MB (artifact)", "latency ms", "test cosine"):
        table.add_column(column, justify="left" if column == "recipe" else "right")
    table.add_row("-", "original", f"{result.original.size_bytes / 1e6:.2f}", f"{result.original.latency_ms:.2f}",
                  f"{result.original.metric:.4f}")  # fmt: skip
    for point in result.front:
        recipe = " + ".join(
            f"{o['method']}{o.get('bits', '')} ({len(o['include'])} layers)" if "include" in o else
            f"{o['method']}{o.get('bits', '')}"
            for stage in point.recipe["stages"] for o in stage.values()
        )  # fmt: skip
        table.add_row(str(point.trial), recipe, f"{point.test.size_bytes / 1e6:.2f}", f"{point.test.latency_ms:.2f}",
                      f"{point.test.metric:.4f}")  # fmt: skip
    console.print(table)
    for trial in result.trials:
        methods = [options.get("method") for stage in trial.stages for options in stage.values()]
        console.print(f"trial {trial.number}: {methods} {vars(trial.selection) if trial.selection else trial.error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("mixed", "fallback", "search"), default=None)
    parser.add_argument("--trials", type=int, default=8, help="trials of the search section")
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
    if args.only in (None, "search"):
        bench_search(model, data, 0.005, args.trials)


if __name__ == "__main__":
    main()
