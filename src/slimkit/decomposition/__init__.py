"""Matrix and tensor decomposition: SVD, spatial SVD, Tucker-2, CP and tensor-train layers.

``sk.decompose(model, "tucker", rank="vbmf")`` replaces each selected layer by a
factorized one (see `slimkit.decomposition.methods` for the configs and
`slimkit.decomposition.rank` for the rank forms).
"""

from __future__ import annotations

from slimkit.core.registry import make_verb
from slimkit.decomposition.base import FactorizedLayer
from slimkit.decomposition.conv_layers import CPConv, SpatialSVDConv, TuckerConv
from slimkit.decomposition.layers import LowRankEmbedding, LowRankLinear
from slimkit.decomposition.methods import CP, SVD, TT, SpatialSVD, Tucker
from slimkit.decomposition.rank import RankSpec, parse_rank
from slimkit.decomposition.tt import TTLinear, factorize
from slimkit.decomposition.vbmf import evbmf_noise_and_rank, vbmf_rank

decompose = make_verb(
    "decompose",
    "svd",
    "Factorize the model's layers with ``method`` (``svd``, ``spatial-svd``, ``tucker``, ``cp``, ``tt``).",
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
