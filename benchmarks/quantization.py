"""slimkit quantization vs torch.ao and onnxruntime, side by side in one process.

    PYTHONPATH=src .venv/bin/python benchmarks/quantization.py [--quick] [--skip minilm digits scale]

MiniLM: fidelity (cosine of each sentence embedding to fp32) on held-out real sentences,
artifact size, batch-1 latency relative to fp32 on the same runtime (1 thread).
digits CNN: accuracy, artifact size, onnxruntime batch-1 latency; W4A8 PTQ vs QAT.
Scale: peak RSS while weight-only / GPTQ quantize a random-init >=100M-parameter BERT
(each in a subprocess).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import slimkit as sk
from slimkit.measure import fixed_threads, measure_latency

TMP = Path(tempfile.mkdtemp(prefix="skq-"))
console = Console(width=150)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def slimkit_bytes(model: torch.nn.Module, name: str) -> int:
    return dir_bytes(sk.save(model, TMP / name))


def torch_bytes(model: torch.nn.Module, name: str) -> int:
    torch.save(model.state_dict(), TMP / f"{name}.pt")
    return (TMP / f"{name}.pt").stat().st_size


def latency_ms(fn, rounds: int = 2) -> float:
    with torch.no_grad():
        return min(measure_latency(fn, warmup=5, min_runs=20, budget_s=1.5).p50_ms for _ in range(rounds))


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def show(title: str, columns: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)


# ----------------------------------------------------------------------------- MiniLM


def minilm(quick: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from torch.ao.quantization import per_channel_dynamic_qconfig
    from torch.ao.quantization import quantize_dynamic as ao_dynamic

    from slimkit.models.minilm import SentenceBatches, read_sentences, sentences_data

    splits = sentences_data()
    train = splits.train.sentences
    calib = SentenceBatches(train[:128], batch_size=16)
    held_out = splits.test.sentences + train[128:] + splits.calibration.sentences
    held_out = held_out[:500] if quick else held_out
    evals = list(SentenceBatches(held_out, batch_size=32))
    console.print(f"MiniLM: {len(read_sentences())} sentences; calibration 128 (train), eval {len(held_out)} held out")
    fp32 = sk.load("example:minilm")
    ids, mask = sk.models.minilm.example_inputs()
    with torch.no_grad():
        ref = torch.cat([fp32(**b) for b in evals])

    def fidelity(run) -> tuple[float, float]:
        with torch.no_grad():
            out = torch.cat([torch.as_tensor(run(b)) for b in evals])
        cos = torch.nn.functional.cosine_similarity(out.double(), ref.double(), dim=1)
        return float(cos.mean()), float(cos.min())

    rows = []
    with fixed_threads(1):
        base_ms = latency_ms(lambda: fp32(ids, mask))
        base_size = slimkit_bytes(fp32, "minilm-fp32")

        def add(name, run, size, ms, base):
            mean, low = fidelity(run)
            rows.append([name, f"{mean:.4f}", f"{low:.4f}", f"{size / 1e6:.1f}", f"{ms:.2f}", f"{ms / base:.2f}x"])

        add("fp32 (torch)", lambda b: fp32(**b), base_size, base_ms, base_ms)
        candidates = {
            "slimkit int8-dynamic (per-token activations, default)": lambda: sk.quantize(fp32, "int8-dynamic"),
            "slimkit int8-dynamic per-tensor activations": lambda: sk.quantize(
                fp32, "int8-dynamic", act_granularity="tensor"
            ),
            "slimkit smoothquant W8A8": lambda: sk.quantize(fp32, "smoothquant", data=calib, alpha=0.5),
            "slimkit weight-only 4b g128 (RTN)": lambda: sk.quantize(
                fp32, "weight-only", bits=4, granularity="group:128"
            ),
            "slimkit gptq 4b g128": lambda: sk.quantize(fp32, "gptq", data=calib, bits=4, granularity="group:128"),
            "slimkit gptq 4b g128 act-order": lambda: sk.quantize(
                fp32, "gptq", data=calib, bits=4, granularity="group:128", act_order=True
            ),
        }
        for name, make in candidates.items():
            t = time.perf_counter()
            q = make()
            console.print(f"  {name}: quantized in {time.perf_counter() - t:.1f}s")
            add(
                name,
                lambda b, q=q: q(**b),
                slimkit_bytes(q, name.replace(" ", "_")),
                latency_ms(lambda q=q: q(ids, mask)),
                base_ms,
            )
        for name, qconfig in (
            ("torch.ao quantize_dynamic (default)", None),
            ("torch.ao quantize_dynamic (per-channel)", per_channel_dynamic_qconfig),
        ):
            spec = {torch.nn.Linear: qconfig} if qconfig else {torch.nn.Linear}
            q = ao_dynamic(fp32, spec, dtype=torch.qint8)
            add(name, lambda b, q=q: q(**b), torch_bytes(q, name[:20]), latency_ms(lambda q=q: q(ids, mask)), base_ms)
        onnx_fp32 = TMP / "minilm.onnx"
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
        torch.onnx.export(
            fp32,
            (ids, mask),
            onnx_fp32,
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
            verbose=False,
        )
        onnx_int8 = TMP / "minilm-int8.onnx"
        quantize_dynamic(onnx_fp32, onnx_int8, per_channel=True, weight_type=QuantType.QInt8)
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        s32, s8 = ort_session(onnx_fp32), ort_session(onnx_int8)
        ort_base = latency_ms(lambda: s32.run(None, feed))
        for name, sess, path in (
            ("onnxruntime fp32", s32, onnx_fp32),
            ("onnxruntime quantize_dynamic (per-channel)", s8, onnx_int8),
        ):
            run = lambda b, s=sess: s.run(None, {k: v.numpy() for k, v in b.items()})[0]  # noqa: E731
            add(
                name,
                run,
                dir_bytes(path.parent / path.name)
                if path.is_dir()
                else path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".data")),
                latency_ms(lambda s=sess: s.run(None, feed)),
                ort_base,
            )
    show(
        "MiniLM (latency ratio vs fp32 on the same runtime, 1 thread, batch 1)",
        ["method", "mean cos", "min cos", "MB", "ms b1", "vs fp32"],
        rows,
    )


# ----------------------------------------------------------------------------- digits


def digits(quick: bool) -> None:
    import onnxruntime.quantization as oq
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from slimkit.measure import evaluate

    data = sk.load_data("example:digits")
    fp32 = sk.load("example:digits-cnn")
    x1 = data.test.x[:1]
    test_x, test_y = data.test.x, data.test.y

    def acc_torch(m):
        return 100 * evaluate(m, data.test, "accuracy")["accuracy"]

    def acc_ort(sess):
        name = sess.get_inputs()[0].name
        out = torch.cat([torch.as_tensor(sess.run(None, {name: b.numpy()})[0]) for b in test_x.split(64)])
        return 100 * float((out.argmax(1) == test_y).float().mean())

    rows: list[list[str]] = []
    with fixed_threads(1):
        onnx_fp32 = sk.export(fp32, TMP / "digits.onnx", example_inputs=(x1,))
        s32 = ort_session(onnx_fp32)
        name = s32.get_inputs()[0].name
        base_ms = latency_ms(lambda: s32.run(None, {name: x1.numpy()}))
        base_acc, base_size = acc_ort(s32), onnx_fp32.stat().st_size
        sk_fp32 = slimkit_bytes(fp32, "digits-fp32")

        def add(label, acc, size, base, ms):
            rows.append(
                [
                    label,
                    f"{acc:.2f}",
                    f"{acc - base_acc:+.2f}",
                    f"{size / 1e3:.0f}",
                    f"{size / base:.2f}x",
                    "" if ms is None else f"{ms / base_ms:.2f}x",
                ]
            )

        add("fp32 (onnxruntime)", base_acc, base_size, base_size, base_ms)
        q = sk.quantize(fp32, "int8-static", data=data.calibration)
        add("slimkit int8-static (torch / saved)", acc_torch(q), slimkit_bytes(q, "digits-int8"), sk_fp32, None)
        try:
            onnx_q = sk.export(q, TMP / "digits-sk-int8.onnx", example_inputs=(x1,))
        except sk.SlimkitError as exc:  # reported, not hidden: the QDQ export belongs to the runtime issue
            console.print(f"  [red]slimkit int8-static ONNX export failed:[/red] {exc}")
        else:
            sq = ort_session(onnx_q)
            add(
                "slimkit int8-static -> onnxruntime QDQ",
                acc_ort(sq),
                onnx_q.stat().st_size,
                base_size,
                latency_ms(lambda: sq.run(None, {name: x1.numpy()})),
            )

        class Reader(oq.CalibrationDataReader):
            def __init__(self):
                self.it = iter([{name: b.numpy()} for b in data.calibration.x.split(50)])

            def get_next(self):
                return next(self.it, None)

        for label, method in (("MinMax", oq.CalibrationMethod.MinMax), ("Percentile", oq.CalibrationMethod.Percentile)):
            out = TMP / f"digits-ort-{label}.onnx"
            oq.quantize_static(
                onnx_fp32, out, Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True, calibrate_method=method
            )
            s = ort_session(out)
            add(
                f"onnxruntime quantize_static ({label})",
                acc_ort(s),
                out.stat().st_size,
                base_size,
                latency_ms(lambda s=s: s.run(None, {name: x1.numpy()})),
            )
        prepared = prepare_fx(sk.load("example:digits-cnn").eval(), get_default_qconfig_mapping("x86"), (x1,))
        with torch.no_grad():
            for b in data.calibration.x.split(64):
                prepared(b)
        fx = convert_fx(prepared)
        add(
            "torch.ao FX x86 (torch)",
            acc_torch(fx),
            torch_bytes(fx, "digits-fx"),
            torch_bytes(fp32, "digits-fp32-sd"),
            None,
        )
        ptq = sk.quantize(fp32, "qat", data=data.train, bits=4, act_bits=8, finetune={"epochs": 0})
        add("slimkit W4A8 plain PTQ (torch / saved)", acc_torch(ptq), slimkit_bytes(ptq, "w4a8-ptq"), sk_fp32, None)
        t = time.perf_counter()
        qat = sk.quantize(fp32, "qat", data=data.train, bits=4, act_bits=8, finetune={"epochs": 1 if quick else 2})
        console.print(f"  QAT W4A8 trained in {time.perf_counter() - t:.0f}s")
        add("slimkit W4A8 QAT (torch / saved)", acc_torch(qat), slimkit_bytes(qat, "w4a8-qat"), sk_fp32, None)
    show(
        f"digits CNN ({len(test_y)} test images; size and latency ratios vs fp32 of the same format/runtime)",
        ["method", "acc %", "drop pt", "kB", "size", "ort b1 latency"],
        rows,
    )


# ----------------------------------------------------------------------------- scale

SCALE_CHILD = r"""
import sys, time, torch, transformers
import slimkit as sk
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key): return int(line.split()[1]) * 1024
def bert(hidden, layers, vocab=30522):
    heads = max(1, hidden // 64)
    cfg = transformers.BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, vocab_size=vocab,
    )
    return transformers.BertModel(cfg).eval()
