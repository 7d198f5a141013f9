"""Deployment benchmark: one model, exported to each runtime, verified and timed side by side.

For the digits CNN and MiniLM, fp32 and int8, across torch / onnxruntime / ExecuTorch /
TFLite: parity (fp32 SQNR against PyTorch, int8 against slimkit's own int8 model where
slimkit quantized it), artifact size, batch-1 and batch-32 p50 latency as a ratio to torch
eager, and the fastest runtime. int8 on torch and ONNX is slimkit's own int8 model (digits:
``int8-static``, exported as QDQ; MiniLM: ``int8-dynamic`` with per-token activations,
exported as DynamicQuantizeLinear + MatMulInteger); every artifact runtime also runs its own
int8 quantizer on the float model (labelled "own int8": static for digits, dynamic for MiniLM;
for onnxruntime that is its ``quantize_static`` / ``quantize_dynamic``), so slimkit's int8 graph
is timed next to the runtime's own in one process. MiniLM's slimkit int8 is the recipe in
`INT8_OPTIONS`: per-tensor 8-bit activations over pair-bounded weights (onnxruntime's fused
``DynamicQuantizeMatMul``), the feed-forward layers' inputs smoothed on the calibration data.
After the table, each int8-dynamic model is compared with onnxruntime's ``quantize_dynamic``
side by side, applied to ``torch.onnx.export``'s graph (onnxruntime's own flow) and to slimkit's
fp32 export: mean / min cosine to the fp32 model over the test samples, each at batch 1, and
the batch-1 p50 at 1 thread, the three runs interleaved (order alternating) over `SIDE_ROUNDS`
rounds, their ratios per round, medians reported.

    PYTHONPATH=src .venv/bin/python benchmarks/deployment.py [--quick] [--models digits,minilm]
    PYTHONPATH=src .venv/bin/python benchmarks/deployment.py --int8-vs-ort

``--int8-vs-ort``: slimkit's ``int8-static`` QDQ graph beside onnxruntime's own ``quantize_static``
of the same float model, on the digits CNN and torchvision's resnet18 (1-channel 3x3 stem,
digits at 32x32), p50 at batch 1 with 1 thread, the runs interleaved (median of 7 rounds), and
the test accuracy of each artifact.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

import slimkit as sk
from slimkit.core.data import resize_batch
from slimkit.core.formats import artifact_of
from slimkit.core.samples import example_batch
from slimkit.runtime import load
from slimkit.runtime.verify import parity

MODELS = {
    "digits": ("example:digits-cnn", "example:digits", "int8-static", "int8"),
    "minilm": ("example:minilm", "example:sentences", "int8-dynamic", "int8-dynamic"),
}
"""name -> (model, data, slimkit int8 method, the other runtimes' own int8 mode)."""
FFN_SMOOTHING = 0.8
"""SmoothQuant α of MiniLM's feed-forward inputs (calibration-set choice, see docs/quantization.md)."""
_PER_TENSOR = {"act_granularity": "tensor", "pair_bounded": True}
_SMOOTHED = {"method": "smoothquant", "alpha": FFN_SMOOTHING, **_PER_TENSOR}
INT8_OPTIONS = {
    "minilm": {**_PER_TENSOR, "overrides": {"*.intermediate.dense": _SMOOTHED, "*.layer.?.output.dense": _SMOOTHED}},
}
"""slimkit's int8 options per model (a recipe, by module-name pattern)."""
SIDE_ROUNDS = 15


def _rows(name: str, runtimes: list[str], sizes: tuple[int, ...], threads: int, tmp: Path) -> list[dict]:
    spec, data_spec, method, own = MODELS[name]
    model, data = sk.load(spec), sk.load_data(data_spec)
    batch = resize_batch(example_batch(model, None, data.test), 1)
    int8 = sk.quantize(model, method, data=data.calibration, **INT8_OPTIONS.get(name, {}))
    rows = []
    own_options = {"quantize": own, "data": data.calibration}
    for precision in ("fp32", "int8"):
        variants = [
            (runtime, runtime, model if precision == "fp32" else int8, {})
            for runtime in runtimes
            if precision == "fp32" or runtime in ("torch", "onnxruntime")  # slimkit's own int8 model runs here
        ]
        if precision == "int8":  # each runtime's own quantizer, side by side with slimkit's int8 model
            variants += [(f"{r} (own int8)", r, model, own_options) for r in runtimes if r != "torch"]
        for label, runtime, source, options in variants:
            if runtime == "torch":
                rt, size = load(source), None
            else:
                try:
                    path = sk.export(
                        source,
                        tmp / f"{name}-{precision}-{'own' if options else 'slimkit'}{artifact_of(runtime).suffix}",
                        example_inputs=batch.kwargs or batch.args,
                        **options,
                    )
                except Exception as exc:  # noqa: BLE001 -- any export failure is reported, the other rows still run
                    print(f"  {name} {precision} {label}: FAILED: {exc}", flush=True)
                    rows.append({"model": name, "precision": precision, "runtime": label, "failed": str(exc)})
                    continue
                rt, size = load(path), path.stat().st_size
            reference = int8 if precision == "int8" and "own" not in label else model
            check = parity(rt, reference, batch, (1, 4))
            rounds = [rt.bench(batch, sizes, threads=threads, budget_s=0.5) for _ in range(3)]
            lat = {b: min((r[b] for r in rounds), key=lambda t: t.p50_ms) for b in sizes}  # least-disturbed round
            rows.append(
                {
                    "model": name,
                    "precision": precision,
                    "runtime": label,
                    "sqnr": check.sqnr_db,
                    "size": size,
                    **{f"bs{b}": lat[b].p50_ms for b in sizes},
                }
            )
            print(f"  {name} {precision} {label}: done", flush=True)
    return rows


def _table(rows: list[dict], sizes: tuple[int, ...]) -> Table:
    table = Table(title="deployment: parity, size, p50 latency (ratio to fp32 torch eager of the same model)")
    for col in ("model", "precision", "runtime", "SQNR dB", "size KiB", *(f"bs{b} ms (x eager)" for b in sizes)):
        table.add_column(col, justify="left" if col in ("model", "precision", "runtime") else "right")
    for r in rows:
        if "failed" in r:
            table.add_row(
                r["model"], r["precision"], r["runtime"], "export failed (see log)", "-", *("-" for _ in sizes)
            )
            continue
        base = next(
            x for x in rows if x["model"] == r["model"] and x["runtime"] == "torch" and x["precision"] == "fp32"
        )
        cells = [f"{r[f'bs{b}']:.3f} ({r[f'bs{b}'] / base[f'bs{b}']:.2f}x)" for b in sizes]
        size = "-" if r["size"] is None else f"{r['size'] / 1024:.0f}"
        table.add_row(r["model"], r["precision"], r["runtime"], f"{r['sqnr']:.1f}", size, *cells)
    return table


def _digits_resnet18():
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "zoo"))
    from torchvision_shim import import_torchvision

    torch.manual_seed(0)
    model = import_torchvision().models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    return model.eval()


