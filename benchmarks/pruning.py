"""Pruning benchmark: slimkit vs Torch-Pruning (and torch.nn.utils.prune), side by side.

    PYTHONPATH=src .venv/bin/python benchmarks/pruning.py [--quick]

1. digits-cnn, 50% of channels: MACs/params, accuracy after the same fine-tuning epochs
   (slimkit vs Torch-Pruning's MetaPruner + MagnitudeImportance, same ratio), and latency
   ratios at batch 1 and 32 in PyTorch and onnxruntime (1 thread).
2. digits-cnn, 90% unstructured with the gradual (cubic) schedule vs one-shot
   torch.nn.utils.prune with the same epochs: accuracy and artifact size.
3. MiniLM: 25% of heads + 50% of FFN neurons, before any fine-tuning: params, MACs,
   latency, fidelity; saved, loaded and run as a transformers model.
4. ``--only minilm-distill``: the same pruning by slimkit (ranked by ``activation``, each
   channel's measured contribution on the transfer sentences, and by L1 magnitude) and by
   Torch-Pruning (MetaPruner, L1, head pruning), each distilled back from the original with
   the same trainer, data, loss and epochs: cosine to the original on the held-out sentences
   and batch-1 latency.
5. ``--only cnn-zoo``: ``channels`` 0.5 on torchvision's vision zoo (and a CNN with
   BatchNorm+activation layers), params and MACs next to Torch-Pruning's (`pruning_cnn_zoo`).
6. ``--only resnet18-digits``: torchvision's resnet18 (1-channel 3x3 stem) trained briefly on
   the digits at 32x32, then 50% of channels by slimkit and by Torch-Pruning (L1, the same
   ratio), each fine-tuned with the same trainer and epochs: MACs and test accuracy.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import slimkit as sk
from slimkit.distillation import finetune
from slimkit.measure import count_macs, count_params, evaluate

THREADS = 1
console = Console(width=160)


def accuracy(model, data) -> float:
    return evaluate(model, data, "accuracy")["accuracy"]


def latencies(model, x, tmp: Path, onnx: bool = True) -> dict[str, float]:
    """p50 ms at batch 1 and 32, in PyTorch and (optionally) onnxruntime."""
    result = {}
    torch_rt = sk.runtime.load(model.eval(), x)
    for bs, lat in torch_rt.bench(batch_sizes=(1, 32), threads=THREADS, budget_s=1.0).items():
        result[f"torch bs{bs}"] = lat.p50_ms
    if onnx:
        path = sk.export(model, tmp / f"m{time.monotonic_ns()}.onnx", example_inputs=x)
        ort = sk.runtime.load(path, x, threads=THREADS)
        for bs, lat in ort.bench(batch_sizes=(1, 32), threads=THREADS, budget_s=1.0).items():
            result[f"ort bs{bs}"] = lat.p50_ms
    return result


def tp_prune(model, x, ratio):
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio, ignored_layers=[model.fc]
    )
    pruner.step()
    return model


def ratio_cells(row, base, keys):
    return [f"{row[k] / base[k]:.2f}x" for k in keys]


def channels_benchmark(epochs: int, tmp: Path) -> None:
    splits = sk.load_data("example:digits")
    original = sk.load("example:digits-cnn")
    x = (torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)),)
    base = {
        "macs": count_macs(original, x).total,
        "params": count_params(original),
        "acc": accuracy(original, splits.test),
    }
    base.update(latencies(original, x, tmp))
    candidates = {
        "slimkit channels (L1)": lambda: sk.prune(original, "channels", ratio=0.5, example_inputs=x),
        "Torch-Pruning MetaPruner (L1)": lambda: tp_prune(copy.deepcopy(original), x, 0.5),
    }
    rows = []
    for name, make in candidates.items():
        pruned = make().eval()
        row = {"name": name, "macs": count_macs(pruned, x).total, "params": count_params(pruned)}
        row["acc0"] = accuracy(pruned, splits.test)
        tuned = finetune(pruned, splits.train, epochs=epochs, lr=1e-3, seed=0).eval()
        row["acc"] = accuracy(tuned, splits.test)
        if name.startswith("slimkit"):
            kd = finetune(copy.deepcopy(pruned), splits.train, epochs=epochs, teacher=original, lr=1e-3, seed=0)
            row["acc_kd"] = accuracy(kd.eval(), splits.test)
        row.update(latencies(tuned, x, tmp))
        rows.append(row)
    lat_keys = ["torch bs1", "torch bs32", "ort bs1", "ort bs32"]
    table = Table(title=f"digits-cnn, 50% channels, {epochs} fine-tuning epochs (latency: p50 ratio, {THREADS} thread)")
    for col in ["method", "MACs", "params", "acc pruned", f"acc +{epochs} ep", "acc +KD", *lat_keys]:
        table.add_column(col, justify="right")
    table.add_row("original", "1.00x", "1.00x", f"{base['acc']:.4f}", "", "", *["1.00x"] * 4)
    for row in rows:
        table.add_row(
            row["name"], *ratio_cells(row, base, ["macs", "params"]), f"{row['acc0']:.4f}", f"{row['acc']:.4f}",
            f"{row['acc_kd']:.4f}" if "acc_kd" in row else "-", *ratio_cells(row, base, lat_keys),
        )  # fmt: skip
    console.print(table)
    console.print("original latency ms: " + ", ".join(f"{k} {base[k]:.3f}" for k in lat_keys))


def digits_resnet18():
    """torchvision's resnet18 for 1x32x32 digits: a 3x3 stride-1 stem, 10 classes."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "zoo"))
    from torchvision_shim import import_torchvision

    torchvision = import_torchvision()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    return model


