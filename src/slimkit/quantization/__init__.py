"""Quantization: primitives, observers, packed modules and the ``sk.quantize`` methods.

Registered methods: ``int8-dynamic``, ``int8-static``, ``weight-only``, ``fp16``, ``bf16``
(plus the algorithms other modules of this package register on import).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.registry import apply
from slimkit.quantization import algorithms, qat  # noqa: F401, E402  (registers gptq, smoothquant, bias-correction, qat)
from slimkit.quantization import ptq as _ptq  # noqa: F401  (registers the PTQ methods)
from slimkit.quantization.configs import BFloat16, Half, Int8Dynamic, Int8Static, QuantConfig, WeightOnly
from slimkit.quantization.dynamic import Int8DynamicLinear
from slimkit.quantization.modules import PackedWeight, WeightOnlyEmbedding, WeightOnlyLinear
from slimkit.quantization.observers import OBSERVERS, Observer, make_observer
from slimkit.quantization.primitives import QuantSpec, dequantize, fake_quantize, qparams, qrange
from slimkit.quantization.qdq import QDQLayer


def quantize(
    model: nn.Module,
    method: str | Config = "int8-dynamic",
    *,
    data: Iterable[Any] | None = None,
    example_inputs: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    inplace: bool = False,
    device: str | torch.device = "auto",
    **options: Any,
) -> nn.Module:
    """Quantize ``model`` with a registered method (name + options, or a config object).

    Args:
        model: the float model (copied unless ``inplace``).
        method: ``"int8-dynamic"``, ``"int8-static"``, ``"weight-only"``, ``"fp16"``, ``"bf16"``, ...
            or a config such as ``WeightOnly(bits=4, group_size=128)``.
        data: calibration batches (needed by ``int8-static``).
        example_inputs: example inputs (used by methods that trace).
        include, exclude: glob patterns over module names.
        inplace: change ``model`` itself.
        device: where the work runs (``"auto"``: CUDA when present).
        **options: config fields, e.g. ``bits=4``, ``overrides={"*.embeddings.*": None}``.

    Returns:
        The quantized model; its record lists quantized and skipped layers.
    """
    return apply(
        "quantize",
        model,
        method,
        data=data,
        example_inputs=example_inputs,
        include=include,
        exclude=exclude,
        inplace=inplace,
        device=device,
        **options,
    )


__all__ = [
    "OBSERVERS",
    "BFloat16",
    "Half",
    "Int8Dynamic",
    "Int8DynamicLinear",
    "Int8Static",
    "Observer",
    "PackedWeight",
    "QDQLayer",
    "QuantConfig",
    "QuantSpec",
    "WeightOnly",
    "WeightOnlyEmbedding",
    "WeightOnlyLinear",
    "dequantize",
    "fake_quantize",
    "make_observer",
    "qparams",
    "qrange",
    "quantize",
]
