"""Tensor-train matrix layer (TT-Linear): a Linear whose weight is a chain of small cores.

``W[out, in]`` with ``out = m_1···m_d`` and ``in = n_1···n_d`` is stored as cores
``G_k[r_{k-1}, m_k, n_k, r_k]`` (``r_0 = r_d = 1``). The forward contracts the input with
one core at a time and never rebuilds ``W``; initialization is TT-SVD (tensorly's
``tensor_train_matrix``).
"""

from __future__ import annotations

import math
from typing import Any

import tensorly as tl
import torch
from tensorly.decomposition import tensor_train_matrix
from torch import nn

from slimkit.core.errors import InvalidConfigError
from slimkit.decomposition.base import FactorizedLayer, Rank, assign, factory, tall_svd


def _primes(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def factorize(n: int, parts: int) -> tuple[int, ...]:
    """Split ``n`` into ``parts`` factors as balanced as possible, largest first (4096, 4 -> 8,8,8,8)."""
    factors = [1] * parts
    for prime in sorted(_primes(n), reverse=True):
        smallest = factors.index(min(factors))
        factors[smallest] *= prime
    return tuple(sorted(factors, reverse=True))


def split_ranks(out_factors: tuple[int, ...], in_factors: tuple[int, ...]) -> tuple[int, ...]:
    """Largest TT-rank at each of the ``d - 1`` splits between cores."""
    sizes = [m * n for m, n in zip(out_factors, in_factors, strict=True)]
    return tuple(min(math.prod(sizes[: k + 1]), math.prod(sizes[k + 1 :])) for k in range(len(sizes) - 1))


def feasible_ranks(
    ranks: tuple[int, ...], out_factors: tuple[int, ...], in_factors: tuple[int, ...]
) -> tuple[int, ...]:
    """Clip ranks so each core's unfoldings can reach them (what TT-SVD actually produces)."""
    sizes = [m * n for m, n in zip(out_factors, in_factors, strict=True)]
    full = [1, *ranks, 1]
    for k in range(1, len(full) - 1):
        full[k] = min(full[k], full[k - 1] * sizes[k - 1])
    for k in range(len(full) - 2, 0, -1):
        full[k] = min(full[k], full[k + 1] * sizes[k])
    return tuple(full[1:-1])


class TTLinear(FactorizedLayer):
    """``Linear(in, out)`` as a tensor train of ``d`` cores.

    Args:
        in_factors: ``(n_1, ..., n_d)`` with product ``in_features``.
        out_factors: ``(m_1, ..., m_d)`` with product ``out_features``.
        ranks: the ``d - 1`` internal TT-ranks.
        bias: whether the layer has a bias.
    """

    dense_types = (nn.Linear,)
    fixed_rank = "cap"

    def __init__(
        self,
        in_factors: tuple[int, ...],
        out_factors: tuple[int, ...],
        ranks: tuple[int, ...],
        bias: bool = True,
        **kw: Any,
    ):
        super().__init__()
        self.in_factors, self.out_factors = tuple(in_factors), tuple(out_factors)
        self.rank = feasible_ranks(tuple(ranks), self.out_factors, self.in_factors)
        bounds = [1, *self.rank, 1]
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty(bounds[k], m, n, bounds[k + 1], **kw))
            for k, (m, n) in enumerate(zip(self.out_factors, self.in_factors, strict=True))
        )
        self.bias = nn.Parameter(torch.zeros(math.prod(self.out_factors), **kw)) if bias else None

    @property
    def in_features(self) -> int:
        """Product of ``in_factors``."""
        return math.prod(self.in_factors)

    @property
    def out_features(self) -> int:
        """Product of ``out_factors``."""
        return math.prod(self.out_factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        t = x.reshape(-1, 1, 1, self.in_features)  # (batch, outputs done, rank, inputs left)
        batch, done = t.shape[0], 1
        for core, n in zip(self.cores, self.in_factors, strict=True):
            r, m, _, s = core.shape
            t = t.reshape(batch, done, r, n, -1)
            t = torch.einsum("bardz,rmds->bamsz", t, core)
            done *= m
            t = t.reshape(batch, done, s, -1)
        y = t.reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias

    def macs_per_token(self) -> int:
        """Hand count of the forward's multiply-adds for one input row."""
        return TTLinear.cost_of(self.out_factors, self.in_factors, self.rank)[1]

    @staticmethod
    def cost_of(out_factors: tuple[int, ...], in_factors: tuple[int, ...], ranks: tuple[int, ...]) -> tuple[int, int]:
        """(core elements, MACs per input row) for these factors and ranks."""
        bounds = [1, *feasible_ranks(ranks, out_factors, in_factors), 1]
        params = macs = 0
        for k, (m, n) in enumerate(zip(out_factors, in_factors, strict=True)):
            core = bounds[k] * m * n * bounds[k + 1]
            params += core
            macs += core * math.prod(out_factors[:k]) * math.prod(in_factors[k + 1 :])
        return params, macs

    @classmethod
    def plan(cls, dense: nn.Module, config: Any) -> dict[str, Any]:
        in_factors = tuple(config.in_factors) if config.in_factors else factorize(dense.in_features, config.cores)
        out_factors = tuple(config.out_factors) if config.out_factors else factorize(dense.out_features, config.cores)
        return {"in_factors": in_factors, "out_factors": out_factors}

    @classmethod
    def unsupported(cls, dense: nn.Module, **extra: Any) -> str | None:
        in_factors, out_factors = extra["in_factors"], extra["out_factors"]
        if math.prod(in_factors) != dense.in_features or math.prod(out_factors) != dense.out_features:
            return (
                f"in/out factors {in_factors}/{out_factors} do not multiply to the layer's "
                f"{dense.in_features}/{dense.out_features} features"
            )
        if len(in_factors) != len(out_factors):
            raise InvalidConfigError(f"in_factors {in_factors} and out_factors {out_factors} need the same length")
        if len(in_factors) < 2:
            return "a tensor train needs at least 2 cores"
        return None

    @classmethod
    def _interleaved(
        cls, weight: torch.Tensor, in_factors: tuple[int, ...], out_factors: tuple[int, ...]
    ) -> torch.Tensor:
        d = len(in_factors)
        order = [i for k in range(d) for i in (k, d + k)]
        return weight.reshape(*out_factors, *in_factors).permute(order)

    @classmethod
    def full_ranks(cls, dense: nn.Module, **extra: Any) -> tuple[int, ...]:
        return split_ranks(extra["out_factors"], extra["in_factors"])

    @classmethod
    def unfoldings(cls, dense: nn.Module, **extra: Any) -> list[torch.Tensor]:
        tensor = cls._interleaved(dense.weight.detach(), extra["in_factors"], extra["out_factors"])
        sizes = [m * n for m, n in zip(extra["out_factors"], extra["in_factors"], strict=True)]
        return [tensor.reshape(math.prod(sizes[: k + 1]), -1) for k in range(len(sizes) - 1)]

    @classmethod
    def combine(cls, per_mode: tuple[int, ...]) -> Rank:
        return tuple(per_mode)

    @classmethod
    def cost(cls, dense: nn.Module, rank: Rank, **extra: Any) -> tuple[int, int]:
        return cls.cost_of(extra["out_factors"], extra["in_factors"], tuple(rank))

    @classmethod
    def dense_cost(cls, dense: nn.Module, **extra: Any) -> tuple[int, int]:
        return dense.weight.numel(), dense.weight.numel()

    @classmethod
    def empty_like(cls, dense: nn.Module, rank: Rank, **extra: Any) -> TTLinear:
        ins, outs = tuple(extra["in_factors"]), tuple(extra["out_factors"])
        return cls(ins, outs, tuple(rank), dense.bias is not None, **factory(dense))

    def load_factors(self, weight: torch.Tensor) -> None:
        tensor = weight.reshape(*self.out_factors, *self.in_factors)
        with tl.backend_context("pytorch"):
            cores = tensor_train_matrix(tensor, [1, *self.rank, 1], svd=tall_svd).factors
        for param, core in zip(self.cores, cores, strict=True):
            assign(param, core)

    def to_dense(self) -> nn.Linear:
        full = self.cores[0].detach().reshape(self.out_factors[0], self.in_factors[0], -1)
        for core in list(self.cores)[1:]:
            rows, cols, _ = full.shape
            full = torch.einsum("MNr,rmns->MmNns", full, core.detach()).reshape(
                rows * core.shape[1], cols * core.shape[2], -1
            )
        dense = nn.Linear(self.in_features, self.out_features, self.bias is not None, **factory(self.cores[0]))
        assign(dense.weight, full)
        if self.bias is not None:
            assign(dense.bias, self.bias.detach())
        return dense

    def extra_state_for_rebuild(self) -> dict[str, Any]:
        return {"in_factors": list(self.in_factors), "out_factors": list(self.out_factors)}
