"""Parity of an exported artifact with its PyTorch model, measured in the artifact's own runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimkit.core.data import Batch, resize_batch, run_model
from slimkit.core.errors import UnsupportedModelError, first_line
from slimkit.measure.metrics import sqnr_db
from slimkit.runtime.base import Runtime
from slimkit.runtime.inputs import flat_outputs


@dataclass(frozen=True)
class Parity:
    """Worst agreement over the checked batches: max abs error and SQNR (dB) against the reference."""

    max_abs_error: float
    sqnr_db: float
    batch_sizes: tuple[int, ...]


def _reference(model: nn.Module, batch: Batch) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.float() for t in flat_outputs(run_model(model.eval(), batch))]


def parity(runtime: Runtime, model: nn.Module, batch: Batch, batch_sizes: tuple[int, ...] = (1, 3)) -> Parity:
    """Compare ``runtime``'s outputs with ``model``'s on ``batch`` cut/tiled to each batch size.

    Raises:
        UnsupportedModelError: the runtime cannot run the artifact, or its outputs do not
            match the model's in number or shape.
    """
    worst_err, worst_sqnr = 0.0, float("inf")
    for size in batch_sizes:
        sized = resize_batch(batch, size)
        expected = _reference(model, sized)
        try:
            got = flat_outputs(runtime.run_batch(sized))
        except RuntimeError as exc:  # a kernel of the runtime refuses the artifact (e.g. LiteRT's int8 lookups)
            raise UnsupportedModelError(
                f"the {runtime.name} artifact does not run in its own runtime (batch {size}): {first_line(exc)}; "
                "no file was written -- export without quantize=, or try another format"
            ) from None
        if len(got) != len(expected):
            raise UnsupportedModelError(
                f"the {runtime.name} artifact returns {len(got)} outputs but the model returns {len(expected)}"
            )
        for ref, out in zip(expected, got, strict=True):
            out = out.float().reshape(ref.shape) if out.numel() == ref.numel() else out.float()
            if out.shape != ref.shape:
                raise UnsupportedModelError(
                    f"the {runtime.name} artifact returns shape {tuple(out.shape)} where the model returns "
                    f"{tuple(ref.shape)} (batch {size})"
                )
            worst_err = max(worst_err, float((ref - out).abs().max()))
            worst_sqnr = min(worst_sqnr, sqnr_db(ref, out))
    return Parity(worst_err, worst_sqnr, batch_sizes)


def check_parity(result: Parity, min_sqnr_db: float, path: Path, runtime: str, against: str) -> None:
    """Raise `UnsupportedModelError` when the SQNR is below ``min_sqnr_db``."""
    if not result.sqnr_db >= min_sqnr_db:
        raise UnsupportedModelError(
            f"export to {path.name} failed verification on {runtime}: SQNR {result.sqnr_db:.1f} dB < "
            f"{min_sqnr_db:.1f} dB against {against} (max abs error {result.max_abs_error:.3g}); no file was "
            "written -- the format changed the model's numbers: try another format, skip quantize=, or "
            "lower min_sqnr_db if this accuracy is acceptable"
        )