def calib(vocab, n, seq):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, vocab, (4, seq), generator=g)} for _ in range(n)]
method, layers = sys.argv[1], int(sys.argv[2])
opts = dict(bits=4, granularity="group:128", inplace=True, device="cpu")
torch.set_num_threads(2)
# Warm-up: the first model built and quantized pays one-off costs that do not grow with the
# model (transformers' lazy imports of the BERT code, torch kernels paged in, thread pools).
sk.quantize(bert(128, 1, 100), method, data=calib(100, 1, 8), **opts)
data = calib(30522, 2, 128)
before = rss("VmRSS:")  # baseline: runtime warm, calibration batches built, no model
model = bert(1024, layers)
params = sum(p.numel() for p in model.parameters()); fp32 = params * 4
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM: the peak below is model + quantization
t = time.perf_counter()
q = sk.quantize(model, method, data=data, **opts)
sec = time.perf_counter() - t
print(params, fp32, before, rss("VmHWM:"), rss("VmRSS:"), sec)
"""


def scale_run(method: str, layers: int) -> list[str]:
    """One table row: ``method`` on a fresh random-init BERT, measured in its own process."""
    out = subprocess.run(
        [sys.executable, "-c", SCALE_CHILD, method, str(layers)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=True,
    )
    params, fp32, before, peak, end, sec = out.stdout.split()[-6:]
    params, fp32, before, peak, end = int(params), int(fp32), int(before), int(peak), int(end)
    return [
        method,
        f"{params / 1e6:.1f}M",
        f"{fp32 / 1e6:.0f}",
        f"{(peak - before) / 1e6:.0f} MB",
        f"{(peak - before) / fp32:.2f}x",
        f"{(end - before) / fp32:.2f}x",
        f"{float(sec):.0f}",
    ]


def scale(quick: bool) -> None:
    layers = 8
    show(
        f"Scale: 4-bit g128, layer by layer, inplace, random-init BERT (hidden 1024, {layers} layers), 2 CPU threads",
        ["method", "params", "fp32 MB", "peak RSS above baseline", "x fp32 model", "after, x fp32", "time s"],
        [scale_run(method, layers) for method in ("weight-only", "gptq")],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 eval sentences, 1 QAT epoch")
    parser.add_argument("--skip", nargs="*", default=[], choices=["minilm", "digits", "scale"])
    args = parser.parse_args()
    t = time.perf_counter()
    for section in (minilm, digits, scale):
        if section.__name__ not in args.skip:
            section(args.quick)
    console.print(f"total {time.perf_counter() - t:.0f}s")


if __name__ == "__main__":
    main()
