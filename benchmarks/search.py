"""Adaptive compression benchmark on the bundled digits CNN: sensitivity, allocation, search.

    PYTHONPATH=src .venv/bin/python benchmarks/search.py [--quick] [--trials N]

1. `sk.sensitivity` (weight-only bits per Linear, channel ratios per prunable group) on the
   calibration split: wall time, and the same call again from the cache.
2. `allocate` at a 1-point accuracy budget beside uniform pruning at the smallest ratio
   tried: predicted and measured drop (calibration), saved size, fallback steps.
3. `sk.search` on onnxruntime (1 thread) with ``max_metric_drop=0.01``: the Pareto front
   measured on the test split, printed beside int8-static alone (the hand-written baseline).
4. The same trials (default 30) here one after another and as Ray tasks on 2 local workers (``--ray``):
   wall time ratio, and whether both found the same front.
5. ``--dominate``: the bundled ``prune-distill-int8`` recipe run by `compress`, beside a search
   (``--trials``, default 30) whose top 4 candidates are fine-tuned as that recipe is (4 epochs
   of KD, lr 0.002): which front points are smaller *and* faster on onnxruntime at batch 1
   within 0.5 points of accuracy (test split).
6. ``--fisher-prune``: channel-pruning rows (3 ratios per group, fidelity on the whole
   calibration split) measured, and estimated by the Fisher proxy with 3 anchors: wall time
   of each, Spearman rank correlation, and the rows side by side.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

import slimkit as sk
from slimkit.core.data import resize_batch
from slimkit.core.samples import example_batch
from slimkit.search import Cache, SearchSpace, allocate, sensitivity
from slimkit.search.allocate import saved_bytes
from slimkit.search.sensitivity import Scorer

console = Console(width=140)


def bench_sensitivity(model, data, ratios, max_batches) -> object:
    """Section 1: the table, timed cold and from the cache."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        table = sensitivity(model, data, ratios=ratios, max_batches=max_batches, cache=Cache(folder))
        cold = time.perf_counter() - start
        start = time.perf_counter()
        sensitivity(model, data, ratios=ratios, max_batches=max_batches, cache=Cache(folder))
        warm = time.perf_counter() - start
    rows = Table(title=f"sensitivity: {len(table.rows)} settings, {cold:.1f} s cold, {warm:.1f} s from the cache")
    for column in ("setting", "drop (calibration)", "bytes saved"):
        rows.add_column(column)
    for row in sorted(table.rows, key=lambda r: r.drop, reverse=True)[:8]:
        rows.add_row(row.setting.key, f"{row.drop:+.4f}", str(row.bytes_saved))
    console.print(rows)
    return table


def bench_allocation(model, data, table, budget: float) -> None:
    """Section 2: the allocator at ``budget`` beside uniform pruning."""
    start = time.perf_counter()
    result = allocate(model, data, table, max_metric_drop=budget)
    seconds = time.perf_counter() - start
    scorer = Scorer(model, data.calibration, data.metric, None)
    ratio = min(r.setting.options[0][1] for r in table.rows if r.setting.verb == "prune")
    uniform = sk.prune(model, "channels", ratio=ratio, data=data.calibration)
    uniform_drop = scorer(model) - scorer(uniform)
    out = Table(title=f"allocation at max drop {budget} (measured on calibration, {seconds:.1f} s)")
    for column in ("plan", "predicted drop", "measured drop", "size ratio", "met", "fallback steps"):
        out.add_column(column)
    out.add_row(
        f"allocated ({len(result.settings)} settings)",
        f"{result.predicted_drop:+.4f}",
        f"{result.drop:+.4f}",
        f"{result.size_ratio:.3f}",
        str(result.met),
        str(len(result.fallback)),
    )
    size = saved_bytes(uniform) / result.original_bytes
    out.add_row(
        f"uniform prune {ratio:.0%}", "-", f"{uniform_drop:+.4f}", f"{size:.3f}", str(uniform_drop <= budget), "-"
    )
    console.print(out)


