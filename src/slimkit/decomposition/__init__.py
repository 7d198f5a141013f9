"""Matrix and tensor decomposition: SVD, spatial SVD, Tucker-2, CP and tensor-train layers.

``sk.decompose(model, "tucker", rank="vbmf")`` replaces each selected layer by a
factorized one (see `slimkit.decomposition.methods` for the configs and
`slimkit.decomposition.rank` for the rank forms).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.config import Config
from slimkit.core.registry import apply
from slimkit.decomposition.base import FactorizedLayer
from slimkit.decomposition.conv_layers import CPConv, SpatialSVDConv, TuckerConv
from slimkit.decomposition.layers import LowRankEmbedding, LowRankLinear
from slimkit.decomposition.methods import CP, SVD, TT, SpatialSVD, Tucker
from slimkit.decomposition.rank import RankSpec, parse_rank
from slimkit.decomposition.tt import TTLinear, factorize
from slimkit.decomposition.vbmf import evbmf_noise_and_rank, vbmf_rank


def decompose(
    model: nn.Module,
    method: str | Config = "svd",
    *,
    data: Iterable[Any] | None = None,
    example_inputs: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    inplace: bool = False,
    device: str | torch.device = "auto",
    **options: Any,
) -> nn.Module:
    """Factorize the model's layers with ``method`` (``svd``, ``spatial-svd``, ``tucker``, ``cp``, ``tt``).

    Args:
        model: the model (copied unless ``inplace``).
        method: a method name (``**options`` fill its config) or a config such as ``Tucker(rank="vbmf")``.
        data: unused by the decompositions themselves (they are data-free); accepted for symmetry.
        example_inputs: unused; accepted for symmetry with the other verbs.
        include: glob patterns of module names to decompose (all supported layers when omitted).
        exclude: glob patterns of module names to leave dense.
        inplace: change ``model`` itself.
        device: where the decompositions are computed (``"auto"``: CUDA when present).
        **options: config fields, e.g. ``rank=16``, ``rank="energy:0.9"``, ``force=True``.

    Returns:
        The model with factorized layers; ``sk.get_record(result).transforms[-1].state`` holds
        each layer's rank and relative error (``"layers"``) and the layers left dense (``"skipped"``).
    """
    return apply(
        "decompose",
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
    "CP",
    "CPConv",
    "FactorizedLayer",
    "LowRankEmbedding",
    "LowRankLinear",
    "RankSpec",
    "SVD",
    "SpatialSVD",
    "SpatialSVDConv",
    "TT",
    "TTLinear",
    "Tucker",
    "TuckerConv",
    "decompose",
    "evbmf_noise_and_rank",
    "factorize",
    "parse_rank",
    "vbmf_rank",
]