def resnet18_digits_benchmark(epochs: int) -> None:
    """slimkit vs Torch-Pruning on a briefly trained resnet18: equal ratio, equal fine-tuning."""
    splits = sk.load_data("example:digits")
    x = (torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)),)
    original = finetune(digits_resnet18(), splits.train, epochs=epochs, lr=1e-3, seed=0).eval()
    base = {"macs": count_macs(original, x).total, "acc": accuracy(original, splits.test)}
    candidates = {
        "slimkit channels (L1)": lambda: sk.prune(original, "channels", ratio=0.5, example_inputs=x),
        "slimkit channels (L1) + BN adaptation": lambda: sk.prune(
            original, "channels", ratio=0.5, data=splits.calibration
        ),
        "Torch-Pruning MetaPruner (L1)": lambda: tp_prune(copy.deepcopy(original), x, 0.5),
    }
    title = f"resnet18 on digits 32x32 ({epochs} training epochs), 50% channels, {epochs} fine-tuning epochs"
    table = Table(title=title)
    for col in ["method", "MACs", "acc pruned", f"acc +{epochs} ep"]:
        table.add_column(col, justify="right")
    table.add_row("original", "1.000x", f"{base['acc']:.4f}", "")
    for name, make in candidates.items():
        pruned = make().eval()
        tuned = finetune(copy.deepcopy(pruned), splits.train, epochs=epochs, lr=1e-3, seed=0).eval()
        macs = count_macs(pruned, x).total / base["macs"]
        before, after = accuracy(pruned, splits.test), accuracy(tuned, splits.test)
        table.add_row(name, f"{macs:.3f}x", f"{before:.4f}", f"{after:.4f}")
    console.print(table)


def weights_bytes(model, tmp: Path) -> int:
    folder = sk.save(model, tmp / f"s{time.monotonic_ns()}", source=sk.get_record(model).source or "example:digits-cnn")
    return (folder / "model.safetensors").stat().st_size


