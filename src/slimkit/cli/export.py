"""``slimkit export`` and ``slimkit bench``: deploy a model to runtimes and time it on each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from slimkit.cli.common import (
    AsJson,
    BatchSizes,
    ModelSpec,
    Quiet,
    Threads,
    TrustPickle,
    Weights,
    app,
    out,
    parse_batch_sizes,
    progress,
)
from slimkit.core.errors import InvalidConfigError

FORMAT_SUFFIX = {"onnx": ".onnx", "pte": ".pte", "tflite": ".tflite", "pt2": ".pt2"}
BENCH_RUNTIMES = {"torch": None, "onnxruntime": ".onnx", "executorch": ".pte", "tflite": ".tflite"}


def _choices(text: str, valid: dict[str, Any], option: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return list(valid)
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise InvalidConfigError(f"{option} got {text!r}; valid: {', '.join(valid)} (comma-separated) or all")
    return list(dict.fromkeys(names))


@app.command("export")
def export_cmd(
    model: ModelSpec,
    to: Annotated[str, typer.Option("--to", help="Formats: onnx,pte,tflite,pt2 or all.")] = "onnx",
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for model.<format> files.")] = Path("export"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="int8 through each runtime's own static quantizer.")] = False,
    data: Annotated[str | None, typer.Option("--data", help="Calibration data spec for --int8.")] = None,
    weights: Weights = None,
    trust_pickle: TrustPickle = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Export a model to ONNX / ExecuTorch / TFLite, each verified in its own runtime.

    Examples:

        slimkit export example:digits-cnn --to onnx,pte,tflite --out deploy/

        slimkit export out/ --to onnx --int8 --data example:digits --out deploy/ --overwrite
    """
    import json

    from slimkit.cli.profile import example_data
    from slimkit.core.specs import load_data, load_model
    from slimkit.report import human_bytes
    from slimkit.runtime.export import export

    formats = _choices(to, FORMAT_SUFFIX, "--to")
    paths = [out_dir / f"model{FORMAT_SUFFIX[f]}" for f in formats]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise InvalidConfigError(f"{', '.join(existing)} exist already: pass --overwrite to replace them")
    loaded = load_model(model, weights=weights, trust_pickle=trust_pickle)
    data_spec = example_data(model, data) if int8 else data
    calibration = load_data(data_spec).calibration if data_spec else None
    written = []
    for path in paths:
        with progress(f"exporting {model} to {path}", quiet or as_json):
            written.append(
                export(loaded, path, overwrite=overwrite, quantize="int8" if int8 else None, data=calibration)
            )
    if as_json:
        print(json.dumps({str(p): p.stat().st_size for p in written}, indent=2))
        return
    for fmt, path in zip(formats, written, strict=True):
        out.print(f"{fmt:7s} {path}  {human_bytes(path.stat().st_size)}  (verified)")


def bench_table(rows: list[dict[str, Any]], title: str) -> Any:
    """One rich table: runtime x batch size, p50/p90 and the p50 ratio to torch eager."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("runtime", "batch", "p50 ms", "p90 ms", "vs torch eager"):
        table.add_column(col, justify="left" if col == "runtime" else "right")
    base = {r["batch"]: r["p50_ms"] for r in rows if r["runtime"] == "torch"}
    for r in rows:
        ratio = f"{r['p50_ms'] / base[r['batch']]:.2f}x" if r["batch"] in base else "-"  # no torch model to compare
        table.add_row(r["runtime"], str(r["batch"]), f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", ratio)
    return table


@app.command("bench")
def bench_cmd(
    model: ModelSpec,
    runtime: Annotated[
        str, typer.Option("--runtime", help="torch,onnxruntime,executorch,tflite or all.")
    ] = "torch,onnxruntime",
    batch_sizes: BatchSizes = "1,32",
    threads: Threads = None,
    weights: Weights = None,
    trust_pickle: TrustPickle = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Time a model on each runtime (exported and verified on the fly) at each batch size.

    Examples:

        slimkit bench example:digits-cnn --runtime all --batch-sizes 1,32

        slimkit bench model.onnx --batch-sizes 1,8
    """
    import json
    import tempfile

    from torch import nn

    from slimkit.core.specs import ARTIFACT_SUFFIXES, load_model
    from slimkit.measure.profile import example_batch
    from slimkit.runtime import load
    from slimkit.runtime.export import export

    sizes = parse_batch_sizes(batch_sizes)
    names = _choices(runtime, BENCH_RUNTIMES, "--runtime")
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="slimkit-bench-") as tmp,
        progress(f"benchmarking {model}", quiet or as_json),
    ):
        if Path(model).suffix in ARTIFACT_SUFFIXES:
            runtimes, batch = [load(model)], None
        else:
            loaded = load_model(model, weights=weights, trust_pickle=trust_pickle)
            batch = example_batch(loaded, None, None)
            targets = [loaded if BENCH_RUNTIMES[n] is None else Path(tmp) / f"model{BENCH_RUNTIMES[n]}" for n in names]
            runtimes = [load(t if isinstance(t, nn.Module) else export(loaded, t)) for t in targets]
        for rt in runtimes:
            stats = rt.bench(batch, sizes, threads)
            rows += [
                {"runtime": rt.name, "batch": bs, "p50_ms": s.p50_ms, "p90_ms": s.p90_ms} for bs, s in stats.items()
            ]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        out.print(bench_table(rows, f"latency of {model}" + (f" ({threads} threads)" if threads else "")))