def _artifact_accuracy(runtime, data) -> float:
    import torch

    from slimkit.core.data import iter_batches

    hits = total = 0
    for batch in iter_batches(data, "cpu"):
        out = runtime.run_batch(batch)
        logits = torch.as_tensor(out[0] if isinstance(out, (list, tuple)) else out)
        hits += int((logits.argmax(-1) == batch.target).sum())
        total += len(batch.target)
    return hits / total


def int8_vs_ort(tmp: Path, rounds: int = 7) -> Table:
    """slimkit int8-static (QDQ) vs onnxruntime's quantize_static, interleaved, batch 1, 1 thread."""
    import statistics

    data = sk.load_data("example:digits")
    table = Table(title="int8 on onnxruntime: slimkit int8-static QDQ vs onnxruntime quantize_static (bs1, 1 thread)")
    for column in ("model", "artifact", "p50 ms (median of 7)", "x fp32 onnxruntime", "test accuracy"):
        table.add_column(column)
    for name, model in (("digits-cnn", sk.load("example:digits-cnn")), ("resnet18", _digits_resnet18())):
        int8 = sk.quantize(model, "int8-static", data=data.calibration)
        paths = {
            "fp32": sk.export(model, tmp / f"{name}-fp32.onnx", data=data.test),
            "slimkit int8-static": sk.export(int8, tmp / f"{name}-slimkit.onnx", data=data.test),
            "onnxruntime quantize_static": sk.export(
                model, tmp / f"{name}-ort.onnx", data=data.calibration, quantize="int8"
            ),
        }
        batch = resize_batch(example_batch(model, None, data.test), 1)
        runtimes = {label: load(path) for label, path in paths.items()}
        times = {label: [] for label in runtimes}
        for _ in range(rounds):
            for label, runtime in runtimes.items():
                times[label].append(runtime.bench(batch, (1,), threads=1, budget_s=0.5)[1].p50_ms)
        p50 = {label: statistics.median(values) for label, values in times.items()}
        for label, runtime in runtimes.items():
            accuracy = _artifact_accuracy(runtime, data.test)
            table.add_row(name, label, f"{p50[label]:.3f}", f"{p50[label] / p50['fp32']:.3f}x", f"{accuracy:.4f}")
    return table