def gradual_benchmark(steps: int, final_epochs: int, tmp: Path) -> None:
    from torch.nn.utils import prune as torch_prune

    splits = sk.load_data("example:digits")
    original = sk.load("example:digits-cnn")
    base_acc, base_bytes = accuracy(original, splits.test), weights_bytes(original, tmp)
    sparse = sk.prune(
        original, "gradual", data=splits.train, ratio=0.9, steps=steps, finetune={"epochs": 1},
        final_epochs=final_epochs, distill=True, lr=5e-4,
    )  # fmt: skip
    oneshot = copy.deepcopy(original)
    layers = [(m, "weight") for m in oneshot.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    torch_prune.global_unstructured(layers, pruning_method=torch_prune.L1Unstructured, amount=0.9)
    oneshot = finetune(oneshot, splits.train, epochs=steps + final_epochs, lr=5e-4, seed=0).eval()
    for module, name in layers:
        torch_prune.remove(module, name)
    table = Table(title=f"digits-cnn, 90% unstructured ({steps + final_epochs} fine-tuning epochs)")
    for col in ["method", "sparsity", "accuracy", "drop (pt)", "artifact"]:
        table.add_column(col, justify="right")
    table.add_row("original", "0.00", f"{base_acc:.4f}", "", "1.00x")
    for name, model in [("slimkit gradual (cubic, KD)", sparse), ("torch.nn.utils.prune one-shot", oneshot)]:
        acc = accuracy(model, splits.test)
        table.add_row(
            name, f"{sk.pruning.sparsity_of(model):.3f}", f"{acc:.4f}", f"{100 * (base_acc - acc):.2f}",
            f"{weights_bytes(model, tmp) / base_bytes:.3f}x",
        )  # fmt: skip
    console.print(table)
    console.print(f"slimkit schedule: {sk.explain(sparse).details['schedule']}")


def minilm_benchmark(tmp: Path) -> None:
    from slimkit.models.minilm import example_inputs

    splits = sk.load_data("example:sentences")
    original = sk.load("example:minilm")
    x = example_inputs()
    pruned = sk.prune(sk.prune(original, "heads", ratio=0.25), "neurons", ratio=0.5)
    base = {"macs": count_macs(original, x).total, "params": count_params(original)}
    base.update(latencies(original, x, tmp, onnx=False))
    row = {"macs": count_macs(pruned, x).total, "params": count_params(pruned)}
    row.update(latencies(pruned, x, tmp, onnx=False))
    fidelity = evaluate(pruned, splits.test, "fidelity", reference=original)
    folder = sk.save(pruned, tmp / "minilm")
    loaded = sk.load(folder)
    same = torch.equal(loaded(*x), pruned(*x))
    hidden = loaded.encoder(input_ids=x[0], attention_mask=x[1]).last_hidden_state
    table = Table(title="MiniLM: 25% heads + 50% FFN neurons removed, no fine-tuning")
    for col in ["params", "MACs", "torch bs1", "torch bs32", "cosine", "SQNR dB", "save->load identical"]:
        table.add_column(col, justify="right")
    table.add_row(
        *ratio_cells(row, base, ["params", "macs", "torch bs1", "torch bs32"]), f"{fidelity['cosine']:.4f}",
        f"{fidelity['sqnr_db']:.1f}", str(same),
    )  # fmt: skip
    console.print(table)
    layer = loaded.encoder.encoder.layer[0]
    console.print(
        f"{type(loaded.encoder).__name__} runs: hidden {tuple(hidden.shape)}, heads/layer "
        f"{layer.attention.self.num_attention_heads}, FFN {layer.intermediate.dense.out_features}"
    )


def tp_prune_minilm(original, x):
    """Torch-Pruning's MetaPruner on MiniLM: 25% of heads (whole heads) and 50% of FFN neurons."""
    import torch_pruning as tp

    model = copy.deepcopy(original)
    bert = model.encoder
    heads, ratios = {}, {}
    for layer in bert.encoder.layer:
        attention = layer.attention.self
        heads.update(dict.fromkeys((attention.query, attention.key, attention.value), attention.num_attention_heads))
        ratios[(attention.query, attention.key, attention.value)] = 0.25
        ratios[layer.intermediate.dense] = 0.5
    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.0, pruning_ratio_dict=ratios,
        num_heads=heads, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.25,
        ignored_layers=[bert.pooler] if bert.pooler is not None else [], output_transform=lambda out: out.sum(),
    )  # fmt: skip
    pruner.step()
    for layer in bert.encoder.layer:  # Torch-Pruning leaves the head counts to the user
        attention = layer.attention.self
        attention.num_attention_heads = attention.query.out_features // attention.attention_head_size
        attention.all_head_size = attention.query.out_features
    return model


