"""Per-layer conversions of each layer-wise quantization method: the statistics it needs
from calibration data, float layer -> quantized layer (given those statistics), and the
data-free structural twin used by ``sk.load`` (``rebuild``).

`LAYER_METHODS` maps a method name to its `LayerMethod`; the driver in `slimkit.quantization.ptq`
resolves a config per layer (overrides), fills every layer's declared statistics in one
calibration pass, and calls these. A method never walks the model itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.device import int8_saturates
from slimkit.core.errors import InvalidConfigError
from slimkit.core.statistics import Statistic
from slimkit.core.tables import Table
from slimkit.quantization.dynamic import Int8DynamicLinear
from slimkit.quantization.modules import WeightOnlyEmbedding, WeightOnlyLinear
from slimkit.quantization.observers import make_observer
from slimkit.quantization.qdq import QUANTIZABLE, QDQLayer

HALF_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.LayerNorm, nn.GroupNorm)
CANDIDATES = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.RNNBase,
)
"""Layers that hold most weights; any of them a method cannot handle is reported as skipped."""


def _no_statistics(_layer: nn.Module, _config: Config) -> dict[str, Statistic]:
    return {}


@dataclass(frozen=True)
class LayerMethod:
    """How one method converts a layer.

    Attributes:
        types: layer types it handles, given the layer's config.
        convert: ``(layer, config, stats) -> new layer``; ``stats`` holds the filled statistics
            ``needs`` declared (``"input"``, ``"output"``) and the driver's notes on the layer.
        rebuild: ``(layer, config, entry) -> empty new layer`` with the right buffers and shapes,
            from the layer's recorded entry.
        needs: ``(layer, config) -> {"input" | "output": Statistic}``: what calibration must
            observe for this layer (empty: the method needs no data).
        fuses_relu: the layer's ``"output"`` is observed after a ReLU that directly follows it
            (the ReLU is then folded into the new layer).
        observed_only: a layer the calibration data never reached stays float and is listed as
            skipped; ``False``: ``convert`` takes it with its empty statistics.
        notes: ``(layer, stats) -> keys``: the outcome lists the layer's name under each key.
    """

    types: Callable[[Config], tuple[type[nn.Module], ...]]
    convert: Callable[[nn.Module, Config, dict[str, Any]], nn.Module]
    rebuild: Callable[[nn.Module, Config, dict[str, Any]], nn.Module]
    needs: Callable[[nn.Module, Config], dict[str, Statistic]] = _no_statistics
    fuses_relu: bool = False
    observed_only: bool = True
    notes: Callable[[nn.Module, dict[str, Any]], tuple[str, ...]] = lambda layer, stats: ()


def _check_groups(layer: nn.Module, config: Config) -> None:
    cols = layer.weight.shape[1]
    if config.group_size and cols % config.group_size and not getattr(config, "pad", True):
        raise InvalidConfigError(
            f"granularity group:{config.group_size} does not divide the input dimension {cols} of a "
            f"{type(layer).__name__}; pick a divisor of {cols} or allow padding (pad=True)"
        )


def weight_only(layer: nn.Module, config: Config, _info: dict[str, Any]) -> nn.Module:
    """Round ``layer`` (Linear or Embedding) to the packed grid of ``config``."""
    _check_groups(layer, config)
    cls = WeightOnlyEmbedding if isinstance(layer, nn.Embedding) else WeightOnlyLinear
    return cls.from_float(layer, config.bits, config.group_size, config.symmetric)


def weight_only_shell(layer: nn.Module, config: Config, _info: dict[str, Any]) -> nn.Module:
    """The empty packed twin of ``layer`` (``sk.load`` fills its buffers)."""
    if isinstance(layer, nn.Embedding):
        return WeightOnlyEmbedding(
            layer.num_embeddings, layer.embedding_dim, config.bits, config.group_size, layer.padding_idx
        )
    return WeightOnlyLinear(
        layer.in_features, layer.out_features, config.bits, config.group_size, layer.bias is not None
    )


def _dynamic(layer: nn.Module, config: Config, _info: dict[str, Any]) -> nn.Module:
    if isinstance(layer, nn.Embedding):
        return WeightOnlyEmbedding.from_float(layer, bits=8, group_size=None)
    return Int8DynamicLinear.from_float(layer, **config.layer_options())


def _dynamic_empty(layer: nn.Module, config: Config, _info: dict[str, Any]) -> nn.Module:
    if isinstance(layer, nn.Embedding):
        return WeightOnlyEmbedding(layer.num_embeddings, layer.embedding_dim, 8, None, layer.padding_idx)
    return Int8DynamicLinear(layer.in_features, layer.out_features, layer.bias is not None, **config.layer_options())


def _static_needs(_layer: nn.Module, config: Config) -> dict[str, Statistic]:
    observe = {"input": make_observer(config.observer)}
    return {**observe, "output": make_observer(config.observer)} if config.quantize_output else observe


def _static(layer: nn.Module, config: Config, stats: dict[str, Any]) -> nn.Module:
    reduce_range = getattr(config, "reduce_range", False)
    reduce_range = int8_saturates() if reduce_range is None else reduce_range
    out = stats.get("output")
    output = out.qparams() if out is not None and out.count else None  # no count: read outside the module
    return QDQLayer.from_float(layer, stats["input"].qparams(), output, stats.get("relu", False), reduce_range)


def _static_empty(layer: nn.Module, config: Config, info: dict[str, Any]) -> nn.Module:
    if layer.bias is None:
        layer.bias = nn.Parameter(layer.weight.new_zeros(layer.weight.shape[0]))
    return QDQLayer(layer, info.get("relu", False), config.quantize_output)


_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _cast_inputs(dtype: torch.dtype) -> Callable[..., Any]:
    def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        def cast(v: Any) -> Any:
            return v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v

        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook


def _cast_outputs(_m: nn.Module, _args: Any, out: Any) -> Any:
    """Back to float32 so float layers around a 16-bit one keep working."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda v: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v, out)


def cast_half(layer: nn.Module, config: Config, _info: dict[str, Any] | None = None) -> nn.Module:
    """Cast ``layer`` to fp16/bf16; hooks cast its float inputs in and outputs back to float32."""
    layer.to(_DTYPES[config.dtype])
    if not getattr(layer, "_slimkit_half", False):
        layer.register_forward_pre_hook(_cast_inputs(_DTYPES[config.dtype]), with_kwargs=True)
        layer.register_forward_hook(_cast_outputs)
        object.__setattr__(layer, "_slimkit_half", True)
    return layer


LAYER_METHODS: Table[LayerMethod] = Table(
    "layer-wise quantization method",
    [
        ("int8-dynamic", LayerMethod(
            lambda c: (nn.Linear, nn.Embedding) if c.embeddings else (nn.Linear,), _dynamic, _dynamic_empty
        )),
        ("int8-static", LayerMethod(
            lambda c: QUANTIZABLE, _static, _static_empty, needs=_static_needs, fuses_relu=True
        )),
        ("weight-only", LayerMethod(
            lambda c: (nn.Linear, nn.Embedding) if c.embeddings else (nn.Linear,), weight_only, weight_only_shell
        )),
        ("fp16", LayerMethod(lambda c: HALF_TYPES, cast_half, cast_half)),
        ("bf16", LayerMethod(lambda c: HALF_TYPES, cast_half, cast_half)),
    ],
)  # fmt: skip
