"""GPU benchmark: fp32 vs fp16 vs bf16 vs int8 (slimkit int8-static) of the digits CNN and MiniLM on CUDA.

Exits cleanly, saying so, when there is no GPU, after its CPU-side checks (the models
load, the precisions build and agree with fp32 on the CPU).

    PYTHONPATH=src .venv/bin/python benchmarks/gpu.py [--models digits,minilm]
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch
from rich.console import Console
from rich.table import Table

import slimkit as sk
from slimkit.core.data import resize_batch
from slimkit.core.samples import example_batch
from slimkit.measure import sqnr_db
from slimkit.runtime import load

MODELS = {"digits": ("example:digits-cnn", "example:digits"), "minilm": ("example:minilm", "example:sentences")}


def _variants(model: torch.nn.Module, calibration: object) -> dict[str, tuple[torch.nn.Module, torch.dtype | None]]:
    """precision -> (model, dtype its float inputs are cast to)."""
    return {
        "fp32": (model, None),
        "fp16": (copy.deepcopy(model).half(), torch.float16),
        "bf16": (copy.deepcopy(model).bfloat16(), torch.bfloat16),
        "int8": (sk.quantize(model, "int8-static", data=calibration), None),
    }


def _cast(batch, dtype):
    if dtype is None:
        return batch
    return type(batch)(tuple(a.to(dtype) if a.is_floating_point() else a for a in batch.args), batch.kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="digits,minilm")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    console = Console()
    cuda = torch.cuda.is_available()
    table = Table(title=f"GPU latency, p50 ms ({torch.cuda.get_device_name() if cuda else 'no GPU'})")
    for col in ("model", "precision", "SQNR dB vs fp32", "bs1 ms", "bs32 ms", "bs32 vs fp32"):
        table.add_column(col)
    for name in args.models.split(","):
        spec, data_spec = MODELS[name]
        model, data = sk.load(spec), sk.load_data(data_spec)
        batch = resize_batch(example_batch(model, None, data.test), 4)
        with torch.no_grad():
            ref = model(*batch.args, **batch.kwargs).float()
        base32 = None
        for precision, (variant, dtype) in _variants(model, data.calibration).items():
            device = "cuda" if cuda else "cpu"
            if not cuda and precision in ("fp16", "bf16"):
                # the CPU check: these precisions run and agree with fp32 (no timing on the CPU)
                with torch.no_grad():
                    out = variant(*_cast(batch, dtype).args).float()
                console.print(f"CPU check {name} {precision}: SQNR {sqnr_db(ref, out):.1f} dB")
                continue
            variant = variant.to(device)
            sample = _cast(batch, dtype).to(device)
            with torch.no_grad():
                out = variant(*sample.args, **sample.kwargs).float().cpu()
            quality = sqnr_db(ref, out)
            if not cuda:
                console.print(f"CPU check {name} {precision}: SQNR {quality:.1f} dB")
                continue
            lat = load(variant).bench(sample, batch_sizes=(1, 32), budget_s=1.0)
            base32 = base32 or lat[32].p50_ms
            table.add_row(
                name,
                precision,
                f"{quality:.1f}",
                f"{lat[1].p50_ms:.3f}",
                f"{lat[32].p50_ms:.3f}",
                f"{lat[32].p50_ms / base32:.2f}x",
            )
    if not cuda:
        console.print("no CUDA GPU here: CPU-side checks done, GPU timings skipped")
        return
    console.print(table)


if __name__ == "__main__":
    main()