def bench_search(model, data, trials: int, budget: float) -> None:
    """Section 3: the Pareto front on onnxruntime beside int8-static alone."""
    start = time.perf_counter()
    result = sk.search(
        model, data, target="onnxruntime", constraints={"max_metric_drop": budget}, trials=trials, seed=0,
        space=SearchSpace(), model_spec="example:digits-cnn", data_spec="example:digits",
    )  # fmt: skip
    seconds = time.perf_counter() - start
    out = Table(title=f"search: {trials} trials in {seconds:.0f} s, front measured on the test split (onnxruntime)")
    for column in ("recipe", "p50 ms (bs 1)", "size KB", "accuracy", "drop"):
        out.add_column(column)
    base = result.original
    out.add_row("original", f"{base.latency_ms:.3f}", f"{base.size_bytes / 1e3:.0f}", f"{base.metric:.4f}", "-")
    for point in result.front:
        stages = " -> ".join(f"{v['method']}{v.get('ratio', v.get('bits', ''))}" for s in point.recipe["stages"]
                             for v in s.values())  # fmt: skip
        t = point.test
        out.add_row(stages, f"{t.latency_ms:.3f}", f"{t.size_bytes / 1e3:.0f}", f"{t.metric:.4f}", f"{t.drop:+.4f}")
    console.print(out)
    failed = sum(1 for t in result.trials if t.error)
    console.print(f"{failed} failed trials; int8-static alone is trial 1 (warm start) when it is on the front")


def bench_ray(model, data, trials: int, budget: float) -> None:
    """Section 4: wall time of ``trials`` trials, 1 worker here vs 2 Ray workers, same seed."""
    import ray

    options = {"target": "onnxruntime", "constraints": {"max_metric_drop": budget}, "trials": trials, "seed": 0}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # started outside the timing
    try:
        walls, fronts = {}, {}
        for name, extra in (("1 worker (local)", {}), ("2 Ray workers", {"backend": "ray", "workers": 2})):
            start = time.perf_counter()
            result = sk.search(model, data, **options, **extra)
            walls[name] = time.perf_counter() - start
            fronts[name] = sorted(str(p.recipe["stages"]) for p in result.front)
    finally:
        ray.shutdown()
    out = Table(title=f"search on Ray: {trials} trials (onnxruntime, digits CNN)")
    for column in ("run", "wall s", "x 1 worker", "front"):
        out.add_column(column)
    one = walls["1 worker (local)"]
    for name, wall in walls.items():
        same = "same" if fronts[name] == fronts["1 worker (local)"] else "differs"
        out.add_row(name, f"{wall:.1f}", f"{wall / one:.2f}", f"{len(fronts[name])} points, {same}")
    console.print(out)


