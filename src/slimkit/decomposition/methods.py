"""The ``decompose`` methods: configs, the shared handler and the data-free rebuild."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from slimkit.core.config import Config
from slimkit.core.errors import InvalidConfigError
from slimkit.core.layerwise import rebuild_layers, replace_layers, select_layers
from slimkit.core.registry import Context, register
from slimkit.decomposition.base import FactorizedLayer, Rank, relative_error
from slimkit.decomposition.conv_layers import CPConv, SpatialSVDConv, TuckerConv
from slimkit.decomposition.layers import LowRankEmbedding, LowRankLinear
from slimkit.decomposition.rank import RankSpec, RankValue, budget_ranks, parse_rank, ranks_at, spectrum_rank
from slimkit.decomposition.tt import TTLinear

LARGE_ERROR = 0.5
"""A relative weight error above this is large: warned about, and the default limit for VBMF."""


class _Decomposition(Config):
    """Options every decomposition shares."""

    layers: ClassVar[tuple[type[FactorizedLayer], ...]] = ()
    rank: RankValue = "energy:0.9"
    """per layer: an int, a fraction of the full rank, "energy:X" (share of the spectrum's energy
    kept), "params:X" / "macs:X" (budget), or "vbmf" (EVBMF, floored at half the energy)."""
    max_error: float | None = Field(None, gt=0)
    """largest relative weight error ‖W − Ŵ‖ / ‖W‖ accepted for a layer; a layer above it stays
    dense and is listed as skipped with its error. None: 0.5 for ``vbmf`` (an estimate, not
    your choice); no limit for ranks you gave, but a warning names every layer above 0.5."""
    force: bool = False
    """decompose even where the rank saves no weights or MACs, or exceeds ``max_error``."""


class SVD(_Decomposition):
    """Truncated SVD of Linear (two Linears) and Embedding (Embedding(V, r) + Linear(r, d)) weights."""

    method = "svd"
    layers = (LowRankLinear, LowRankEmbedding)


class SpatialSVD(_Decomposition):
    """Conv2d kh×kw as kh×1 then 1×kw (SVD of the (Cin·kh) × (Cout·kw) reshaped kernel)."""

    method = "spatial-svd"
    layers = (SpatialSVDConv,)


class Tucker(_Decomposition):
    """Conv2d as Tucker-2: 1×1 -> kh×kw core -> 1×1; rank per channel mode (VBMF by default)."""

    method = "tucker"
    layers = (TuckerConv,)
    rank: RankValue = "vbmf"


class CP(_Decomposition):
    """Conv2d as CP: 1×1 -> depthwise kh×1 -> depthwise 1×kw -> 1×1."""

    method = "cp"
    layers = (CPConv,)
    rank: RankValue = 0.25


class TT(_Decomposition):
    """Linear as a tensor-train matrix (TT-Linear) of ``cores`` cores."""

    method = "tt"
    layers = (TTLinear,)
    rank: RankValue = 16
    cores: int = Field(3, ge=2, le=8)
    """number of TT cores when factors are not given"""
    in_factors: tuple[int, ...] | None = Field(None, min_length=2)
    """factors of in_features"""
    out_factors: tuple[int, ...] | None = Field(None, min_length=2)
    """factors of out_features"""


def _layer_class(config: _Decomposition, module: nn.Module) -> type[FactorizedLayer] | None:
    """The factorized layer class this method uses for ``module`` (its dense types and their
    subclasses that keep the base ``forward``)."""
    return next((cls for cls in config.layers if isinstance(module, cls.dense_types)), None)


def _fixed(rank: int, full: tuple[int, ...], cls: type[FactorizedLayer], name: str) -> tuple[int, ...]:
    if cls.fixed_rank == "free":
        return (rank,) * len(full)
    limit = max(full) if cls.fixed_rank == "cap" else min(full)
    if rank > limit:
        raise InvalidConfigError(
            f"rank {rank} is larger than possible for layer {name!r} (full ranks {list(full)}); "
            f"use a rank <= {limit}, a fraction like 0.5 or 'energy:0.9', or exclude the layer"
        )
    return tuple(min(rank, f) for f in full)


def choose_rank(
    spec: RankSpec,
    cls: type[FactorizedLayer],
    dense: nn.Module,
    name: str,
    device: torch.device,
    max_error: float = 1.0,
    **extra: Any,
) -> Rank | None:
    """The rank of ``dense`` under ``spec``; ``None`` when a budget cannot be met at rank 1.

    A ``vbmf`` rank keeps at least ``1 - max_error² / modes`` of each mode's energy, the
    truncation that bounds the (HOSVD) relative error by ``max_error``.
    """
    full = cls.full_ranks(dense, **extra)
    if spec.kind == "fixed":
        per_mode = _fixed(int(spec.value), full, cls, name)
    elif spec.kind == "ratio":
        per_mode = ranks_at(spec.value, full)
    elif spec.kind in ("energy", "vbmf"):
        matrices = cls.unfoldings(dense, **extra)
        floor = max(0.0, 1 - max_error**2 / len(full))
        per_mode = tuple(
            min(f, spectrum_rank(spec, m.to(device), floor)) for m, f in zip(matrices, full, strict=True)
        )
    else:
        found = budget_ranks(
            spec, full, lambda r: cls.cost(dense, cls.combine(r), **extra), cls.dense_cost(dense, **extra)
        )
        if found is None:
            return None
        per_mode = found
    return cls.combine(per_mode)


def _saving(cls: type[FactorizedLayer], dense: nn.Module, rank: Rank, **extra: Any) -> str | None:
    """Why ``rank`` saves nothing on ``dense`` (weights or MACs), or ``None`` when it saves."""
    (params, macs), (dense_params, dense_macs) = cls.cost(dense, rank, **extra), cls.dense_cost(dense, **extra)
    if params < dense_params and (dense_macs == 0 or macs < dense_macs):
        return None
    return (
        f"rank {rank} saves nothing ({params} weights / {macs} MACs per position vs dense "
        f"{dense_params} / {dense_macs}); pass force=True to decompose anyway"
    )


def decompose_layers(model: nn.Module, config: _Decomposition, ctx: Context) -> nn.Module:
    """Replace each selected layer by its factorized form at the rank ``config`` selects.

    Records per layer the rank, the relative Frobenius error of the weight and what
    `rebuild` needs in ``ctx.state["layers"]``; skipped layers and why in ``ctx.state["skipped"]``.
    """
    spec = parse_rank(config.rank)
    max_error = config.max_error or (LARGE_ERROR if spec.kind == "vbmf" else None)

    def factorize(name: str, dense: nn.Module) -> tuple[nn.Module, dict[str, Any]] | str:
        cls = _layer_class(config, dense)
        extra = cls.plan(dense, config)
        reason = cls.unsupported(dense, **extra)
        rank = None if reason else choose_rank(spec, cls, dense, name, ctx.device, max_error or 1.0, **extra)
        if reason is None and rank is None:
            reason = f"even rank 1 exceeds the {spec.kind} budget {spec.value}"
        if reason is None and not config.force:
            reason = _saving(cls, dense, rank, **extra)
        if reason is not None:
            return reason
        layer = cls.from_dense(dense, rank, ctx.device, **extra)
        error = relative_error(dense.weight, layer.to_dense().weight)
        if max_error is not None and error > max_error and not config.force:
            return (
                f"rank {rank} leaves a relative weight error of {error:.2f} > max_error={max_error}; "
                "raise the rank or max_error, or pass force=True"
            )
        params, _ = cls.cost(dense, rank, **extra)
        return layer, {
            "rank": list(rank) if isinstance(rank, tuple) else rank,
            "error": error,
            "params": [cls.dense_cost(dense, **extra)[0], params],
            "extra": layer.extra_state_for_rebuild(),
        }

    types = tuple(t for cls in config.layers for t in cls.dense_types)
    candidates, skipped = select_layers(model, ctx.selector, types, inside=(FactorizedLayer,))
    layers, refused = replace_layers(model, candidates, factorize)
    skipped.update(refused)
    large = {n: info["error"] for n, info in layers.items() if info["error"] > LARGE_ERROR}
    if large:
        warnings.warn(
            f"{config.method}: {len(large)} layer(s) lose much of their weight (relative error > {LARGE_ERROR}): "
            + ", ".join(f"{n} {e:.2f}" for n, e in list(large.items())[:5])
            + "; check the metric, or set max_error to keep such layers dense",
            stacklevel=4,
        )
    if skipped:
        warnings.warn(
            f"{config.method}: {len(skipped)} layer(s) left dense: "
            + "; ".join(f"{n}: {r}" for n, r in list(skipped.items())[:5])
            + (" ..." if len(skipped) > 5 else ""),
            stacklevel=4,
        )
    ctx.state.update(layers=layers, skipped=skipped)
    return model


def _shell(config: _Decomposition) -> Callable[[str, nn.Module, dict[str, Any]], nn.Module]:
    def shell(name: str, dense: nn.Module, entry: dict[str, Any]) -> nn.Module:
        cls = _layer_class(config, dense)
        if cls is None:
            raise InvalidConfigError(f"cannot rebuild {config.method} at {name!r}: found a {type(dense).__name__}")
        rank = tuple(entry["rank"]) if isinstance(entry["rank"], list) else entry["rank"]
        return cls.empty_like(dense, rank, **entry.get("extra", {}))

    return shell


def rebuild_decomposed(model: nn.Module, config: _Decomposition, state: dict[str, Any]) -> nn.Module:
    """Recreate the factorized layers recorded in ``state`` (shapes only, no data)."""
    return rebuild_layers(model, state.get("layers", {}), _shell(config))


for _config in (SVD, SpatialSVD, Tucker, CP, TT):
    register("decompose", _config.method, _config, rebuild=rebuild_decomposed)(decompose_layers)
