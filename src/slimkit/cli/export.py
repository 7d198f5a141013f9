"""``slimkit export`` and ``slimkit bench``: deploy a model to runtimes and time it on each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from slimkit.cli import common as cli
from slimkit.cli.common import check_out, out, parse_batch_sizes, progress, staged_out
from slimkit.cli.shared import MEASURE, Run, command
from slimkit.core.errors import InvalidConfigError
from slimkit.core.formats import FORMATS

FORMAT_SUFFIX = {f.name: f.suffix for f in FORMATS}
BENCH_RUNTIMES = {"torch": None, **{f.runtime: f.suffix for f in FORMATS if f.is_artifact}}


def _choices(text: str, valid: dict[str, Any], option: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(valid)
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise InvalidConfigError(f"{option} got {text!r}; valid: {', '.join(valid)} (comma-separated) or all")
    return list(dict.fromkeys(names))


def _format_options(items: list[str] | None, formats: list[str]) -> dict[str, dict[str, object]]:
    """``-o key=value`` options sent to each of ``formats`` that takes them; one no format takes is refused."""
    from slimkit.runtime.export import format_options

    given = cli.parse_options(items)
    taken = {fmt: format_options(FORMAT_SUFFIX[fmt]) for fmt in formats}
    if unknown := sorted(set(given) - {name for names in taken.values() for name in names}):
        valid = "; ".join(f"{fmt}: {', '.join(names) or 'none'}" for fmt, names in taken.items())
        raise InvalidConfigError(f"no format of --to takes the export option(s) {unknown}; valid ({valid})")
    return {fmt: {k: v for k, v in given.items() if k in names} for fmt, names in taken.items()}


ExportOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="A format option as key=value (repeatable), sent to the formats that take it: opset=18, "
        "accuracy_level=4 (onnx); max_batch=1, max_sequence=128 (pte: the bounds memory is planned for); "
        "batch_size=8 (tflite).",
    ),
]


@command("export", ("overwrite", "data", "weights", "trust_pickle", "as_json", "quiet"))
def export_cmd(
    model: cli.ModelSpec,
    to: Annotated[str, typer.Option("--to", help=f"Formats: {','.join(FORMAT_SUFFIX)} or all.")] = "onnx",
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for model.<format> files.")] = Path("export"),
    int8: Annotated[bool, typer.Option("--int8", help="int8 through each runtime's own static quantizer.")] = False,
    option: ExportOptions = None,
    *,
    run: Run,
) -> None:
    """Export a model to ONNX / ExecuTorch / TFLite, each verified in its own runtime.

    --data gives the example inputs (its first batch) and, with --int8, the calibration
    batches. An existing --out is refused unless --overwrite (which replaces it whole).
    For .pte the planned activation memory is printed: -o max_batch / max_sequence bound it.

    Examples:

        slimkit export example:digits-cnn --to onnx,pte,tflite --out deploy/

        slimkit export out/ --to onnx --data mypkg.data:splits --out deploy/

        slimkit export out/ --to onnx --int8 --data example:digits --out deploy/ --overwrite

        slimkit export mypkg.models:gpt --to pte -o max_batch=1 -o max_sequence=256 --out deploy/
    """
    import json

    from slimkit.cli.profile import example_data
    from slimkit.core.specs import load_data, load_model
    from slimkit.report import human_bytes
    from slimkit.runtime.export import export
    from slimkit.runtime.pte_export import planned_memory

    formats = _choices(to, FORMAT_SUFFIX, "--to")
    options = _format_options(option, formats)
    check_out(out_dir, run.overwrite, model)
    loaded = load_model(model, weights=run.weights, trust_pickle=run.trust_pickle)
    data_spec = example_data(model, run.data) if int8 else run.data
    if int8 and data_spec is None:
        raise InvalidConfigError("--int8 needs --data: calibration batches for the runtime's quantizer")
    splits = load_data(data_spec) if data_spec else None
    written = []
    with staged_out(out_dir, run.overwrite) as stage:
        for fmt in formats:
            name = f"model{FORMAT_SUFFIX[fmt]}"
            with progress(f"exporting {model} to {out_dir / name}", run.silent):
                export(loaded, stage / name, quantize="int8" if int8 else None, data=splits, **options[fmt])
            written.append(out_dir / name)
    if run.as_json:
        print(json.dumps({str(p): p.stat().st_size for p in written}, indent=2))
        return
    for fmt, path in zip(formats, written, strict=True):
        planned = f", plans {human_bytes(planned_memory(path))} of activations" if path.suffix == ".pte" else ""
        out.print(f"{fmt:7s} {path}  {human_bytes(path.stat().st_size)}  (verified{planned})", markup=False)


def bench_table(rows: list[dict[str, Any]], title: str) -> Any:
    """One rich table: runtime x batch size, p50/p90, spread, ratio to torch eager (and the metric)."""
    from rich.table import Table

    from slimkit.report.tables import format_metric

    metric_names = list(dict.fromkeys(k for r in rows for k in r.get("metrics", {})))
    table = Table(title=title)
    for col in ("runtime", "batch", "p50 ms", "p90 ms", "p90/p50", "vs torch", *metric_names):
        table.add_column(col, justify="left" if col == "runtime" else "right", overflow="fold")
    base = {r["batch"]: r["p50_ms"] for r in rows if r["runtime"] == "torch"}
    for r in rows:
        ratio = f"{r['p50_ms'] / base[r['batch']]:.2f}x" if r["batch"] in base else "-"  # no torch model to compare
        spread = f"{r['spread']:.2f}" + (" noisy" if r["noisy"] else "")
        values = [format_metric(k, r["metrics"][k]) if k in r.get("metrics", {}) else "-" for k in metric_names]
        table.add_row(r["runtime"], str(r["batch"]), f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", spread, ratio, *values)
    if any(r["noisy"] for r in rows):
        table.caption = "noisy: p90/p50 stayed high; the machine was busy, rerun for steadier figures"
    return table


def lut_table(table: Any, path: Path) -> Any:
    """One rich table of a latency table's fitted costs (µs) per layer class."""
    from rich.table import Table

    coefficients = table.coefficients_ms
    shown = Table(title=f"latency table {path}: {table.describe()}")
    for col in ("class", "per layer µs", "per M MACs µs", "once per model µs"):
        shown.add_column(col, justify="left" if col == "class" else "right")
    for key in table.layer_classes:
        values = (coefficients.get(f"{key}:{n}", 0.0) * 1e3 for n in ("layers", "mmacs", "present"))
        shown.add_row(key, *(f"{v:.2f}" for v in values))
    per_op, per_k = (coefficients.get(f"elementwise:{n}", 0.0) * 1e3 for n in ("ops", "kelements"))
    shown.add_row("elementwise", f"{per_op:.2f} per op", f"{per_k:.3f} per 1k elements", "-")
    shown.add_row("overhead", "-", "-", f"{coefficients.get('overhead', 0.0) * 1e3:.2f}")
    shown.caption = f"fit on {len(table.grid)} grid models: mean absolute error {table.fit_mape:.1f}%" + (
        f"; {len(table.skipped)} refused by the runtime (listed in the file's skipped)" if table.skipped else ""
    )
    return shown


