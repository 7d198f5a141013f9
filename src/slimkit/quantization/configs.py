"""Config classes of the post-training quantization methods.

Every config takes ``overrides``: ``{"glob over module names": value}``, first matching pattern
wins, where value is another quantize config (e.g. ``WeightOnly(bits=8)``), a dict of fields
(``{"bits": 8}``, or ``{"method": "fp16"}`` to switch method for those layers), or ``None`` /
``"skip"`` to keep those layers in float. Overrides are stored normalized as
``{"method": NAME, **fields}`` dicts (or ``None``) so they survive the saved record.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator

from slimkit.core.config import Bits, Config
from slimkit.quantization.granularity import ActivationGranularity, GroupedWeights, WeightGranularity
from slimkit.quantization.observers import check_observer

ObserverName = Annotated[str, AfterValidator(check_observer)]
"""A registered observer: ``minmax``, ``moving-average``, ``percentile``, ``mse``, ``entropy``
or one added with `register_observer`."""


class QuantConfig(Config):
    """Base of the PTQ configs: per-layer ``overrides`` (see the module doc)."""

    overrides: dict[str, Any] = Field(default_factory=dict)
    """{module glob: config, dict of fields, or null to keep float}"""

    @field_validator("overrides", mode="before")
    @classmethod
    def _normalize(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("overrides must map glob patterns to configs, dicts of options, or None")
        normalized: dict[str, Any] = {}
        for pattern, override in value.items():
            if override is None or override == "skip":
                normalized[pattern] = None
            elif isinstance(override, Config):
                normalized[pattern] = {"method": override.method, **override.model_dump(mode="json")}
            elif isinstance(override, dict):
                normalized[pattern] = dict(override)
            elif isinstance(override, str):
                normalized[pattern] = {"method": override}
            else:
                raise ValueError(f"override for {pattern!r} must be a config, a dict, a method name or None")
        return normalized


class DynamicActivations(QuantConfig):
    """Options of the layers that quantize their activations at run time (`Int8DynamicLinear`):
    ``int8-dynamic``'s and ``smoothquant``'s."""

    renamed = {"per_token": "act_granularity"}
    reduce_range: bool | None = None
    """7-bit activations; None (default) decides on the machine that runs the model: 7 bits only
    on x86 CPUs without VNNI, where 8-bit activations saturate."""
    act_granularity: ActivationGranularity = Field("token", validate_default=True)
    """``"token"``: one activation scale per token (row), ``"tensor"``: one per call; per token
    lifts MiniLM's mean cosine to fp32 from 0.993 to 0.998 for a few percent of latency
    (``per_token=True/False`` before 0.2)."""
    pair_bounded: bool = False
    """pick each output channel's weight scale so adjacent codes satisfy ``|q[2j]| + |q[2j+1]|
    <= 128``: uint8 x int8 pair sums then stay inside the 16-bit adds of x86 CPUs without VNNI,
    so activations keep 8 bits on every machine (``reduce_range`` is ignored) and export as
    onnxruntime's fused ``DynamicQuantizeMatMul``, at about 1.4x coarser weight steps."""

    def layer_options(self) -> dict[str, Any]:
        """The `Int8DynamicLinear` arguments these options set."""
        return {"reduce_range": self.reduce_range, "per_token": self.per_token, "pair_bounded": self.pair_bounded}

    @property
    def per_token(self) -> bool:
        """Whether activations get one scale per token (what `Int8DynamicLinear` takes)."""
        return self.act_granularity.kind == "token"


class Int8Dynamic(DynamicActivations):
    """int8 per-channel weights, activations quantized at run time (PyTorch int8 CPU kernels)."""

    method = "int8-dynamic"
    embeddings: bool = True
    """store ``nn.Embedding`` tables as 8-bit per-row weight-only (they hold most of a small
    transformer's bytes; lookups need no int8 kernel)."""


class Int8Static(QuantConfig):
    """int8 weights (per channel) and activations (per tensor, calibrated on ``data``)."""

    method = "int8-static"
    observer: ObserverName = "minmax"
    """activation range estimator: ``minmax``, ``moving-average``, ``percentile``, ``mse``,
    ``entropy``, or a name added with `register_observer`."""
    fold_bn: bool = True
    """fold BatchNorms into the preceding conv/linear first."""
    quantize_output: bool = True
    """quantize each layer's output too (int8 between layers at run time)."""
    calibration_batches: int | None = Field(None, ge=1)
    """use at most this many batches of ``data``."""
    reduce_range: bool | None = None
    """7-bit weight codes, so int8 kernels that add uint8 x int8 pairs in 16 bits (onnxruntime
    and fbgemm on x86 CPUs without VNNI) cannot saturate. None (default): decided by the
    machine that quantizes (True on x86 without VNNI); set False for a VNNI/ARM deployment
    target to keep the 8th bit."""


class PackedWeights(Config, GroupedWeights):
    """The options every method storing packed low-bit weights shares (``weight-only``, ``gptq``,
    ``bias-correction``)."""

    renamed = {"group_size": "granularity"}
    bits: Bits = 4
    """weight bits, 2..8."""
    granularity: WeightGranularity = Field("group:128", validate_default=True)
    """``"group:N"``: N input columns share one scale; ``"channel"``: one scale per output
    channel (``group_size`` before 0.2)."""
    symmetric: bool = False
    """symmetric codes (zero point fixed at the mid-code) instead of min-max."""
    embeddings: bool = True
    """quantize ``nn.Embedding`` tables too (round-to-nearest, same grid)."""


class WeightOnly(QuantConfig, PackedWeights):
    """Packed low-bit weights (activations stay float), dequantized on the fly."""

    method = "weight-only"
    pad: bool = True
    """allow padding; when False a group size that does not divide a layer's input dimension is
    an error."""


class Half(QuantConfig):
    """16-bit floating point weights and compute."""

    method = "fp16"
    dtype: Literal["fp16", "bf16"] = "fp16"
    """``fp16`` or ``bf16``."""


class BFloat16(Half):
    """`Half` with ``dtype="bf16"`` (registered as ``bf16``)."""

    method = "bf16"
    dtype: Literal["fp16", "bf16"] = "bf16"
