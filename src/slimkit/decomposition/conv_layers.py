"""Factorized Conv2d layers: spatial SVD, Tucker-2 and CP.

Each replaces a ``Conv2d(Cin, Cout, (kh, kw))`` (groups 1, zero padding) by a sequence
of smaller convolutions; stride, padding, dilation and bias are carried over. MACs are
per output pixel, with convolutions that run before the stride counted at the input
resolution (``sh·sw`` times as many positions).
"""

from __future__ import annotations

import warnings
from typing import Any

import tensorly as tl
import torch
from tensorly.decomposition import parafac, partial_tucker
from torch import nn

from slimkit.decomposition.base import FactorizedLayer, Rank, assign, factory, tall_svd


def _axis(value: Any, axis: int, neutral: int) -> Any:
    """The ``axis`` component of a pair-valued conv argument, others set to ``neutral``."""
    if isinstance(value, str):
        return value
    return tuple(v if i == axis else neutral for i, v in enumerate(value))


def _conv(
    dense: nn.Conv2d, cin: int, cout: int, kernel: tuple[int, int], axis: int | None = None, **kw: Any
) -> nn.Conv2d:
    """A conv like ``dense`` restricted to one spatial ``axis`` (None: both, or 1x1 when kernel is 1x1)."""
    if kernel == (1, 1):
        return nn.Conv2d(cin, cout, 1, bias=kw.pop("bias", False), **kw, **factory(dense))
    stride, padding, dilation = dense.stride, dense.padding, dense.dilation
    if axis is not None:
        stride, padding, dilation = _axis(stride, axis, 1), _axis(padding, axis, 0), _axis(dilation, axis, 1)
    return nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=kw.pop("bias", False), **kw, **factory(dense))