def _bench_lut(model: str | None, path: Path, runtime: str, quick: bool, run: Run) -> None:
    """``bench --lut``: measure a latency table here and write it to ``path``."""
    from slimkit.core.samples import example_batch
    from slimkit.core.specs import load_data, load_model
    from slimkit.search.latency_grid import QUICK_GRID
    from slimkit.search.latency_table import check_table_path, measure_table

    names = _choices(runtime, BENCH_RUNTIMES, "--runtime")
    if len(names) != 1:
        raise InvalidConfigError(f"--lut measures one runtime, got {runtime!r}: give e.g. --runtime onnxruntime")
    if parse_batch_sizes(run.batch_sizes) != (1,):
        raise InvalidConfigError("--lut measures batch 1 (what search times): leave --batch-sizes out")
    if quick and model is not None:
        raise InvalidConfigError(
            "--quick coarsens the generic grid, but a MODEL seeds the grid with its own layers: give one of the two"
        )
    check_table_path(path)
    loaded = inputs = None
    if model is not None:
        loaded = load_model(model, weights=run.weights, trust_pickle=run.trust_pickle)
        inputs = example_batch(loaded, None, load_data(run.data) if run.data else None, "bench --lut")
    with progress(f"measuring a latency table on {names[0]}", run.silent):
        table = measure_table(
            names[0], run.threads, grid=QUICK_GRID if quick else None, model=loaded, example_inputs=inputs
        )
    table.save(path)
    if run.as_json:
        print(table.model_dump_json(indent=2))
        return
    out.print(lut_table(table, path))
    out.print(f"wrote {path}", markup=False)


