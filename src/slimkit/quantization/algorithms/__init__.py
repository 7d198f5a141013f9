"""Data-driven quantization algorithms: GPTQ, SmoothQuant, bias correction.

Importing this package registers the methods ``gptq``, ``smoothquant`` and ``bias-correction``.
"""

from slimkit.quantization.algorithms.bias_correction import BiasCorrection
from slimkit.quantization.algorithms.gptq import GPTQ
from slimkit.quantization.algorithms.smoothquant import SmoothedLinear, SmoothQuant

__all__ = ["GPTQ", "BiasCorrection", "SmoothQuant", "SmoothedLinear"]
