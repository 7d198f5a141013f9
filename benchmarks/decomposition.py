"""Decomposition benchmark: slimkit's factorized layers vs tensorly, and the end-to-end figures.

    PYTHONPATH=src .venv/bin/python benchmarks/decomposition.py [--quick]

1. Reconstruction error of each method vs tensorly's own decomposition at the same rank.
2. digits-cnn, Tucker-2 at >= 2x fewer MACs: accuracy before/after <= 3 fine-tuning
   epochs; latency ratio in PyTorch and onnxruntime.
3. MiniLM FFN SVD (30-50% fewer FFN weights): fidelity before/after embedding distillation.
4. TT-Linear on 4096x4096: compression, error (low-TT-rank and random weight), forward time.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import tensorly as tl
import torch
from rich.console import Console
from rich.table import Table
from tensorly.decomposition import parafac, partial_tucker, tensor_train_matrix
from torch import nn

import slimkit as sk
from slimkit.decomposition import CPConv, LowRankLinear, SpatialSVDConv, TTLinear, TuckerConv
from slimkit.decomposition.base import relative_error
from slimkit.distillation import finetune
from slimkit.measure import count_macs, count_params, evaluate, fixed_threads, measure_latency

console = Console(width=150)
FFN = ["encoder.encoder.layer.?.intermediate.dense", "encoder.encoder.layer.?.output.dense"]


def reconstruction_table() -> Table:
    """Relative Frobenius error of slimkit's layers vs tensorly's own decompositions."""
    digits = sk.load("example:digits-cnn")
    conv = digits.stages[2][0].conv2  # 96x96x3x3
    linear = sk.load("example:minilm").encoder.encoder.layer[0].intermediate.dense  # 1536x384
    w, lw = conv.weight.detach().double(), linear.weight.detach().double()
    table = Table(title="reconstruction error vs tensorly (same rank)")
    for col in ("method", "layer", "rank", "slimkit", "tensorly", "slimkit/tensorly"):
        table.add_column(col, justify="right")
    with tl.backend_context("pytorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tensorly: CP init rank above a mode size
        u, s, vh = tl.truncated_svd(lw, n_eigenvecs=96)
        m = w.permute(1, 2, 0, 3).reshape(96 * 3, 96 * 3)
        su, ss, svh = tl.truncated_svd(m, n_eigenvecs=48)
        (core, factors), _ = partial_tucker(w, [32, 32], modes=[0, 1], init="svd")
        cp = parafac(w, 64, init="svd", n_iter_max=300, tol=1e-10, random_state=0)
        tt = tensor_train_matrix(lw.reshape(16, 12, 8, 8, 8, 6), [1, 32, 32, 1])
        theirs = {
            "svd": relative_error(lw, u * s @ vh),
            "spatial-svd": relative_error(m, su * ss @ svh),
            "tucker": relative_error(w, tl.tenalg.multi_mode_dot(core, factors, modes=[0, 1])),
            "cp": relative_error(w, tl.cp_to_tensor(cp)),
            "tt": relative_error(lw, tl.tt_matrix_to_tensor(tt).reshape(lw.shape)),
        }
    tt_extra = {"in_factors": (8, 8, 6), "out_factors": (16, 12, 8)}
    ours = {
        "svd": ("FFN in 1536x384", 96, LowRankLinear.from_dense(linear, 96)),
        "spatial-svd": ("conv 96x96x3x3", 48, SpatialSVDConv.from_dense(conv, 48)),
        "tucker": ("conv 96x96x3x3", (32, 32), TuckerConv.from_dense(conv, (32, 32))),
        "cp": ("conv 96x96x3x3", 64, CPConv.from_dense(conv, 64)),
        "tt": ("FFN in 1536x384", (32, 32), TTLinear.from_dense(linear, (32, 32), **tt_extra)),
    }
    for method, (layer_name, rank, layer) in ours.items():
        dense = linear if method in ("svd", "tt") else conv
        mine = relative_error(dense.weight, layer.to_dense().weight)
        table.add_row(
            method, layer_name, str(rank), f"{mine:.4f}", f"{theirs[method]:.4f}", f"{mine / theirs[method]:.4f}"
        )
    return table


def onnx_latency(model: nn.Module, x: torch.Tensor, folder: Path, name: str) -> dict[int, float]:
    """p50 ms at batch 1 and 32 on onnxruntime, or an empty dict when export fails."""
    try:
        path = sk.export(model, folder / f"{name}.onnx", example_inputs=(x,))
        prof = sk.profile(path, example_inputs=(x,), batch_sizes=(1, 32), threads=1)
    except sk.SlimkitError as exc:  # reported, not hidden
        console.print(f"[yellow]onnx export/run of {name} failed: {exc}")
        return {}
    return {bs: lat.p50_ms for bs, lat in prof.latency.items()}


def digits_table(epochs: int) -> Table:
    """Tucker-2 on digits-cnn: MACs, accuracy before/after fine-tuning, latency ratios."""
    model, splits = sk.load("example:digits-cnn"), sk.load_data("example:digits")
    x = next(iter(splits.test))[0][:1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        decomposed = sk.decompose(model, "tucker", rank="macs:0.3", exclude="stem.*")
    tuned = finetune(decomposed, splits.train, epochs=epochs, eval_data=splits.calibration, metric="accuracy", lr=1e-3)
    acc = {
        n: evaluate(m, splits.test, "accuracy")["accuracy"]
        for n, m in [("dense", model), ("tucker", decomposed), ("tuned", tuned)]
    }
    before = sk.profile(model, example_inputs=(x,), batch_sizes=(1, 32), threads=1)
    after = sk.profile(tuned, example_inputs=(x,), batch_sizes=(1, 32), threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        ort_before, ort_after = onnx_latency(model, x, Path(tmp), "dense"), onnx_latency(tuned, x, Path(tmp), "tucker")
    table = Table(title=f"digits-cnn, Tucker-2 (rank macs:0.3), {epochs} fine-tuning epochs")
    for col in ("measure", "dense", "tucker", "tucker/dense"):
        table.add_column(col, justify="right")
    table.add_row("MACs (bs=1)", f"{before.macs:,}", f"{after.macs:,}", f"{after.macs / before.macs:.3f}")
    table.add_row("params", f"{before.params:,}", f"{after.params:,}", f"{after.params / before.params:.3f}")
    table.add_row(
        "test accuracy, no fine-tuning",
        f"{acc['dense']:.4f}",
        f"{acc['tucker']:.4f}",
        f"{acc['tucker'] - acc['dense']:+.4f}",
    )
    table.add_row(
        f"test accuracy, {epochs} epochs",
        f"{acc['dense']:.4f}",
        f"{acc['tuned']:.4f}",
        f"{acc['tuned'] - acc['dense']:+.4f}",
    )
    for bs in (1, 32):
        b, a = before.latency[bs].p50_ms, after.latency[bs].p50_ms
        table.add_row(f"PyTorch p50 bs={bs} (1 thread)", f"{b:.3f} ms", f"{a:.3f} ms", f"{a / b:.2f}")
        if bs in ort_before and bs in ort_after:
            b, a = ort_before[bs], ort_after[bs]
            table.add_row(f"onnxruntime p50 bs={bs} (1 thread)", f"{b:.3f} ms", f"{a:.3f} ms", f"{a / b:.2f}")
    return table


def minilm_table(epochs: int, rank: str) -> Table:
    """SVD of MiniLM's FFN layers: FFN weights kept, fidelity before/after embedding distillation."""
    model, splits = sk.load("example:minilm"), sk.load_data("example:sentences")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        decomposed = sk.decompose(model, "svd", rank=rank, include=FFN)
    ffn = sum(
        count_params(m)
        for n, m in model.named_modules()
        if n.endswith(("intermediate.dense", "output.dense")) and "attention" not in n
    )
    ffn_after = sum(
        count_params(m)
        for n, m in decomposed.named_modules()
        if n.endswith(("intermediate.dense", "output.dense")) and "attention" not in n
    )
    fid_before = evaluate(decomposed, splits.test, "fidelity", reference=model)
    tuned = finetune(decomposed, splits.train, epochs=epochs, teacher=model, distill="embedding", lr=1e-4)
    fid_after = evaluate(tuned, splits.test, "fidelity", reference=model)
    table = Table(
        title=f"MiniLM FFN SVD (rank {rank}), embedding distillation {epochs} epoch(s) on 737 train sentences"
    )
    for col in ("measure", "value"):
        table.add_column(col, justify="right")
    table.add_row("FFN weights kept", f"{ffn_after:,} / {ffn:,} = {ffn_after / ffn:.3f}")
    table.add_row("model params kept", f"{count_params(decomposed) / count_params(model):.3f}")
    table.add_row("cosine to original (300 test sentences), before distillation", f"{fid_before['cosine']:.4f}")
    table.add_row("cosine to original, after distillation", f"{fid_after['cosine']:.4f}")
    table.add_row("SQNR dB before / after", f"{fid_before['sqnr_db']:.2f} / {fid_after['sqnr_db']:.2f}")
    return table


