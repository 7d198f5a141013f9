"""Model coverage: every technique and export on real families, written to docs/coverage.md.

The families are the zoo of the tests (`tests/zoo/transformer_zoo.py`, `tests/zoo/cnn_zoo.py`:
tiny random-init transformers families, torchvision ViT/Swin and CNNs with BatchNorm
statistics warmed on random images). Each cell is what a user gets: the cosine of the output
to the float model (quantization), the MACs ratio (pruning, decomposition), "ok" for an
export that passed slimkit's own parity check in its runtime, or the one-line error.

    PYTHONPATH=src .venv/bin/python benchmarks/coverage.py [--families bert,resnet18] [--out docs/coverage.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import slimkit as sk
from slimkit.core.errors import first_line
from slimkit.measure import count_macs

ZOO = Path(__file__).resolve().parents[1] / "tests" / "zoo"
sys.path.insert(0, str(ZOO))
import cnn_zoo  # noqa: E402
import transformer_zoo  # noqa: E402

CNNS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "bnact_net")
FAMILIES = tuple(f for f in transformer_zoo.FAMILIES if f != "torch_encoder") + CNNS


def build(family: str) -> tuple[torch.nn.Module, object]:
    """The family's model (eval mode) and example inputs."""
    torch.manual_seed(0)
    if family in CNNS:
        model = getattr(cnn_zoo, family)().train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(8, 3, cnn_zoo.SIZE, cnn_zoo.SIZE))
        return model.eval(), (torch.randn(2, 3, cnn_zoo.SIZE, cnn_zoo.SIZE),)
    model = getattr(transformer_zoo, family)().eval()
    with torch.no_grad():  # zero-initialised heads (torchvision's ViT) would make every output 0
        for weight in (p for p in model.parameters() if p.dim() > 1 and not p.any()):
            weight.normal_(std=0.02)
    return model, transformer_zoo.inputs(family)


def output(model: torch.nn.Module, x: object) -> torch.Tensor:
    """The model's primary output tensor."""
    with torch.no_grad():
        out = model(**x) if isinstance(x, dict) else model(*x)
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple):
        return out[0]
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def cosine(model: torch.nn.Module, reference: torch.nn.Module, x: object) -> str:
    a, b = output(model, x).flatten().double(), output(reference, x).flatten().double()
    return f"cos {F.cosine_similarity(a, b, dim=0).item():.4f}"


def macs(model: torch.nn.Module, reference: torch.nn.Module, x: object) -> str:
    return f"MACs {count_macs(model, x).total / count_macs(reference, x).total:.2f}x"


Cell = Callable[[torch.nn.Module, object], str]


def techniques(tmp: Path) -> dict[str, Cell]:
    """Column name -> what it does to a (model, inputs) pair and reports."""

    def quantized(method: str, **options: object) -> Cell:
        def run(model: torch.nn.Module, x: object) -> str:
            data = [x, x] if method == "int8-static" else None
            return cosine(sk.quantize(model, method, data=data, **options), model, x)

        return run

    def pruned(method: str, ratio: float) -> Cell:
        def run(model: torch.nn.Module, x: object) -> str:
            example = {"example_inputs": (x,)} if isinstance(x, dict) else {"example_inputs": x}
            return macs(sk.prune(model, method, ratio=ratio, **example), model, x)

        return run

    def exported(suffix: str) -> Cell:
        def run(model: torch.nn.Module, x: object) -> str:
            sk.export(model, tmp / f"m{suffix}", example_inputs=x, overwrite=True)
            return "ok"

        return run

    return {
        "int8-dynamic": quantized("int8-dynamic"),
        "int8-static": quantized("int8-static"),
        "weight-only 8b": quantized("weight-only", bits=8),
        "svd 1/4": lambda m, x: macs(sk.decompose(m, "svd", rank=0.25), m, x),
        "channels 0.5": pruned("channels", 0.5),
        "heads 0.25": pruned("heads", 0.25),
        "neurons 0.5": pruned("neurons", 0.5),
        ".onnx": exported(".onnx"),
        ".pte": exported(".pte"),
        ".tflite": exported(".tflite"),
    }


def cell(run: Cell, family: str) -> str:
    model, x = build(family)
    try:
        return run(model, x)
    except sk.SlimkitError as exc:
        return f"refused: {first_line(exc)[:90]}"
    except Exception as exc:  # noqa: BLE001 -- a crash is a finding: it goes in the table
        return f"**CRASH** {type(exc).__name__}: {first_line(exc)[:80]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "coverage.md"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    families = args.families.split(",")
    with tempfile.TemporaryDirectory(prefix="slimkit-coverage-") as tmp:
        columns = techniques(Path(tmp))
        rows = []
        for family in families:
            rows.append([family, *(cell(run, family) for run in columns.values())])
            print(" | ".join(rows[-1]), flush=True)
    lines = [
        "# Model coverage",
        "",
        "Generated by `PYTHONPATH=src .venv/bin/python benchmarks/coverage.py` (random-init models of the",
        "test zoo, tiny configs; cosine of the output to the float model, MACs ratio, or `ok` for an",
        "export that passed slimkit's parity check in its runtime). A `refused:` cell is the one-line",
        "error a user gets; a crash would be marked **CRASH**.",
        "",
        "| family | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
        *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