def _single_samples(data):
    """``data`` one sample a batch (sentences re-tokenized alone, so without padding)."""
    from slimkit.core.data import iter_batches
    from slimkit.models.minilm import SentenceBatches

    if isinstance(data, SentenceBatches):
        yield from iter_batches(SentenceBatches(data.sentences, batch_size=1, max_length=data.max_length))
        return
    from slimkit.core.data import Batch

    def row(t, i):
        return t[i : i + 1] if t.dim() else t

    for batch in iter_batches(data):
        for i in range(batch.size):
            yield Batch(tuple(row(a, i) for a in batch.args), {k: row(v, i) for k, v in batch.kwargs.items()})


def _cosines(runtime, model, samples) -> tuple[float, float]:
    """Mean and min cosine between ``runtime``'s and ``model``'s flattened outputs, per sample."""
    import torch

    from slimkit.core.data import run_model
    from slimkit.runtime.inputs import flat_outputs

    values = []
    with torch.no_grad():
        for batch in samples:
            ref = torch.cat([t.float().flatten() for t in flat_outputs(run_model(model, batch))])
            out = torch.cat([torch.as_tensor(t).float().flatten() for t in flat_outputs(runtime.run_batch(batch))])
            values.append(float(torch.nn.functional.cosine_similarity(ref, out, dim=0)))
    return sum(values) / len(values), min(values)


