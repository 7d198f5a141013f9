"""Low-rank Linear and Embedding layers (truncated SVD of the weight)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.decomposition.base import FactorizedLayer, Rank, assign, factory, truncated_svd


class LowRankLinear(FactorizedLayer):
    """``Linear(in, out)`` as ``Linear(in, r, bias=False)`` then ``Linear(r, out)``.

    Args:
        in_features: input features.
        out_features: output features.
        rank: inner dimension ``r``.
        bias: whether the second layer has a bias.
    """

    dense_types = (nn.Linear,)

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, **kw: Any):
        super().__init__()
        self.rank = rank
        self.first = nn.Linear(in_features, rank, bias=False, **kw)
        self.second = nn.Linear(rank, out_features, bias=bias, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @property
    def bias(self) -> torch.Tensor | None:
        """The bias of the output layer."""
        return self.second.bias

    @property
    def in_features(self) -> int:
        """Input features, as on the dense layer."""
        return self.first.in_features

    @property
    def out_features(self) -> int:
        """Output features, as on the dense layer."""
        return self.second.out_features

    @classmethod
    def cost(cls, dense: nn.Module, rank: Rank, **extra: Any) -> tuple[int, int]:
        out_f, in_f = dense.weight.shape
        return rank * (in_f + out_f), rank * (in_f + out_f)

    @classmethod
    def dense_cost(cls, dense: nn.Module, **extra: Any) -> tuple[int, int]:
        return dense.weight.numel(), dense.weight.numel()

    @classmethod
    def empty_like(cls, dense: nn.Module, rank: Rank, **extra: Any) -> LowRankLinear:
        return cls(dense.in_features, dense.out_features, int(rank), dense.bias is not None, **factory(dense))

    def load_factors(self, weight: torch.Tensor) -> None:
        left, right = truncated_svd(weight, self.rank)
        assign(self.second.weight, left)
        assign(self.first.weight, right)

    def to_dense(self) -> nn.Linear:
        dense = nn.Linear(
            self.first.in_features, self.second.out_features, self.bias is not None, **factory(self.first)
        )
        assign(dense.weight, self.second.weight @ self.first.weight)
        if self.bias is not None:
            assign(dense.bias, self.bias.detach())
        return dense


class LowRankEmbedding(FactorizedLayer):
    """``Embedding(V, d)`` as ``Embedding(V, r)`` then ``Linear(r, d, bias=False)``.

    Args:
        num_embeddings: vocabulary size ``V``.
        embedding_dim: output dimension ``d``.
        rank: inner dimension ``r``.
        padding_idx: kept from the dense embedding (its row stays zero).
    """

    dense_types = (nn.Embedding,)

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None, **kw: Any):
        super().__init__()
        self.rank = rank
        self.embedding = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx, **kw)
        self.project = nn.Linear(rank, embedding_dim, bias=False, **kw)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.project(self.embedding(tokens))

    @property
    def num_embeddings(self) -> int:
        """Vocabulary size, as on the dense embedding."""
        return self.embedding.num_embeddings

    @property
    def embedding_dim(self) -> int:
        """Output dimension, as on the dense embedding."""
        return self.project.out_features

    @classmethod
    def unsupported(cls, dense: nn.Module, **extra: Any) -> str | None:
        if dense.max_norm is not None or dense.sparse:
            return "max_norm/sparse embeddings change rows at lookup time; a factorized one cannot match"
        return None

    @classmethod
    def cost(cls, dense: nn.Module, rank: Rank, **extra: Any) -> tuple[int, int]:
        vocab, dim = dense.weight.shape
        return rank * (vocab + dim), rank * dim

    @classmethod
    def dense_cost(cls, dense: nn.Module, **extra: Any) -> tuple[int, int]:
        return dense.weight.numel(), 0

    @classmethod
    def empty_like(cls, dense: nn.Module, rank: Rank, **extra: Any) -> LowRankEmbedding:
        return cls(dense.num_embeddings, dense.embedding_dim, int(rank), dense.padding_idx, **factory(dense))

    def load_factors(self, weight: torch.Tensor) -> None:
        left, right = truncated_svd(weight, self.rank)
        if self.embedding.padding_idx is not None:
            left[self.embedding.padding_idx] = 0  # SVD leaves round-off where the row was zero
        assign(self.embedding.weight, left)
        assign(self.project.weight, right.T)

    def to_dense(self) -> nn.Embedding:
        weight = F.linear(self.embedding.weight, self.project.weight)
        dense = nn.Embedding(*weight.shape, padding_idx=self.embedding.padding_idx, **factory(self.project))
        assign(dense.weight, weight)
        return dense
