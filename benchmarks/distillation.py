"""Distillation figures: KD vs training alone (MNIST-1D, digits) and MiniLM -> 3-layer student.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/distillation.py [--quick] [--only mnist1d,digits,minilm]``

Every comparison runs in this one process: the student trained alone and with KD use the
same architecture, seeds, epochs and optimizer; latencies of teacher and student are
measured back to back with the same thread count.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import slimkit as sk
from slimkit.core.data import TensorData
from slimkit.distillation import KD, Combined, Embedding, finetune, layer_hints, shrink
from slimkit.measure import evaluate, fixed_threads, measure_latency

console = Console()
MINILM_EPOCHS = 24
"""Passes over the MiniLM transfer set (81 batches of 64 sentences each)."""


class Conv1dNet(nn.Module):
    """The MNIST-1D CNN of Greydanus (2020), with ``channels`` filters per layer."""

    def __init__(self, channels: int = 25):
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv1d(1, c, 5, 2, 1),
            nn.ReLU(),
            nn.Conv1d(c, c, 3, 2, 1),
            nn.ReLU(),
            nn.Conv1d(c, c, 3, 2, 1),
            nn.ReLU(),
        )
        self.head = nn.Linear(c * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class MLP(nn.Module):
    """A small MLP student for MNIST-1D (40 inputs)."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(40, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _accuracy(model: nn.Module, data: TensorData) -> float:
    return evaluate(model, data, "accuracy")["accuracy"]


def _alone_vs_kd(make_student, teacher, train, test, epochs: int, seeds, lr: float, kd: KD, transfer=None):  # noqa: ANN001
    """Test accuracies of the student trained alone on ``train`` and with KD, per seed.

    With ``transfer`` (unlabelled inputs), the KD student learns from the teacher's outputs on
    them instead of ``train``, for the same number of optimizer steps.
    """
    steps = epochs * len(train)
    alone, distilled = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        alone.append(_accuracy(finetune(make_student(), train, steps=steps, lr=lr, seed=seed), test))
        torch.manual_seed(seed)
        data = train if transfer is None else transfer
        student = finetune(make_student(), data, steps=steps, lr=lr, seed=seed, teacher=teacher, distill=kd)
        distilled.append(_accuracy(student, test))
    return alone, distilled


def _mnist1d(samples: int, seed: int) -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = samples, seed
    return make_dataset(args)  # generated locally from the templates, no download


def mnist1d(quick: bool) -> list[tuple[str, ...]]:
    """CNN teacher, MLP student: alone vs KD on the same labelled data, and vs KD on a transfer set."""
    ds = _mnist1d(5000, 42)  # the standard split: 4,000 train / 1,000 test
    x, xt = (torch.tensor(ds[k], dtype=torch.float32).unsqueeze(1) for k in ("x", "x_test"))
    y, yt = (torch.tensor(ds[k]).long() for k in ("y", "y_test"))
    train, test = TensorData(x, y, 100), TensorData(xt, yt, 500)
    unlabelled = torch.tensor(_mnist1d(25000, 1)["x"], dtype=torch.float32).unsqueeze(1)  # labels dropped
    transfer = TensorData(torch.cat([x, unlabelled]), None, 100)
    torch.manual_seed(0)
    teacher = finetune(Conv1dNet(32), train, epochs=20 if quick else 120, lr=1e-2)
    epochs, seeds = (10, range(1)) if quick else (60, range(3))
    student = partial(MLP, 100)
    alone, same = _alone_vs_kd(student, teacher, train, test, epochs, seeds, 3e-3, KD(temperature=1.0, alpha=0.5))
    _, kd = _alone_vs_kd(student, teacher, train, test, epochs, seeds, 3e-3, KD(temperature=1.0), transfer)
    base = statistics.mean(alone)
    label = f"MNIST-1D MLP-100 student, {epochs * len(train)} steps, {len(seeds)} seed(s)"
    return [
        ("MNIST-1D teacher CNN (32 ch), 4,000 labelled", f"{100 * _accuracy(teacher, test):.1f}%", "", ""),
        (
            f"{label}: KD on the same 4,000",
            f"{100 * base:.1f}%",
            f"{100 * statistics.mean(same):.1f}%",
            f"{100 * (statistics.mean(same) - base):+.1f} pt",
        ),
        (
            f"{label}: KD on + 20,000 unlabelled",
            f"{100 * base:.1f}%",
            f"{100 * statistics.mean(kd):.1f}%",
            f"{100 * (statistics.mean(kd) - base):+.1f} pt (target >= +1.5)",
        ),
    ]