def distill_back(pruned, original, transfer, epochs: int):
    """Distil ``pruned`` from ``original``: embedding cosine + every layer's hidden states."""
    from slimkit.distillation import Combined, Embedding, Hints

    names = [f"encoder.encoder.layer.{i}" for i in range(len(pruned.encoder.encoder.layer))]
    layers = dict(zip(names, names, strict=True))
    loss = Combined(embedding=Embedding(loss="cosine"), hint=Hints(layers=layers, adapter=False, weight=10.0))
    pruned.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    return finetune(
        pruned, transfer, epochs=epochs, teacher=original, distill=loss, lr=1e-3, warmup_steps=20, cache_teacher=True
    )


def minilm_distill_benchmark(epochs: int) -> None:
    from slimkit.measure import fixed_threads, measure_latency
    from slimkit.models.docstrings import docstring_sentences
    from slimkit.models.minilm import SentenceBatches, example_inputs

    splits = sk.load_data("example:sentences")
    original = sk.load("example:minilm")
    x = example_inputs()
    transfer = SentenceBatches(splits.train.sentences + docstring_sentences(), batch_size=64, group_by_length=True)
    def slimkit_prune(importance: str):
        data = {"data": transfer} if importance != "l1" else {}
        heads = sk.prune(original, "heads", ratio=0.25, importance=importance, **data)
        return sk.prune(heads, "neurons", ratio=0.5, importance=importance, **data)

    candidates = {
        "slimkit heads 0.25 + neurons 0.5 (activation)": lambda: slimkit_prune("activation"),
        "slimkit heads 0.25 + neurons 0.5 (L1)": lambda: slimkit_prune("l1"),
        "Torch-Pruning MetaPruner (L1, heads)": lambda: tp_prune_minilm(original, x),
    }
    with torch.no_grad(), fixed_threads(THREADS):
        base = measure_latency(lambda: original(*x), budget_s=2.0, min_runs=30).p50_ms
    table = Table(title=f"MiniLM: 25% heads + 50% FFN neurons, then {epochs} epochs distilled from the original")
    for col in ["method", "params", "MACs", "cosine pruned", f"cosine +{epochs} ep", "torch bs1", "minutes"]:
        table.add_column(col, justify="right")
    base_macs, base_params = count_macs(original, x).total, count_params(original)
    for name, make in candidates.items():
        start = time.perf_counter()
        pruned = make().eval()
        before = evaluate(pruned, splits.test, "fidelity", reference=original)["cosine"]
        tuned = distill_back(pruned, original, transfer, epochs).eval()
        after = evaluate(tuned, splits.test, "fidelity", reference=original)["cosine"]
        with torch.no_grad(), fixed_threads(THREADS):
            lat = measure_latency(lambda m=tuned: m(*x), budget_s=2.0, min_runs=30).p50_ms
        table.add_row(
            name, f"{count_params(tuned) / base_params:.2f}x", f"{count_macs(tuned, x).total / base_macs:.2f}x",
            f"{before:.4f}", f"{after:.4f}", f"{lat / base:.2f}x", f"{(time.perf_counter() - start) / 60:.1f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"original latency p50 (bs1, {THREADS} thread): {base:.3f} ms; {len(transfer)} batches/epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer fine-tuning epochs")
    parts = ["channels", "gradual", "minilm", "minilm-distill", "cnn-zoo", "resnet18-digits"]
    parser.add_argument("--only", choices=parts, help="run one part")
    parser.add_argument("--epochs", type=int, default=8, help="distillation epochs of minilm-distill")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "channels"):
            channels_benchmark(2 if args.quick else 5, Path(tmp))
        if args.only in (None, "gradual"):
            gradual_benchmark(2 if args.quick else 4, 1 if args.quick else 2, Path(tmp))
        if args.only in (None, "minilm"):
            minilm_benchmark(Path(tmp))
        if args.only in (None, "minilm-distill"):
            minilm_distill_benchmark(2 if args.quick else args.epochs)
        if args.only in (None, "cnn-zoo"):
            from pruning_cnn_zoo import cnn_zoo_benchmark

            cnn_zoo_benchmark(console)
        if args.only in (None, "resnet18-digits"):
            resnet18_digits_benchmark(2 if args.quick else 3)


if __name__ == "__main__":
    main()