def _onnxruntime_flow(model, inputs: dict, tmp: Path) -> Path:
    """onnxruntime's own flow for ``model`` (keyword ``inputs`` of shape ``[batch, sequence]``):
    ``torch.onnx.export``'s graph (dynamo, both axes dynamic), then ``quantize_dynamic`` with the
    options ``sk.export`` passes it."""
    import torch

    from slimkit.core.data import Batch
    from slimkit.runtime.onnx_export import OPSET, quantize_with_onnxruntime

    dims = {name: {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")} for name in inputs}
    fp32, path = tmp / "torch-fp32.onnx", tmp / "torch-own.onnx"
    program = torch.onnx.export(
        model,
        (),
        kwargs=dict(inputs),
        dynamo=True,
        opset_version=OPSET,
        dynamic_shapes=dims,
        optimize=True,
        verbose=False,
    )
    program.save(str(fp32))
    quantize_with_onnxruntime(fp32, path, "int8-dynamic", model, Batch((), dict(inputs)))
    return path


OWN = "onnxruntime quantize_dynamic of torch.onnx.export's graph"
OWN_ON_SLIMKIT = "onnxruntime quantize_dynamic of slimkit's fp32 graph"


def dynamic_vs_own(name: str, tmp: Path, rounds: int = SIDE_ROUNDS) -> Table:
    """slimkit int8-dynamic vs onnxruntime quantize_dynamic on ONNX: cosine and interleaved bs1
    latency. onnxruntime's own is timed twice: on the graph ``torch.onnx.export`` writes
    (onnxruntime's documented flow) and on slimkit's fp32 export (``sk.export(...,
    quantize="int8-dynamic")``), which has slimkit's graph rewrites for every precision."""
    import statistics

    spec, data_spec, method, _ = MODELS[name]
    model, data = sk.load(spec), sk.load_data(data_spec)
    batch = resize_batch(example_batch(model, None, data.test), 1)
    int8 = sk.quantize(model, method, data=data.calibration, **INT8_OPTIONS.get(name, {}))
    inputs = batch.kwargs or batch.args
    paths = {
        f"slimkit {method}": sk.export(int8, tmp / f"{name}-side-slimkit.onnx", example_inputs=inputs),
        OWN: _onnxruntime_flow(model, batch.kwargs, tmp),
        OWN_ON_SLIMKIT: sk.export(model, tmp / f"{name}-side-own.onnx", example_inputs=inputs, quantize="int8-dynamic"),
    }
    runtimes = {label: load(path) for label, path in paths.items()}
    samples = list(_single_samples(data.test))
    cosines = {label: _cosines(rt, model, samples) for label, rt in runtimes.items()}
    times = {label: [] for label in runtimes}
    for r in range(rounds):
        for label in list(runtimes)[:: 1 if r % 2 == 0 else -1]:
            times[label].append(runtimes[label].bench(batch, (1,), threads=1, budget_s=0.5)[1].p50_ms)
    table = Table(title=f"{name} int8-dynamic on onnxruntime, bs1, 1 thread ({rounds} interleaved rounds)")
    owns = {OWN: "÷ own (torch.onnx.export)", OWN_ON_SLIMKIT: "÷ own (slimkit's fp32)"}
    for column in ("artifact", f"cosine to fp32, mean / min ({len(samples)} samples)", "p50 ms", *owns.values()):
        table.add_column(column)
    for label, values in times.items():
        mean, low = cosines[label]
        cells = [f"{statistics.median(a / b for a, b in zip(values, times[own], strict=True)):.3f}" for own in owns]
        table.add_row(label, f"{mean:.5f} / {low:.5f}", f"{statistics.median(values):.3f}", *cells)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="digits only, torch and onnxruntime")
    parser.add_argument("--models", default="digits,minilm")
    parser.add_argument("--runtimes", default="torch,onnxruntime,executorch,tflite")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--int8-vs-ort", action="store_true", help="only slimkit int8 vs onnxruntime's own")
    args = parser.parse_args()
    if args.int8_vs_ort:
        warnings.filterwarnings("ignore")
        with tempfile.TemporaryDirectory(prefix="slimkit-deploy-") as tmp:
            Console().print(int8_vs_ort(Path(tmp)))
        return
    models = ["digits"] if args.quick else args.models.split(",")
    runtimes = ["torch", "onnxruntime"] if args.quick else args.runtimes.split(",")
    sizes = (1, 32)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="slimkit-deploy-") as tmp:
        rows = [row for name in models for row in _rows(name, runtimes, sizes, args.threads, Path(tmp))]
    console = Console()
    console.print(_table(rows, sizes))
    with tempfile.TemporaryDirectory(prefix="slimkit-deploy-") as tmp:
        for name in models:
            if MODELS[name][2] == "int8-dynamic" and "onnxruntime" in runtimes:
                console.print(dynamic_vs_own(name, Path(tmp)))
    for name in models:
        mine = [r for r in rows if r["model"] == name and "failed" not in r]
        for b in sizes:
            best = min(mine, key=lambda r: r[f"bs{b}"])
            console.print(f"{name}: fastest at batch {b}: {best['runtime']} {best['precision']}")
        f32 = next((r for r in mine if r["runtime"] == "onnxruntime" and r["precision"] == "fp32"), None)
        i8 = next((r for r in mine if r["runtime"] == "onnxruntime" and r["precision"] == "int8"), None)
        if f32 and i8:
            speedup = f32["bs1"] / i8["bs1"]
            verdict = "met" if speedup >= 1.3 else "NOT met"
            console.print(f"{name}: onnxruntime int8 vs fp32 at batch 1: {speedup:.2f}x (target >= 1.3x: {verdict})")


if __name__ == "__main__":
    main()