def _time(layer: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), fixed_threads(1):
        return measure_latency(lambda: layer(x), budget_s=1.0).p50_ms


def tt_table(rank: int) -> Table:
    """TT-Linear on a 4096x4096 layer, structured (exact low TT-rank + 1% noise) and random weights."""
    factors = {"in_factors": (8,) * 4, "out_factors": (8,) * 4}
    g = torch.Generator().manual_seed(0)
    source = TTLinear.empty_like(nn.Linear(4096, 4096), (rank,) * 3, **factors)
    with torch.no_grad():
        for core in source.cores:
            core.copy_(torch.randn(core.shape, generator=g))
    structured = source.to_dense().weight.detach()
    structured = structured / structured.std()
    structured += 0.01 * torch.randn(structured.shape, generator=g)
    table = Table(title=f"TT-Linear 4096x4096, 4 cores 8x8, TT-rank {rank}")
    for col in ("weight", "compression", "relative error", "MACs ratio", "TT/dense time bs=1", "TT/dense time bs=64"):
        table.add_column(col, justify="right")
    for name, weight in [
        ("low TT-rank + 1% noise", structured),
        ("random (Gaussian)", torch.randn(4096, 4096, generator=g) / 64),
    ]:
        dense = nn.Linear(4096, 4096)
        with torch.no_grad():
            dense.weight.copy_(weight)
        layer = TTLinear.from_dense(dense, (rank,) * 3, **factors)
        error = relative_error(weight, layer.to_dense().weight)
        x1, x64 = torch.randn(1, 4096), torch.randn(64, 4096)
        macs = count_macs(layer, (x1,)).total / count_macs(dense, (x1,)).total
        times = [_time(layer, x) / _time(dense, x) for x in (x1, x64)]
        compression = dense.weight.numel() / sum(c.numel() for c in layer.cores)
        table.add_row(name, f"{compression:.0f}x", f"{error:.4f}", f"{macs:.4f}", f"{times[0]:.2f}", f"{times[1]:.2f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 digits epoch, no MiniLM distillation epoch beyond 1")
    args = parser.parse_args()
    console.print(reconstruction_table())
    console.print(tt_table(16))
    console.print(digits_table(1 if args.quick else 3))
    console.print(minilm_table(1, "params:0.6"))


if __name__ == "__main__":
    main()