def digits(quick: bool) -> list[tuple[str, ...]]:
    """Pretrained digits CNN -> half-width DigitsCNN trained from scratch, alone vs KD."""
    from slimkit.models.digits import DigitsCNN

    teacher = sk.load("example:digits-cnn")
    splits = sk.load_data("example:digits")
    epochs = 2 if quick else 4
    seeds = range(1 if quick else 2)
    alone, kd = _alone_vs_kd(
        lambda: DigitsCNN(widths=(12, 16, 32, 48)),
        teacher,
        splits.train,
        splits.test,
        epochs,
        seeds,
        3e-3,
        KD(temperature=4.0, alpha=0.9),
    )
    gain = 100 * (statistics.mean(kd) - statistics.mean(alone))
    pruned = partial(shrink, teacher, width=0.5)  # the teacher's channels pruned by L1 norm
    p_alone, p_kd = _alone_vs_kd(
        pruned, teacher, splits.train, splits.test, epochs, seeds, 3e-3, KD(temperature=4.0, alpha=0.9)
    )
    return [
        ("digits teacher (example:digits-cnn)", f"{100 * _accuracy(teacher, splits.test):.1f}%", "", ""),
        (
            f"digits half-width student, {epochs} ep, {len(seeds)} seed(s)",
            f"{100 * statistics.mean(alone):.1f}%",
            f"{100 * statistics.mean(kd):.1f}%",
            f"{gain:+.1f} pt",
        ),
        (
            f"digits teacher pruned to half width, then {epochs} ep, {len(seeds)} seed(s); before: "
            f"{100 * _accuracy(pruned(), splits.test):.1f}%",
            f"{100 * statistics.mean(p_alone):.1f}%",
            f"{100 * statistics.mean(p_kd):.1f}%",
            f"{100 * (statistics.mean(p_kd) - statistics.mean(p_alone)):+.1f} pt",
        ),
    ]


def minilm(quick: bool) -> list[tuple[str, ...]]:
    """MiniLM -> every-other-layer student, distilled on real sentences (no labels needed).

    Student: ``shrink(teacher, depth=0.5)``, layers 0, 3, 5 (DistilBERT's spread, the last
    layer kept). Transfer set: the 740 training sentences plus ~4,400 sentences of the
    standard library's docstrings (`slimkit.models.docstrings`, disjoint from the held-out
    test sentences), batched by length. Loss: cosine of the sentence embeddings + MSE
    between each student layer's hidden states and the teacher layer it stands in for
    (`layer_hints`: 0->2, 1->4, 2->5, weight 10), compared directly. The word-embedding table (half the
    parameters) stays frozen; the teacher's outputs are computed once and cached.
    """
    from slimkit.models.docstrings import docstring_sentences
    from slimkit.models.minilm import SentenceBatches, example_inputs

    teacher = sk.load("example:minilm")
    splits = sk.load_data("example:sentences")
    sentences = splits.train.sentences + docstring_sentences()
    transfer = SentenceBatches(sentences, batch_size=64, group_by_length=True)
    strided = evaluate(shrink(teacher, depth=0.5, spacing="stride"), splits.test, "fidelity", reference=teacher)
    student = shrink(teacher, depth=0.5)
    student.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    start = evaluate(student, splits.test, "fidelity", reference=teacher)["cosine"]
    loss = Combined(embedding=Embedding(loss="cosine"), hint=layer_hints(student))
    epochs = 2 if quick else MINILM_EPOCHS
    student = finetune(
        student, transfer, epochs=epochs, teacher=teacher, distill=loss, lr=2e-3, warmup_steps=20, cache_teacher=True
    )
    cosine = evaluate(student, splits.test, "fidelity", reference=teacher)["cosine"]
    inputs = example_inputs()
    with torch.no_grad(), fixed_threads(1):
        t_lat = measure_latency(lambda: teacher(*inputs), budget_s=2.0, min_runs=30)
        s_lat = measure_latency(lambda: student(*inputs), budget_s=2.0, min_runs=30)
    ratio = s_lat.p50_ms / t_lat.p50_ms
    steps = epochs * len(transfer)
    return [
        (
            "MiniLM 6 -> 3 layers, untrained: layers 0, 2, 4 (stride) / 0, 3, 5 (spread, used)",
            f"{strided['cosine']:.3f}",
            f"{start:.3f}",
            "cosine to teacher",
        ),
        (
            f"MiniLM 6 -> 3 layers, {len(sentences)} sentences, {steps} steps: cosine to teacher (300 held-out)",
            f"{start:.3f}",
            f"{cosine:.3f}",
            "target >= 0.93",
        ),
        (
            "MiniLM batch-1 latency p50, 1 thread",
            f"{t_lat.p50_ms:.2f} ms",
            f"{s_lat.p50_ms:.2f} ms",
            f"x{ratio:.2f} (target <= 0.6)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer epochs/seeds")
    parser.add_argument("--only", default="mnist1d,digits,minilm", help="comma-separated subset")
    args = parser.parse_args()
    table = Table(title="slimkit distillation" + (" (quick)" if args.quick else ""))
    for col in ("figure", "alone / before", "distilled / after", "difference"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    start = time.perf_counter()
    for name in args.only.split(","):
        for row in {"mnist1d": mnist1d, "digits": digits, "minilm": minilm}[name](args.quick):
            table.add_row(*row)
        console.print(f"[dim]{name} done at {time.perf_counter() - start:.0f} s[/dim]")
    console.print(table)


if __name__ == "__main__":
    main()