def _interleaved_p50(paths: dict[str, Path], batch, rounds: int = 7) -> dict[str, float]:
    """Median over ``rounds`` of each artifact's p50 at batch 1 (1 thread), the runs interleaved."""
    runtimes = {name: sk.runtime.load(path) for name, path in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, rt in runtimes.items():
            times[name].append(rt.bench(batch, (1,), threads=1, budget_s=0.5)[1].p50_ms)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_dominate(model, data, trials: int) -> None:
    """Section 5: search + top-4 fine-tuning against the hand-written bundled recipe; every
    published artifact re-timed side by side at the end."""
    finetune = {"epochs": 4, "lr": 0.002, "distill": {"method": "kd", "temperature": 4}}
    with tempfile.TemporaryDirectory() as folder:
        runs = {"bundled prune-distill-int8": sk.compress(model, "prune-distill-int8", data=data, out=f"{folder}/b")}
        paths = {"bundled prune-distill-int8": Path(folder) / "b" / "model.onnx"}
        start = time.perf_counter()
        result = sk.search(
            model, data, target="onnxruntime", constraints={"max_metric_drop": 0.005}, trials=trials, seed=0,
            finetune_top=4, finetune=finetune, model_spec="example:digits-cnn", data_spec="example:digits",
            space=SearchSpace(prune_ratios=(0.0, 0.5, 0.625, 0.75)),
        )  # fmt: skip
        seconds = time.perf_counter() - start
        for i, point in enumerate(result.front):  # published as compress publishes it
            name = " -> ".join(f"{verb}:{o.get('method', '')}{o.get('ratio', o.get('bits', ''))}".rstrip(":")
                               for stage in point.recipe["stages"] for verb, o in stage.items())  # fmt: skip
            runs[name] = sk.compress(model, point.recipe, data=data, out=f"{folder}/p{i}")
            paths[name] = Path(folder) / f"p{i}" / "model.onnx"
        batch = resize_batch(example_batch(model, None, data.test), 1)
        p50 = _interleaved_p50(paths, batch)
        sizes = {name: path.stat().st_size for name, path in paths.items()}
    base = "bundled prune-distill-int8"
    reference = runs[base].original.metrics["accuracy"]
    out = Table(title=f"search ({trials} trials + 4 fine-tuned, {seconds:.0f} s) vs the bundled prune-distill-int8; "
                "onnxruntime p50 at batch 1, 1 thread, re-timed interleaved")  # fmt: skip
    for column in ("recipe", "p50 ms", "size KB", "accuracy", "drop", "dominates the bundled recipe"):
        out.add_column(column)
    for name, run in runs.items():
        accuracy = run.final.metrics["accuracy"]
        drop = reference - accuracy
        wins = name != base and p50[name] < p50[base] and sizes[name] < sizes[base] and drop <= 0.005
        out.add_row(name, f"{p50[name]:.3f}", f"{sizes[name] / 1e3:.0f}", f"{accuracy:.4f}", f"{drop:+.4f}",
                    "-" if name == base else ("yes" if wins else "no"))  # fmt: skip
    console.print(out)


def bench_fisher_prune(model, data) -> None:
    from scipy.stats import spearmanr

    options = dict(metric="fidelity", ratios=(0.25, 0.5, 0.75), max_batches=None)
    start = time.perf_counter()
    measured = sensitivity(model, data, ("prune",), **options)
    middle = time.perf_counter()
    estimated = sensitivity(model, data, ("prune",), estimate="fisher", fisher_verbs=("prune",), anchors_measured=3,
                            **options)  # fmt: skip
    end = time.perf_counter()
    rho = spearmanr([r.drop for r in measured.rows], [r.drop for r in estimated.rows]).statistic
    table = Table(
        title=f"pruning rows: measured {middle - start:.1f} s, Fisher {end - middle:.1f} s, Spearman {rho:.2f}"
    )
    for col in ("group", "ratio", "measured drop", "estimated drop", "estimated"):
        table.add_column(col)
    for want, got in zip(measured.rows, estimated.rows, strict=True):
        table.add_row(
            want.setting.unit[:40], want.setting.label, f"{want.drop:.4f}", f"{got.drop:.4f}", str(got.estimated)
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer settings and trials")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--ray", action="store_true", help="only section 4: 1 worker vs 2 Ray workers")
    parser.add_argument("--dominate", action="store_true", help="only section 5: search vs the bundled recipe")
    parser.add_argument("--fisher-prune", action="store_true", help="only section 6: pruning rows by Fisher")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    model, data = sk.load("example:digits-cnn"), sk.load_data("example:digits")
    if args.fisher_prune:
        bench_fisher_prune(model, data)
        return
    if args.ray:
        bench_ray(model, data, args.trials or 30, budget=0.01)
        return
    if args.dominate:
        bench_dominate(model, data, args.trials or 30)
        return
    ratios = (0.25,) if args.quick else (0.25, 0.5)
    table = bench_sensitivity(model, data, ratios, max_batches=2)
    bench_allocation(model, data, table, budget=0.01)
    bench_search(model, data, args.trials or (4 if args.quick else 20), budget=0.01)


if __name__ == "__main__":
    main()
