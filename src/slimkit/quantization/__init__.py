"""Quantization: primitives, observers, packed modules and the ``sk.quantize`` methods.

Registered methods: ``int8-dynamic``, ``int8-static``, ``weight-only``, ``fp16``, ``bf16``
(plus the algorithms other modules of this package register on import).
"""

from __future__ import annotations

from slimkit.core.registry import make_verb
from slimkit.quantization import (  # noqa: F401, E402  (registers gptq, smoothquant, bias-correction, qat)
    algorithms,
    onnx_lowering,  # noqa: F401  (registers the ONNX lowering of its layers)
    qat,
)
from slimkit.quantization import ptq as _ptq  # noqa: F401  (registers the PTQ methods)
from slimkit.quantization.configs import BFloat16, Half, Int8Dynamic, Int8Static, QuantConfig, WeightOnly
from slimkit.quantization.dynamic import Int8DynamicLinear
from slimkit.quantization.granularity import Granularity
from slimkit.quantization.modules import PackedWeight, WeightOnlyEmbedding, WeightOnlyLinear
from slimkit.quantization.observers import OBSERVERS, Observer, make_observer, register_observer
from slimkit.quantization.primitives import QuantSpec, dequantize, fake_quantize, qparams, qrange
from slimkit.quantization.qdq import QDQLayer

quantize = make_verb(
    "quantize", "int8-dynamic", "Quantize ``model`` with a registered method (name + options, or a config object)."
)


__all__ = [
    "OBSERVERS",
    "register_observer",
    "BFloat16",
    "Granularity",
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