@command("bench", MEASURE)
def bench_cmd(
    model: Annotated[
        str | None,
        typer.Argument(
            help="Model spec (example:NAME, file.onnx, ...); with --lut, optional: its layers seed the grid."
        ),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime", help=f"{','.join(BENCH_RUNTIMES)} or all (default torch,onnxruntime; --lut: onnxruntime)."
        ),
    ] = None,
    lut: Annotated[
        Path | None,
        typer.Option("--lut", help="Measure a latency table for search --latency-table and write it here (JSON)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="With --lut and no MODEL: a coarse grid (2 sizes per layer class).")
    ] = False,
    *,
    run: Run,
) -> None:
    """Time a model on each runtime (exported and verified on the fly) at each batch size.

    Sample inputs come from --data's first batch (else the model's example_inputs());
    with --metric the metric is also computed on --data's test split on every runtime.
    Timing uses 1 thread unless --threads.

    With --lut FILE, bench instead times single-layer models (conv2d, depthwise conv2d and
    linear, fp32 and int8-static, at several sizes, plus elementwise chains) on this machine,
    fits per-layer costs and writes them as a latency table: run it on the device, copy the
    file back, and `slimkit search --latency-table FILE` optimises latency for that device.
    Without MODEL the grid is generic (66 models, two to three minutes); with MODEL it is the
    model's own layer shapes at full and half width.

    Examples:

        slimkit bench example:digits-cnn --runtime all --batch-sizes 1,32

        slimkit bench mypkg.models:trained_net --data mypkg.data:splits --metric accuracy

        slimkit bench model.onnx --data mypkg.data:splits --batch-sizes 1,8

        slimkit bench --lut phone-lut.json --runtime onnxruntime

        slimkit bench example:digits-cnn --lut digits-lut.json
    """
    if lut is not None:
        _bench_lut(model, lut, runtime or "onnxruntime", quick, run)
        return
    if model is None:
        raise InvalidConfigError("bench needs a MODEL to time (or --lut FILE to measure a latency table)")
    runtime = runtime or "torch,onnxruntime"
    import json
    import tempfile

    from torch import nn

    from slimkit.cli.profile import example_data
    from slimkit.core.data import DataSplits, iter_batches, resize_batch
    from slimkit.core.samples import example_batch
    from slimkit.core.specs import ARTIFACT_SUFFIXES, load_data, load_model
    from slimkit.measure.metrics import evaluate
    from slimkit.runtime import load
    from slimkit.runtime.artifact import RuntimeModule
    from slimkit.runtime.export import export

    sizes = parse_batch_sizes(run.batch_sizes)
    names = _choices(runtime, BENCH_RUNTIMES, "--runtime")
    chosen, threads = run.chosen_metric(), run.threads
    data_spec = example_data(model, run.data) if chosen is not None else run.data
    if chosen is not None and data_spec is None:
        raise InvalidConfigError("--metric needs --data (its test split is scored)")
    splits: DataSplits | None = load_data(data_spec) if data_spec else None
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="slimkit-bench-") as tmp,
        progress(f"benchmarking {model}", run.silent),
    ):
        if Path(model).suffix in ARTIFACT_SUFFIXES:
            batch = resize_batch(next(iter_batches(splits.test)), 1) if splits is not None else None
            runtimes = [load(model)]
        else:
            loaded = load_model(model, weights=run.weights, trust_pickle=run.trust_pickle)
            batch = example_batch(loaded, None, splits, "bench")
            targets = [loaded if BENCH_RUNTIMES[n] is None else Path(tmp) / f"model{BENCH_RUNTIMES[n]}" for n in names]
            runtimes = [
                load(t if isinstance(t, nn.Module) else export(loaded, t, example_inputs=batch.kwargs or batch.args))
                for t in targets
            ]
        for rt in runtimes:
            scores = evaluate(RuntimeModule(rt), splits.test, chosen) if chosen is not None and splits else {}
            stats = rt.bench(batch, sizes, threads)
            rows += [
                {
                    "runtime": rt.name,
                    "batch": bs,
                    "p50_ms": s.p50_ms,
                    "p90_ms": s.p90_ms,
                    "spread": s.spread,
                    "noisy": s.noisy,
                    "threads": rt.threads_used(threads),
                    "metrics": scores,
                }
                for bs, s in stats.items()
            ]
    if run.as_json:
        print(json.dumps(rows, indent=2))
    else:
        out.print(bench_table(rows, f"latency of {model} ({threads} thread{'s' if threads > 1 else ''})"))