class _FactorizedConv(FactorizedLayer):
    """Shared checks and sizes of factorized convolutions."""

    dense_types = (nn.Conv2d,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x

    @property
    def bias(self) -> torch.Tensor | None:
        """The bias of the last convolution."""
        return list(self.children())[-1].bias

    @property
    def in_channels(self) -> int:
        """Input channels, as on the dense conv."""
        return next(self.children()).in_channels

    @property
    def out_channels(self) -> int:
        """Output channels, as on the dense conv."""
        return list(self.children())[-1].out_channels

    @classmethod
    def unsupported(cls, dense: nn.Module, **extra: Any) -> str | None:
        if dense.groups != 1:
            return f"grouped convolution (groups={dense.groups}) is not supported by this method"
        if dense.padding_mode != "zeros":
            return f"padding_mode={dense.padding_mode!r} is not supported (only zero padding)"
        if dense.kernel_size == (1, 1):
            return "1x1 kernel: nothing spatial to decompose (use svd on an equivalent Linear)"
        return None

    @classmethod
    def dense_cost(cls, dense: nn.Module, **extra: Any) -> tuple[int, int]:
        return dense.weight.numel(), dense.weight.numel()

    @staticmethod
    def _pre_stride(dense: nn.Module) -> int:
        return dense.stride[0] * dense.stride[1]

    def _separable_geometry(self) -> nn.Conv2d:
        """A 1x1 conv carrying the stride/padding/dilation of the ``vertical``+``horizontal`` pair."""
        vertical, horizontal = self.vertical, self.horizontal
        like = nn.Conv2d(1, 1, 1, (vertical.stride[0], horizontal.stride[1]))
        pad = vertical.padding
        like.padding = pad if isinstance(pad, str) else (pad[0], horizontal.padding[1])
        like.dilation = (vertical.dilation[0], horizontal.dilation[1])
        return like

    def _dense_shell(self, weight: torch.Tensor, like: nn.Conv2d) -> nn.Conv2d:
        cout, cin, kh, kw = weight.shape
        first = next(self.children())
        dense = nn.Conv2d(
            cin, cout, (kh, kw), like.stride, like.padding, like.dilation, bias=self.bias is not None, **factory(first)
        )
        assign(dense.weight, weight)
        if self.bias is not None:
            assign(dense.bias, self.bias.detach())
        return dense


class SpatialSVDConv(_FactorizedConv):
    """``kh×kw`` conv as a ``kh×1`` conv to ``r`` channels then a ``1×kw`` conv.

    The rank is that of the weight reshaped to a ``(Cin·kh) × (Cout·kw)`` matrix.
    """

    def __init__(self, dense: nn.Conv2d, rank: int):
        super().__init__()
        self.rank = rank
        kh, kw = dense.kernel_size
        self.vertical = _conv(dense, dense.in_channels, rank, (kh, 1), axis=0)
        self.horizontal = _conv(dense, rank, dense.out_channels, (1, kw), axis=1, bias=dense.bias is not None)

    @classmethod
    def unsupported(cls, dense: nn.Module, **extra: Any) -> str | None:
        if min(dense.kernel_size) == 1 and dense.kernel_size != (1, 1):
            return f"kernel {dense.kernel_size} is already separable"
        return super().unsupported(dense, **extra)

    @staticmethod
    def _matrix(weight: torch.Tensor) -> torch.Tensor:
        cout, cin, kh, kw = weight.shape
        return weight.permute(1, 2, 0, 3).reshape(cin * kh, cout * kw)

    @classmethod
    def full_ranks(cls, dense: nn.Module, **extra: Any) -> tuple[int, ...]:
        cout, cin, kh, kw = dense.weight.shape
        return (min(cin * kh, cout * kw),)

    @classmethod
    def unfoldings(cls, dense: nn.Module, **extra: Any) -> list[torch.Tensor]:
        return [cls._matrix(dense.weight.detach())]

    @classmethod
    def cost(cls, dense: nn.Module, rank: Rank, **extra: Any) -> tuple[int, int]:
        cout, cin, kh, kw = dense.weight.shape
        return rank * (cin * kh + cout * kw), rank * (cin * kh * dense.stride[1] + cout * kw)

    @classmethod
    def empty_like(cls, dense: nn.Module, rank: Rank, **extra: Any) -> SpatialSVDConv:
        return cls(dense, int(rank))

    def load_factors(self, weight: torch.Tensor) -> None:
        cout, cin, kh, kw = weight.shape
        u, s, vh = tall_svd(self._matrix(weight))
        root = s[: self.rank].sqrt()
        left = (u[:, : self.rank] * root).reshape(cin, kh, self.rank)  # (c, i, k)
        right = (root[:, None] * vh[: self.rank]).reshape(self.rank, cout, kw)  # (k, o, j)
        assign(self.vertical.weight, left.permute(2, 0, 1))
        assign(self.horizontal.weight, right.permute(1, 0, 2))

    def to_dense(self) -> nn.Conv2d:
        v = self.vertical.weight[..., 0]  # (k, c, i)
        h = self.horizontal.weight[:, :, 0, :]  # (o, k, j)
        weight = torch.einsum("kci,okj->ocij", v, h)
        return self._dense_shell(weight, self._separable_geometry())


class TuckerConv(_FactorizedConv):
    """Tucker-2 conv: ``1×1`` to ``r_in`` channels, ``kh×kw`` core to ``r_out``, ``1×1`` to ``Cout``.

    The rank is ``(r_out, r_in)``; factors come from tensorly's ``partial_tucker`` (HOOI,
    SVD init) on the output and input channel modes.
    """

    def __init__(self, dense: nn.Conv2d, rank: tuple[int, int]):
        super().__init__()
        self.rank = (int(rank[0]), int(rank[1]))
        r_out, r_in = self.rank
        self.project_in = _conv(dense, dense.in_channels, r_in, (1, 1))
        self.core = _conv(dense, r_in, r_out, dense.kernel_size)
        self.project_out = _conv(dense, r_out, dense.out_channels, (1, 1), bias=dense.bias is not None)

    @classmethod
    def full_ranks(cls, dense: nn.Module, **extra: Any) -> tuple[int, ...]:
        return (dense.out_channels, dense.in_channels)

    @classmethod
    def unfoldings(cls, dense: nn.Module, **extra: Any) -> list[torch.Tensor]:
        weight = dense.weight.detach()
        return [weight.flatten(1), weight.transpose(0, 1).flatten(1)]

    @classmethod
    def combine(cls, per_mode: tuple[int, ...]) -> Rank:
        return (per_mode[0], per_mode[1])

    @classmethod
    def cost(cls, dense: nn.Module, rank: Rank, **extra: Any) -> tuple[int, int]:
        r_out, r_in = rank
        cout, cin, kh, kw = dense.weight.shape
        core = r_out * r_in * kh * kw
        return cin * r_in + core + r_out * cout, cin * r_in * cls._pre_stride(dense) + core + r_out * cout

    @classmethod
    def empty_like(cls, dense: nn.Module, rank: Rank, **extra: Any) -> TuckerConv:
        return cls(dense, tuple(rank))

    def load_factors(self, weight: torch.Tensor) -> None:
        with tl.backend_context("pytorch"):
            (core, (out_factor, in_factor)), _ = partial_tucker(
                weight, list(self.rank), modes=[0, 1], init="svd", svd=tall_svd
            )
        assign(self.project_in.weight, in_factor.T)
        assign(self.core.weight, core)
        assign(self.project_out.weight, out_factor)

    def to_dense(self) -> nn.Conv2d:
        weight = torch.einsum(
            "or,rsij,sc->ocij", self.project_out.weight[..., 0, 0], self.core.weight, self.project_in.weight[..., 0, 0]
        )
        return self._dense_shell(weight, self.core)


class CPConv(_FactorizedConv):
    """CP conv: ``1×1`` to ``R``, depthwise ``kh×1``, depthwise ``1×kw``, ``1×1`` to ``Cout``.

    The rank ``R`` is the number of CP components; factors come from tensorly's
    ``parafac`` (ALS, SVD init, fixed seed).
    """

    fixed_rank = "free"

    def __init__(self, dense: nn.Conv2d, rank: int):
        super().__init__()
        self.rank = int(rank)
        kh, kw = dense.kernel_size
        self.project_in = _conv(dense, dense.in_channels, self.rank, (1, 1))
        self.vertical = _conv(dense, self.rank, self.rank, (kh, 1), axis=0, groups=self.rank)
        self.horizontal = _conv(dense, self.rank, self.rank, (1, kw), axis=1, groups=self.rank)
        self.project_out = _conv(dense, self.rank, dense.out_channels, (1, 1), bias=dense.bias is not None)

    @classmethod
    def full_ranks(cls, dense: nn.Module, **extra: Any) -> tuple[int, ...]:
        return (dense.out_channels, dense.in_channels)

    @classmethod
    def unfoldings(cls, dense: nn.Module, **extra: Any) -> list[torch.Tensor]:
        return TuckerConv.unfoldings(dense, **extra)

    @classmethod
    def combine(cls, per_mode: tuple[int, ...]) -> Rank:
        return max(per_mode)

    @classmethod
    def cost(cls, dense: nn.Module, rank: Rank, **extra: Any) -> tuple[int, int]:
        cout, cin, kh, kw = dense.weight.shape
        params = rank * (cin + kh + kw + cout)
        return params, rank * (cin * cls._pre_stride(dense) + kh * dense.stride[1] + kw + cout)

    @classmethod
    def empty_like(cls, dense: nn.Module, rank: Rank, **extra: Any) -> CPConv:
        return cls(dense, int(rank))

    def load_factors(self, weight: torch.Tensor) -> None:
        with tl.backend_context("pytorch"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs")
            cp = parafac(weight, self.rank, init="svd", svd=tall_svd, n_iter_max=300, tol=1e-10, random_state=0)
        lambdas, (out_f, in_f, vertical, horizontal) = cp
        assign(self.project_in.weight, in_f.T)
        assign(self.vertical.weight, vertical.T)
        assign(self.horizontal.weight, horizontal.T)
        assign(self.project_out.weight, out_f * lambdas)

    def to_dense(self) -> nn.Conv2d:
        weight = torch.einsum(
            "or,rc,ri,rj->ocij",
            self.project_out.weight[..., 0, 0],
            self.project_in.weight[..., 0, 0],
            self.vertical.weight[:, 0, :, 0],
            self.horizontal.weight[:, 0, 0, :],
        )
        return self._dense_shell(weight, self._separable_geometry())
