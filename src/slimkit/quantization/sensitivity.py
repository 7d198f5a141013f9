"""Per-layer quantization sensitivity, for mixed precision and the adaptive-compression search.

Each candidate layer is quantized alone (every other layer stays float) and the model is
scored on data: the SQNR of its output against the float model's (``metric="fidelity"``),
or the drop of a task metric (``metric="accuracy"``). Layers come back most fragile first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError
from slimkit.core.registry import apply
from slimkit.core.walk import Selector, select_modules
from slimkit.measure.metrics import evaluate

DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
"""Layer types scored when ``layers`` is not given."""


@dataclass(frozen=True)
class LayerSensitivity:
    """How much quantizing one layer alone hurts.

    Attributes:
        name: the layer's module name.
        sqnr_db: SQNR of the model output against the float model (higher is safer).
        drop: ``metric_float - metric_quantized`` for ``metric="accuracy"`` (else ``None``).
        params: the layer's parameter count (what quantizing it saves).
    """

    name: str
    sqnr_db: float
    drop: float | None
    params: int

    @property
    def score(self) -> float:
        """Sort key: larger means more fragile (accuracy drop, else negative SQNR)."""
        return self.drop if self.drop is not None else -self.sqnr_db


def layer_sensitivity(
    model: nn.Module,
    data: Iterable[Any],
    method: str | Config = "weight-only",
    *,
    metric: str = "fidelity",
    layers: Iterable[str] | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    calibration: Iterable[Any] | None = None,
    limit: int | None = None,
    device: str | torch.device = "auto",
    **options: Any,
) -> dict[str, LayerSensitivity]:
    """Score every layer by quantizing it alone with ``method`` (e.g. ``bits=4``).

    Args:
        model: the float model (not modified).
        data: batches to score on.
        method: a quantize method name or config; ``**options`` fill its fields.
        metric: ``"fidelity"`` (output SQNR) or ``"accuracy"`` (needs targets; SQNR is
            reported too).
        layers: the layer names to score; by default every Linear/Conv/Embedding matching
            ``include``/``exclude``.
        calibration: data handed to the method (static/GPTQ methods); defaults to ``data``.
        limit: score on at most this many batches.
        device: where quantization runs.

    Returns:
        ``{layer name: LayerSensitivity}`` ordered most fragile first.

    Raises:
        InvalidConfigError: for an unknown metric or layer name, or nothing to score.
    """
    if metric not in ("fidelity", "accuracy"):
        raise InvalidConfigError(f"sensitivity metric must be 'fidelity' or 'accuracy', got {metric!r}")
    modules = dict(model.named_modules())
    if layers is None:
        names = [n for n, _ in select_modules(model, Selector.of(include, exclude), DEFAULT_TYPES)]
    else:
        names = list(layers)
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise InvalidConfigError(f"unknown layer names {unknown}; layer names look like: {list(modules)[1:6]}")
    if not names:
        raise InvalidConfigError("no layer to score: check include/exclude or pass layers=[...]")
    baseline = evaluate(model, data, "accuracy", limit=limit)["accuracy"] if metric == "accuracy" else None
    results = []
    for name in names:
        quantized = apply(
            "quantize", model, method, data=calibration or data, include=name, device=device, **options
        ).eval()
        sqnr = evaluate(quantized, data, "fidelity", reference=model, limit=limit)["sqnr_db"]
        drop = None
        if baseline is not None:
            drop = baseline - evaluate(quantized, data, "accuracy", limit=limit)["accuracy"]
        params = sum(p.numel() for p in modules[name].parameters())
        results.append(LayerSensitivity(name, sqnr if not math.isnan(sqnr) else -math.inf, drop, params))
        del quantized
    results.sort(key=lambda r: r.score, reverse=True)
    return {r.name: r for r in results}
